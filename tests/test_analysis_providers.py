"""Tests for nuke_crawl.analysis: local measures on generated images, the OpenAI provider
through the real ``openai`` client against our own compatible server, and Rekognition
through moto's server mode."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from openai_server import API_KEY, COMPLETION_TOKENS, GOOD_ANSWER, PROMPT_TOKENS, FakeOpenAI
from PIL import Image, ImageDraw, ImageFilter

from nuke_crawl.analysis import (
    ANALYSIS_SCHEMA,
    ERROR_REASONS,
    PROVIDERS,
    OpenAIProvider,
    ProviderResult,
    RekognitionProvider,
    analyze_local,
    estimate_cost,
    hamming,
    labels_to_tags,
    scan_metadata,
)
from nuke_crawl.analysis import local as local_mod
from nuke_crawl.analysis.openai_provider import _retry_after, price_for

# ------------------------------------------------------------------------------ images


def _scene(seed: int, size: tuple[int, int] = (1600, 1200)) -> Image.Image:
    """A detailed synthetic photo: shapes, outlines, lines and a little sensor noise."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, (rng.randint(60, 200),) * 3)
    draw = ImageDraw.Draw(img)
    for _ in range(120):
        x0, y0 = rng.randint(0, size[0]), rng.randint(0, size[1])
        box = [x0, y0, x0 + rng.randint(10, 400), y0 + rng.randint(10, 300)]
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle(box, fill=colour)
        else:
            draw.ellipse(box, fill=colour, outline=(0, 0, 0), width=3)
    for _ in range(80):
        draw.line(
            [
                rng.randint(0, size[0]),
                rng.randint(0, size[1]),
                rng.randint(0, size[0]),
                rng.randint(0, size[1]),
            ],
            fill=tuple(rng.randint(0, 255) for _ in range(3)),
            width=rng.randint(1, 4),
        )
    arr = np.asarray(img).astype(np.int16)
    noise = np.random.default_rng(seed).normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))


def _encode(img: Image.Image, fmt: str = "JPEG", **kw: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 90} if fmt == "JPEG" and not kw else kw))
    return out.getvalue()


@pytest.fixture(scope="module")
def scene() -> Image.Image:
    return _scene(1)


@pytest.fixture(scope="module")
def scene_jpeg(scene: Image.Image) -> bytes:
    return _encode(scene)


def _issue_names(result: ProviderResult) -> set[str]:
    return {t.tag_name for t in result.tags if t.tag_type == "issue"}


# ---------------------------------------------------------------------- local provider


def test_local_sharp_image_has_no_issues(scene_jpeg: bytes) -> None:
    result = analyze_local(scene_jpeg)
    assert result.ok and result.provider == "local"
    data = result.data
    assert (data["width"], data["height"]) == (1600, 1200)
    assert data["sharpness"] > 10 * local_mod.BLURRY_THRESHOLD
    assert 60 < data["exposure"]["mean"] < 200
    assert data["flags"] == {
        "blurry": False,
        "too_dark": False,
        "too_bright": False,
        "placeholder": False,
        "near_duplicate_of": [],
    }
    assert result.tags == []
    assert 0 <= data["dhash"] < 2**64 and data["dhash_hex"] == f"{data['dhash']:016x}"
    colours = data["dominant_colors"]
    assert len(colours) == 3
    assert all(c["hex"].startswith("#") and len(c["hex"]) == 7 for c in colours)
    assert colours[0]["share"] >= colours[1]["share"] >= colours[2]["share"] > 0
    assert sum(c["share"] for c in colours) <= 1.0
    assert result.cost_usd == 0.0 and result.attempts == 0
    json.dumps(result.to_metadata())


def test_local_blurred_copy_is_blurry(scene: Image.Image) -> None:
    result = analyze_local(_encode(scene.filter(ImageFilter.GaussianBlur(4))))
    assert result.data["flags"]["blurry"] is True
    assert result.data["sharpness"] < local_mod.BLURRY_THRESHOLD
    (tag,) = result.tags
    assert (tag.tag_name, tag.tag_type) == ("blurry", "issue")
    assert 50 <= tag.confidence <= 100
    assert tag.ai_detection_data["threshold"] == local_mod.BLURRY_THRESHOLD


def test_local_dark_and_bright(scene: Image.Image) -> None:
    dark = analyze_local(_encode(Image.eval(scene, lambda v: v // 8)))
    assert dark.data["flags"]["too_dark"] is True
    assert dark.data["flags"]["blurry"] is False  # too flat to judge focus
    assert _issue_names(dark) == {"too_dark"}
    bright = analyze_local(_encode(Image.eval(scene, lambda v: 235 + v // 13)))
    assert bright.data["flags"]["too_bright"] is True
    assert "too_bright" in _issue_names(bright)


def test_local_placeholders() -> None:
    art = Image.new("RGB", (800, 600), (200, 200, 200))
    draw = ImageDraw.Draw(art)
    draw.rectangle([340, 230, 460, 290], outline=(150, 150, 150), width=2)  # a camera icon
    draw.text((330, 300), "No Image Available", fill=(90, 90, 90))
    result = analyze_local(_encode(art, "PNG"))
    assert result.data["flags"]["placeholder"] is True
    assert result.data["flags"]["blurry"] is False
    assert _issue_names(result) == {"placeholder"}

    flat = analyze_local(_encode(Image.new("RGB", (640, 480), (255, 255, 255)), "PNG"))
    assert flat.data["flags"]["placeholder"] is True
    assert flat.data["dominant_colors"][0] == {
        "hex": "#ffffff",
        "rgb": [255, 255, 255],
        "share": 1.0,
    }
    transparent = analyze_local(_encode(Image.new("RGBA", (300, 200), (0, 0, 0, 0)), "PNG"))
    assert transparent.data["flags"]["placeholder"] is True
    assert transparent.data["exposure"]["mean"] == 255  # transparency shown as white


def test_local_near_duplicates(scene: Image.Image, scene_jpeg: bytes) -> None:
    original = analyze_local(scene_jpeg)
    other = analyze_local(_encode(_scene(2)))
    distance = hamming(original.data["dhash"], other.data["dhash"])
    assert distance > 2 * local_mod.DUPLICATE_MAX_DISTANCE

    copy = _encode(scene.resize((800, 600), Image.Resampling.LANCZOS), "JPEG", quality=70)
    known = {
        "img-original": original.data["dhash"],
        "img-other": other.data["dhash_hex"],  # hex form accepted too
        "img-bad": "not-a-hash",
    }
    result = analyze_local(copy, other_hashes=known)
    assert result.data["flags"]["near_duplicate_of"] == ["img-original"]
    assert result.data["duplicate_distances"]["img-original"] <= local_mod.DUPLICATE_MAX_DISTANCE
    tag = next(t for t in result.tags if t.tag_name == "near_duplicate")
    assert tag.tag_type == "issue" and tag.ai_detection_data["closest"] == "img-original"

    webp_copy = analyze_local(
        _encode(scene, "WEBP", quality=60), other_hashes={"img-original": original.data["dhash"]}
    )
    assert webp_copy.data["flags"]["near_duplicate_of"] == ["img-original"]

    different = analyze_local(_encode(_scene(3)), other_hashes=known)
    assert different.data["flags"]["near_duplicate_of"] == []
    assert "near_duplicate" not in _issue_names(different)


def test_local_bad_bytes() -> None:
    for body in (b"", b"<html>not an image</html>", b"\xff\xd8\xff\xe0" + b"\0" * 20):
        result = analyze_local(body)
        assert not result.ok
        assert result.error_reason == "invalid_image"


# ---------------------------------------------------------------------- openai provider


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(slow_seconds=2.0) as srv:
        yield srv


def _provider(server: FakeOpenAI, **kw: Any) -> OpenAIProvider:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 5.0)
    return OpenAIProvider(kw.pop("api_key", API_KEY), server.url + "/v1", **kw)


def _analyze(
    provider: OpenAIProvider,
    image: bytes = b"\xff\xd8\xff-fake-jpeg",
    mime: str = "image/jpeg",
    **context: Any,
) -> ProviderResult:
    async def go() -> ProviderResult:
        async with provider:
            return await provider.analyze(image, mime, context=context)

    return asyncio.run(go())


def _check(provider: OpenAIProvider) -> tuple[bool, str]:
    async def go() -> tuple[bool, str]:
        async with provider:
            return await provider.check()

    return asyncio.run(go())


def test_openai_good_answer(server: FakeOpenAI, scene_jpeg: bytes) -> None:
    result = _analyze(
        _provider(server), scene_jpeg, year=1969, make="Chevrolet", model="Camaro", price=30000
    )
    assert result.ok, result.error_detail
    assert (result.provider, result.model, result.view) == ("openai", "gpt-4o-mini", "exterior")
    assert [
        (c.component_name, c.condition_rating, c.damage_types, c.needs_attention)
        for c in result.components
    ] == [
        ("front bumper", 7, ["scratch", "chip"], False),
        ("left rocker panel", 3, ["rust"], True),
    ]
    assert all(c.detected_by_model == "gpt-4o-mini" for c in result.components)
    assert [
        (p.panel_name, p.appears_original, p.defects, p.paint_quality_score) for p in result.paint
    ] == [("hood", False, ["orange_peel"], 6), ("left front fender", None, [], 8)]
    assert [(t.tag_name, t.tag_type, t.confidence) for t in result.tags] == [
        ("Rally wheel", "part", 90.0),
        ("Chevrolet bowtie", "brand", 80.0),
    ]
    assert result.build_quality == 7
    assert result.modifications == GOOD_ANSWER["modifications"]
    assert not result.is_document and result.document_category is None
    assert result.spid is None and result.vin_from_plate is None
    assert result.data["summary"].startswith("Red 1969 Camaro")
    assert result.data["warnings"] == [] and result.data["retries"] == 0
    assert (result.tokens.prompt, result.tokens.completion) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert result.cost_usd == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)
    assert result.attempts == 1 and server.chat_requests == 1

    body = server.last_body
    assert body is not None and body["model"] == "gpt-4o-mini"
    user = body["messages"][1]["content"]
    image_url = next(part for part in user if part["type"] == "image_url")["image_url"]["url"]
    assert image_url == "data:image/jpeg;base64," + base64.b64encode(scene_jpeg).decode()
    text = next(part for part in user if part["type"] == "text")["text"]
    assert '"make": "Chevrolet"' in text and "price" not in text
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == ANALYSIS_SCHEMA

    meta = result.to_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["tokens"] == {"prompt": 1000, "completion": 200, "total": 1200}
    assert meta["components"][1]["damage_types"] == ["rust"]


def test_openai_schema_is_strict_everywhere() -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert node["additionalProperties"] is False
                assert sorted(node["required"]) == sorted(node["properties"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(ANALYSIS_SCHEMA)
    assert set(ANALYSIS_SCHEMA["properties"]) >= {
        "view",
        "components",
        "paint",
        "build_quality",
        "modifications",
        "document",
        "vin_from_plate",
        "spid",
    }


def test_openai_spid_sheet(server: FakeOpenAI) -> None:
    server.script("spid")
    result = _analyze(_provider(server), make="Chevrolet", model="Corvette", year=1989)
    assert result.ok
    assert result.view == "document"
    assert result.is_document and result.document_category == "spid_sheet"
    spid = result.spid
    assert spid is not None
    assert spid.vin == "1G1YY2184K5100001" and spid.model_code == "1YY07"
    assert spid.build_date == "1989-03"
    assert spid.rpo_codes == ["L98", "MX0", "G92", "Z51", "AQ9", "FX3", "C68"]
    assert (spid.engine_code, spid.transmission_code, spid.axle_code) == ("L98", "MX0", "G92")
    assert spid.paint_codes == ["WA8555", "U 41"]
    assert spid.raw["rpo_codes"][1] == "mx0"  # the answer as given
    assert result.vin_from_plate == "1G1YY2184K5100001"
    assert result.data["vin_from_plate_valid"] is True
    assert any("TOOLONG" in w for w in result.data["warnings"])


def test_openai_out_of_range_answer_is_corrected(server: FakeOpenAI) -> None:
    server.script("off_range")
    result = _analyze(_provider(server))
    assert result.ok
    assert result.view == "document"  # 'aerial' is dropped; the document decides
    assert "unknown view 'aerial'" in result.data["warnings"]
    (hood,) = result.components  # the nameless one is dropped
    assert hood.condition_rating == 10 and hood.damage_types == ["dent", "other"]
    assert hood.confidence == pytest.approx(90.0)  # a 0-1 fraction scaled
    (roof,) = result.paint
    assert roof.paint_quality_score == 1 and roof.confidence == 100.0
    assert result.document_category == "other"
    assert len(result.data["warnings"]) >= 6


def test_openai_rate_limit_honours_retry_after(server: FakeOpenAI) -> None:
    server.script("rate_limit", "good")
    started = time.perf_counter()
    result = _analyze(_provider(server, backoff_base=0.01))
    elapsed = time.perf_counter() - started
    assert result.ok
    assert result.attempts == 2 and result.data["retries"] == 1
    assert server.chat_requests == 2
    assert elapsed >= 0.95  # Retry-After: 1 beats the 0.01 s backoff


def test_openai_rate_limit_exhausted(server: FakeOpenAI) -> None:
    server.retry_after = 0.05
    server.script("rate_limit", "rate_limit", "rate_limit", "good")
    result = _analyze(_provider(server, max_retries=2))
    assert not result.ok
    assert result.error_reason == "rate_limited"
    assert "after 3 attempts" in (result.error_detail or "")
    assert result.attempts == 3 and server.chat_requests == 3


def test_openai_server_errors_then_success(server: FakeOpenAI) -> None:
    server.script("server_error", "server_error", "good")
    started = time.perf_counter()
    result = _analyze(_provider(server, backoff_base=0.1, max_retries=3))
    assert result.ok and result.attempts == 3 and server.chat_requests == 3
    assert time.perf_counter() - started >= 0.3  # 0.1 + 0.2 of exponential backoff


def test_openai_server_errors_exhausted(server: FakeOpenAI) -> None:
    server.script("server_error", "server_error")
    result = _analyze(_provider(server, max_retries=1))
    assert (result.ok, result.error_reason, result.attempts) == (False, "server_error", 2)
    assert "HTTP 500" in (result.error_detail or "")


def test_openai_html_body_served_as_json_is_malformed_output(server: FakeOpenAI) -> None:
    """A proxy's HTML error page with ``Content-Type: application/json``: the client
    cannot decode it; that is ``malformed_output``, not a traceback, and not retried."""
    server.script("html_json")
    result = _analyze(_provider(server))
    assert not result.ok
    assert result.error_reason == "malformed_output", result.error_detail
    assert "not JSON" in (result.error_detail or "")
    assert "502 Bad Gateway" in (result.error_detail or "")
    assert result.attempts == 1 and server.chat_requests == 1


@pytest.mark.parametrize(
    "scenario,reason,fragment",
    [
        ("malformed", "malformed_output", "not JSON"),
        ("wrong_shape", "malformed_output", "not an object"),
        ("length", "malformed_output", "finish_reason=length"),
        ("refusal", "refused", "can't help"),
    ],
)
def test_openai_bad_answers(server: FakeOpenAI, scenario: str, reason: str, fragment: str) -> None:
    server.script(scenario)
    result = _analyze(_provider(server))
    assert not result.ok
    assert result.error_reason == reason and fragment in (result.error_detail or "")
    assert result.attempts == 1 and server.chat_requests == 1  # never retried
    assert result.tokens.total == PROMPT_TOKENS + COMPLETION_TOKENS  # still billed
    assert result.cost_usd and result.cost_usd > 0


def test_openai_scenario_marker_in_context(server: FakeOpenAI) -> None:
    result = _analyze(_provider(server), title="1970 Chevelle scenario=refusal")
    assert result.error_reason == "refused"


@pytest.mark.serial
def test_openai_timeout(server: FakeOpenAI) -> None:
    server.script("slow", "slow")
    started = time.perf_counter()
    result = _analyze(_provider(server, timeout=0.3, max_retries=1))
    elapsed = time.perf_counter() - started
    assert (result.ok, result.error_reason, result.attempts) == (False, "timeout", 2)
    assert "0.3s" in (result.error_detail or "")
    assert elapsed < 1.5


def test_openai_wrong_key(server: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-wrong-9f8e7d6c5b4a39281706"
    result = _analyze(_provider(server, api_key=key))
    assert (result.ok, result.error_reason, result.attempts) == (False, "auth_failed", 1)
    ok, message = _check(_provider(server, api_key=key))
    assert not ok and message.startswith("auth_failed: HTTP 401")
    for text in (result.error_detail or "", message, caplog.text, repr(_provider(server))):
        assert key not in text and key[8:] not in text
    assert server.chat_requests == 1  # 401 is not retried


def test_openai_unknown_model(server: FakeOpenAI) -> None:
    ok, message = _check(_provider(server, model="gpt-9-turbo"))
    assert not ok
    assert message.startswith("model_not_found: model 'gpt-9-turbo' is not available")
    result = _analyze(_provider(server, model="gpt-9-turbo"))
    assert (result.error_reason, result.attempts) == ("model_not_found", 1)


def test_openai_check_ok(server: FakeOpenAI) -> None:
    ok, message = _check(_provider(server))
    assert ok and message.startswith("ok: model 'gpt-4o-mini'")
    assert server.model_requests == 1 and server.chat_requests == 0


def test_openai_missing_key(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # never picked up implicitly
    provider = OpenAIProvider(None, server.url + "/v1")
    assert not provider.configured()
    assert _check(provider) == (False, "OPENAI_API_KEY is not set")
    result = _analyze(provider)
    assert (result.ok, result.error_reason) == (False, "not_configured")
    assert server.chat_requests == 0 and server.model_requests == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_openai_unreachable() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    provider = OpenAIProvider(API_KEY, url, max_retries=2, backoff_base=0.01)
    result = _analyze(provider)
    assert (result.ok, result.error_reason, result.attempts) == (False, "unreachable", 3)
    ok, message = _check(OpenAIProvider(API_KEY, url))
    assert not ok and message.startswith(f"unreachable: cannot connect to {url}")


@pytest.mark.serial
def test_openai_concurrent_slow_requests() -> None:
    with FakeOpenAI(latency=0.5) as srv:
        provider = OpenAIProvider(API_KEY, srv.url + "/v1", backoff_base=0.01)

        async def go() -> list[ProviderResult]:
            async with provider:
                return await asyncio.gather(
                    *(provider.analyze(b"img%d" % i, "image/png", context={}) for i in range(10))
                )

        started = time.perf_counter()
        results = asyncio.run(go())
        elapsed = time.perf_counter() - started
    assert all(r.ok for r in results)
    assert srv.max_in_flight == 10
    assert elapsed < 2.0  # serially it would take 5 s


def test_openai_transient_failure_rate() -> None:
    with FakeOpenAI(failure_rate=0.1) as srv:
        provider = OpenAIProvider(API_KEY, srv.url + "/v1", backoff_base=0.01, max_retries=3)

        async def go() -> list[ProviderResult]:
            async with provider:
                return await asyncio.gather(
                    *(provider.analyze(b"img%d" % i, "image/png", context={}) for i in range(25))
                )

        results = asyncio.run(go())
    assert all(r.ok for r in results)
    assert srv.failures_served == srv.chat_requests // 10 >= 2
    assert sum(r.attempts - 1 for r in results) == srv.failures_served
    assert sum(r.attempts for r in results) == srv.chat_requests


def test_openai_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from scrapy.settings import Settings

    from nuke_crawl.analysis.registry import build_provider

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-000000000000")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.invalid/v1")
    monkeypatch.setenv("NUKE_OPENAI_MODEL", "gpt-4o")
    settings = Settings({"OPENAI_BASE_URL": "http://settings.invalid/v1", "NUKE_OPENAI_MODEL": ""})
    provider = build_provider("openai", settings)
    assert isinstance(provider, OpenAIProvider)
    assert provider.configured()
    assert provider.base_url == "http://settings.invalid/v1"  # settings first
    assert provider.model == "gpt-4o"  # empty setting falls back to the environment
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("NUKE_OPENAI_MODEL")
    provider = OpenAIProvider.from_settings(Settings())
    assert not provider.configured() and provider.model == "gpt-4o-mini"


def test_openai_prices_and_retry_after() -> None:
    assert price_for("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert price_for("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert price_for("gpt-4.1-mini") == (0.40, 1.60)
    assert price_for("llava-13b") is None and estimate_cost("llava-13b", 10, 10) is None
    assert estimate_cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.50)
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert _retry_after({}) is None


# ------------------------------------------------------------------ rekognition (moto)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_REKOGNITION",
        "AWS_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


def test_rekognition_labels_become_tags(moto_url: str, aws_env: None, scene_jpeg: bytes) -> None:
    provider = RekognitionProvider(endpoint_url=moto_url)
    assert provider.configured()
    result = asyncio.run(provider.analyze(scene_jpeg, "image/jpeg"))
    assert result.ok, result.error_detail
    assert result.model == "rekognition-3.0"
    # moto 5.2.5 answers every image with one canned label
    (tag,) = result.tags
    assert (tag.tag_name, tag.tag_type) == ("Mobile Phone", "custom")
    assert tag.confidence == pytest.approx(99.9364, abs=1e-3)
    assert tag.x == pytest.approx(36.0402, abs=1e-3)
    assert tag.y == pytest.approx(9.2456, abs=1e-3)
    assert tag.width == pytest.approx(26.7797, abs=1e-3)
    assert tag.height == pytest.approx(85.6229, abs=1e-3)
    assert tag.ai_detection_data["parents"] == ["Phone"]
    assert result.data["labels"][0]["name"] == "Mobile Phone"
    assert result.data["reencoded"] is False
    assert result.cost_usd == pytest.approx(0.001) and result.attempts == 1
    json.dumps(scan_metadata([result]))


def test_rekognition_reencodes_webp(moto_url: str, aws_env: None, scene: Image.Image) -> None:
    provider = RekognitionProvider(endpoint_url=moto_url)
    result = asyncio.run(provider.analyze(_encode(scene, "WEBP", quality=80), "image/webp"))
    assert result.ok and result.data["reencoded"] is True
    bad = asyncio.run(provider.analyze(b"<html>", "image/webp"))
    assert (bad.ok, bad.error_reason) == (False, "invalid_image")


def test_rekognition_check(moto_url: str, aws_env: None) -> None:
    ok, message = asyncio.run(RekognitionProvider(endpoint_url=moto_url).check())
    assert ok and message.startswith("ok: DetectLabels answered at " + moto_url)

    dead = f"http://127.0.0.1:{_free_port()}"
    ok, message = asyncio.run(RekognitionProvider(endpoint_url=dead).check())
    assert (ok, message) == (False, f"unreachable: cannot connect to {dead}")
    result = asyncio.run(
        RekognitionProvider(endpoint_url=dead, max_attempts=1).analyze(
            b"\xff\xd8\xff", "image/jpeg"
        )
    )
    assert (result.ok, result.error_reason) == (False, "unreachable")


def test_rekognition_without_credentials(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    provider = RekognitionProvider(endpoint_url="http://127.0.0.1:9")
    assert not provider.configured()
    ok, message = asyncio.run(provider.check())
    assert not ok
    assert message == (
        "not_configured: AWS credentials not found (set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role)"
    )
    result = asyncio.run(provider.analyze(b"\xff\xd8\xff", "image/jpeg"))
    assert (result.ok, result.error_reason) == (False, "not_configured")


def test_rekognition_region_and_endpoint_from_env(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic.invalid")
    provider = RekognitionProvider()
    assert (provider.region, provider.endpoint_url) == ("eu-west-1", "http://generic.invalid")
    monkeypatch.setenv("AWS_ENDPOINT_URL_REKOGNITION", "http://rekognition.invalid")
    assert RekognitionProvider().endpoint_url == "http://rekognition.invalid"
    assert RekognitionProvider("us-west-2", "http://x.invalid").region == "us-west-2"


def test_rekognition_label_mapping() -> None:
    labels = [
        {
            "Name": "Wheel",
            "Confidence": 98.0,
            "Parents": [{"Name": "Machine"}],
            "Instances": [
                {
                    "BoundingBox": {"Left": 0.1, "Top": 0.6, "Width": 0.2, "Height": 0.25},
                    "Confidence": 97.5,
                },
                {
                    "BoundingBox": {"Left": 0.7, "Top": 0.6, "Width": 0.2, "Height": 0.25},
                    "Confidence": 91.0,
                },
            ],
        },
        {"Name": "Wrench", "Confidence": 80.0, "Instances": []},
        {"Name": "Sports Car", "Confidence": 95.0},
    ]
    tags = labels_to_tags(labels)
    assert [(t.tag_name, t.tag_type, t.confidence, t.has_box) for t in tags] == [
        ("Wheel", "part", 97.5, True),
        ("Wheel", "part", 91.0, True),
        ("Wrench", "tool", 80.0, False),
        ("Sports Car", "custom", 95.0, False),
    ]
    assert (tags[1].x, tags[1].y, tags[1].width, tags[1].height) == (70.0, 60.0, 20.0, 25.0)
    assert tags[0].ai_detection_data["parents"] == ["Machine"]


# ---------------------------------------------------------------------------- results


def test_result_contract() -> None:
    assert PROVIDERS == ("local", "openai", "rekognition")
    with pytest.raises(ValueError):
        ProviderResult.failure("local", "no_such_reason", "x")
    failed = ProviderResult.failure("openai", "timeout", "slow")
    meta = failed.to_metadata()
    assert meta["ok"] is False and meta["error_reason"] in ERROR_REASONS
    assert meta["tokens"]["total"] == 0 and meta["is_document"] is False
