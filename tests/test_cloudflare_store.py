"""The Cloudflare Images store against the tests' own Cloudflare API server."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from scrapy.settings import Settings

from nuke_crawl.storage.cloudflare import (
    CloudflareImagesConfig,
    CloudflareImagesError,
    CloudflareImagesStore,
    RateLimiter,
)
from tests.cloudflare_server import ACCOUNT_HASH, ACCOUNT_ID, TOKEN, FakeCloudflare

SHARED = Path(os.environ.get("NUKE_SHARED_DIR", "/work/shared"))
IMAGES = SHARED / "corpus" / "images"
URI = f"cloudflare-images://{ACCOUNT_ID}"


def _jpeg(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def cf() -> Iterator[FakeCloudflare]:
    with FakeCloudflare() as server:
        yield server


def _store(
    cf: FakeCloudflare, token: str = TOKEN, uri: str = URI, **settings: Any
) -> CloudflareImagesStore:
    values = {
        "CF_IMAGES_API_URL": cf.api_url,
        "CF_IMAGES_ACCOUNT_HASH": ACCOUNT_HASH,
        "NUKE_BACKOFF_BASE": 0.01,
        "NUKE_BACKOFF_MAX": 0.05,
        **settings,
    }
    return CloudflareImagesStore.from_settings(uri, Settings(values), {"CF_IMAGES_TOKEN": token})


# -- uploads ---------------------------------------------------------------------------


def test_every_good_image_uploaded_once_with_metadata_then_rerun_uploads_nothing(
    cf: FakeCloudflare,
) -> None:
    good = [
        "hopper.jpg",
        "hopper.webp",
        "transparent.png",
        "hopper.avif",
        "chi.gif",
        "hopper_orientation_6.jpg",
        "pil_sample_cmyk.jpg",
    ]
    files = {name: (IMAGES / name).read_bytes() for name in good}
    store = _store(cf)

    def put(name: str) -> Any:
        path = f"veh-1/{hashlib.sha1(name.encode()).hexdigest()}.{name.rsplit('.', 1)[1]}"
        return store.upload(
            path,
            files[name],
            "image/jpeg",
            metadata={
                "vehicle_id": "veh-1",
                "organization_id": "org-9",
                "source_url": f"https://dealer.example/img/{name}",
            },
        )

    with ThreadPoolExecutor(4) as pool:
        first = dict(zip(good, pool.map(put, good), strict=True))
    assert cf.uploads == len(good)
    assert all(result.uploaded for result in first.values())
    for name, result in first.items():
        stored = cf.images[result.image_id]
        assert stored.data == files[name]  # the original, as it came
        assert stored.meta == {
            "vehicle_id": "veh-1",
            "organization_id": "org-9",
            "source_url": f"https://dealer.example/img/{name}",
            "sha256": hashlib.sha256(files[name]).hexdigest(),
        }
        assert result.url == f"https://imagedelivery.net/{ACCOUNT_HASH}/{result.image_id}/public"
        assert result.url in result.variants
        assert len(result.variants) == 2

    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(put, good))
    assert cf.uploads == len(good)  # re-run: nothing new, nothing overwritten
    assert not any(result.uploaded for result in again)
    assert [r.url for r in again] == [first[n].url for n in good]
    assert store.counts["uploaded"] == len(good) and store.counts["existing"] == len(good)
    # each existing id was confirmed with a GET of its details
    gets = [r for r in cf.log if r.method == "GET" and not r.path.endswith("/blob")]
    assert len(gets) == len(good)


def test_existing_id_is_never_overwritten(cf: FakeCloudflare) -> None:
    store = _store(cf)
    store.upload("v/a.jpg", _jpeg((1, 2, 3)), "image/jpeg")
    result = store.upload("v/a.jpg", _jpeg((250, 250, 250)), "image/jpeg")
    assert result.uploaded is False
    assert cf.images["v/a.jpg"].data == _jpeg((1, 2, 3))
    assert store.read("v/a.jpg") == _jpeg((1, 2, 3))


def test_rejected_upload_raises_storage_rejected_with_code_and_message(
    cf: FakeCloudflare,
) -> None:
    store = _store(cf)
    with pytest.raises(CloudflareImagesError) as info:
        store.upload("v/page.jpg", b"<html>not an image</html>", "image/jpeg")
    assert info.value.reason == "storage_rejected"
    assert info.value.status == 415 and info.value.code == 5415
    assert "5415" in info.value.detail and "Images must be uploaded" in info.value.detail
    cf.reject["v/odd.jpg"] = (400, 5400, "Bad request: Error during the processing")
    with pytest.raises(CloudflareImagesError) as info:
        store.upload("v/odd.jpg", _jpeg(), "image/jpeg")
    assert (info.value.reason, info.value.code) == ("storage_rejected", 5400)
    assert info.value.api_message == "Bad request: Error during the processing"
    assert cf.uploads == 0
    assert sum(1 for r in cf.log if r.method == "POST") == 2  # a refusal is not retried


def test_bad_ids_are_refused_before_any_request(cf: FakeCloudflare) -> None:
    store = _store(cf)
    for path in ("", "/v/a.jpg", "v/a.jpg?x=1", "0b4c2f4e-1111-4a4a-8a8a-123456789abc", "x" * 1025):
        with pytest.raises(CloudflareImagesError) as info:
            store.upload(path, _jpeg(), "image/jpeg")
        assert info.value.reason == "storage_rejected"
    assert cf.log == []


def test_long_source_url_is_cut_to_fit_cloudflare_metadata_limit(cf: FakeCloudflare) -> None:
    store = _store(cf)
    url = "https://dealer.example/" + "é" * 2000
    store.upload("v/long.jpg", _jpeg(), "image/jpeg", metadata={"source_url": url})
    meta = cf.images["v/long.jpg"].meta
    assert len(json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()) <= 1024
    assert meta["source_url"].endswith("...") and url.startswith(meta["source_url"][:-3])
    assert meta["sha256"] == hashlib.sha256(_jpeg()).hexdigest()


# -- reading -------------------------------------------------------------------------


def test_delete_then_absent_is_no_error(cf: FakeCloudflare) -> None:
    store = _store(cf)
    store.upload("veh/d.jpg", _jpeg(), "image/jpeg")
    store.delete("veh/d.jpg")
    assert "veh/d.jpg" not in cf.images and not store.exists("veh/d.jpg")
    store.delete("veh/d.jpg")  # already gone
    assert [r.status for r in cf.log if r.method == "DELETE"] == [200, 404]


def test_blob_read_back_and_missing_image(cf: FakeCloudflare) -> None:
    store = _store(cf)
    data = (IMAGES / "hopper.webp").read_bytes()
    store.upload("veh/x.webp", data, "image/webp")
    assert store.read("veh/x.webp") == data
    assert store.exists("veh/x.webp") and not store.exists("veh/none.webp")
    with pytest.raises(CloudflareImagesError) as info:
        store.read("veh/none.webp")
    assert info.value.reason == "missing_file" and info.value.code == 5404


# -- limits and retries ----------------------------------------------------------------


def _recording_sleep(slept: list[float]) -> Any:
    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    return sleep


@pytest.mark.serial
def test_429_retry_after_is_honoured_and_pauses_every_thread(cf: FakeCloudflare) -> None:
    slept: list[float] = []
    store = CloudflareImagesStore(_store(cf).config, sleep=_recording_sleep(slept))
    cf.fail_next(429, {"Retry-After": "1"})
    started = time.monotonic()
    result = store.upload("v/a.jpg", _jpeg(), "image/jpeg")
    assert result.uploaded and time.monotonic() - started >= 1.0
    assert 0.95 <= max(slept) <= 1.0
    assert store.counts["rate_limited"] == 1 and store.counts["retries"] == 1
    # while paused, another thread's request waits too
    cf.fail_next(429, {"Retry-After": "1"})
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(store.upload, "v/b.jpg", _jpeg(), "image/jpeg")
        time.sleep(0.2)
        second = pool.submit(store.upload, "v/c.jpg", _jpeg(), "image/jpeg")
        first.result(), second.result()
    posts = [r for r in cf.log if r.method == "POST"]
    assert [r.status for r in posts] == [429, 200, 429, 200, 200]
    assert posts[3].time - posts[2].time >= 0.95 and posts[4].time - posts[2].time >= 0.95


@pytest.mark.serial
def test_retry_after_is_capped(cf: FakeCloudflare) -> None:
    slept: list[float] = []
    store = CloudflareImagesStore(
        _store(cf, NUKE_RETRY_AFTER_MAX=0.2).config, sleep=_recording_sleep(slept)
    )
    cf.fail_next(429, {"Retry-After": "3600"})
    started = time.monotonic()
    assert store.upload("v/a.jpg", _jpeg(), "image/jpeg").uploaded
    assert 0.15 <= max(slept) <= 0.2 and time.monotonic() - started < 1


def test_5xx_retried_with_backoff_then_given_up_as_transient(cf: FakeCloudflare) -> None:
    slept: list[float] = []
    config = _store(
        cf, NUKE_BACKOFF_BASE=0.01, NUKE_BACKOFF_MAX=0.03, CF_IMAGES_RETRY_TIMES=3
    ).config
    store = CloudflareImagesStore(config, sleep=lambda s: slept.append(s))
    cf.fail_next(500, times=2)
    assert store.upload("v/a.jpg", _jpeg(), "image/jpeg").uploaded
    assert slept == [0.01, 0.02]
    slept.clear()
    cf.fail_next(502, times=10)
    with pytest.raises(CloudflareImagesError) as info:
        store.upload("v/b.jpg", _jpeg(), "image/jpeg")
    assert info.value.reason == "storage" and info.value.status == 502  # retried next run
    assert slept == [0.01, 0.02, 0.03]  # capped at NUKE_BACKOFF_MAX
    assert "v/b.jpg" not in cf.images


def test_connection_errors_retried_then_storage(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        {
            "CF_IMAGES_API_URL": f"http://127.0.0.1:{port}/client/v4",
            "CF_IMAGES_ACCOUNT_HASH": ACCOUNT_HASH,
            "CF_IMAGES_RETRY_TIMES": 2,
        }
    )
    config = CloudflareImagesConfig.from_settings(URI, settings, {"CF_IMAGES_TOKEN": TOKEN})
    slept: list[float] = []
    store = CloudflareImagesStore(config, sleep=lambda s: slept.append(s))
    with caplog.at_level(logging.DEBUG), pytest.raises(CloudflareImagesError) as info:
        store.upload("v/a.jpg", _jpeg(), "image/jpeg")
    assert info.value.reason == "storage" and "after 3 attempts" in info.value.detail
    assert slept == [1.0, 2.0]
    assert TOKEN not in caplog.text and TOKEN not in str(info.value)


def test_rate_cap_is_honoured_across_threads(cf: FakeCloudflare) -> None:
    cf.rate_limit = (5, 0.45)  # the server refuses a 6th request within 0.45 s
    store = _store(cf, CF_IMAGES_RATE_LIMIT=5, CF_IMAGES_RATE_PERIOD=0.5)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: store.upload(f"v/{i}.jpg", _jpeg(), "image/jpeg"), range(15)))
    elapsed = time.monotonic() - started
    assert cf.uploads == 15
    assert 429 not in cf.statuses()
    assert elapsed >= 1.0  # 15 requests at 5 per 0.5 s: windows at 0, 0.5 and 1.0 s
    times = sorted(r.time for r in cf.log)
    assert all(times[i + 5] - times[i] >= 0.45 for i in range(len(times) - 5))


def test_rate_limiter_window_with_a_fake_clock() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(1200, 300.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(1200):
        limiter.acquire()
    assert waits == []
    limiter.acquire()  # the 1,201st waits for the first to leave the 5-minute window
    assert waits == [300.0]
    limiter.pause(10.0)
    limiter.acquire()
    assert waits[-1] == 10.0


def test_concurrency_cap(cf: FakeCloudflare) -> None:
    cf.latency = 0.1
    store = _store(cf, CF_IMAGES_CONCURRENCY=2)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.upload(f"v/{i}.jpg", _jpeg(), "image/jpeg"), range(8)))
    assert cf.uploads == 8 and cf.max_in_flight == 2


# -- the start-up check ------------------------------------------------------------------


def test_probe_passes_with_good_settings(cf: FakeCloudflare) -> None:
    store = _store(cf)
    store.upload("v/a.jpg", _jpeg(), "image/jpeg")  # so the hash check has a URL to compare
    store.probe()
    assert [r.status for r in cf.log[-2:]] == [200, 200]


def test_probe_bad_token_one_clear_line(cf: FakeCloudflare) -> None:
    store = _store(cf, token="cf-wrong-token-abcdef")
    with pytest.raises(CloudflareImagesError) as info:
        store.probe()
    message = str(info.value)
    assert info.value.reason == "storage_config" and info.value.status == 401
    assert "\n" not in message and "CF_IMAGES_TOKEN" in message and "10000" in message
    assert "cf-wrong-token-abcdef" not in message
    assert len(cf.log) == 1  # nothing retried, nothing uploaded


def test_probe_wrong_account_variant_and_hash(cf: FakeCloudflare) -> None:
    with pytest.raises(CloudflareImagesError, match="account in IMAGES_STORE") as info:
        _store(cf, uri="cloudflare-images://0000deadbeef").probe()
    assert info.value.status == 403 and info.value.code == 9109
    with pytest.raises(CloudflareImagesError, match="no variant 'hero'.*public, thumbnail"):
        _store(cf, CF_IMAGES_VARIANT="hero").probe()
    _store(cf).upload("v/a.jpg", _jpeg(), "image/jpeg")
    with pytest.raises(CloudflareImagesError, match="CF_IMAGES_ACCOUNT_HASH 'WRONG'"):
        _store(cf, CF_IMAGES_ACCOUNT_HASH="WRONG").probe()


def test_probe_server_down_is_one_line(cf: FakeCloudflare) -> None:
    cf.fail_next(503, times=5)
    with pytest.raises(CloudflareImagesError) as info:
        _store(cf).probe()
    assert info.value.reason == "storage_config" and "HTTP 503" in str(info.value)
    assert "\n" not in str(info.value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/client/v4"
    with pytest.raises(CloudflareImagesError) as info:
        _store(cf, CF_IMAGES_API_URL=closed).probe()
    assert info.value.reason == "storage_config" and "cannot be used" in str(info.value)
    assert "\n" not in str(info.value) and TOKEN not in str(info.value)


def test_retry_after_header_name_is_case_insensitive(cf: FakeCloudflare) -> None:
    slept: list[float] = []
    store = CloudflareImagesStore(_store(cf).config, sleep=_recording_sleep(slept))
    cf.fail_next(429, {"retry-after": "0.5"})  # not digits: unreadable, backoff (0.01 s)
    cf.fail_next(429, {"retry-after": "1"})  # HTTP/2 proxies send lower-case names
    started = time.monotonic()
    assert store.upload("v/a.jpg", _jpeg(), "image/jpeg").uploaded
    assert time.monotonic() - started >= 1.0 and 0.95 <= max(slept) <= 1.0
    assert store.counts["rate_limited"] == 2


# -- configuration and secrets ----------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "settings", "env", "needle"),
    [
        ("cloudflare-images://", {}, {"CF_IMAGES_TOKEN": TOKEN}, "IMAGES_STORE"),
        ("cloudflare-images://acc/x", {}, {"CF_IMAGES_TOKEN": TOKEN}, "IMAGES_STORE"),
        ("s3://bucket", {}, {"CF_IMAGES_TOKEN": TOKEN}, "IMAGES_STORE"),
        (URI, {}, {}, "CF_IMAGES_TOKEN is not set"),
        (URI, {"CF_IMAGES_TOKEN": TOKEN}, {"CF_IMAGES_TOKEN": TOKEN}, "environment only"),
        (URI, {"CF_IMAGES_ACCOUNT_HASH": ""}, {"CF_IMAGES_TOKEN": TOKEN}, "CF_IMAGES_ACCOUNT_HASH"),
        (URI, {"CF_IMAGES_RATE_LIMIT": 0}, {"CF_IMAGES_TOKEN": TOKEN}, "CF_IMAGES_RATE_LIMIT"),
        (URI, {"CF_IMAGES_RATE_PERIOD": "soon"}, {"CF_IMAGES_TOKEN": TOKEN}, "settings"),
        (URI, {"CF_IMAGES_CONCURRENCY": 0}, {"CF_IMAGES_TOKEN": TOKEN}, "CF_IMAGES_CONCURRENCY"),
        (URI, {"CF_IMAGES_API_URL": "ftp://x"}, {"CF_IMAGES_TOKEN": TOKEN}, "CF_IMAGES_API_URL"),
        (URI, {"CF_IMAGES_VARIANT": "a b"}, {"CF_IMAGES_TOKEN": TOKEN}, "CF_IMAGES_VARIANT"),
        (URI, {}, {"CF_IMAGES_TOKEN": "two words"}, "CF_IMAGES_TOKEN has spaces"),
    ],
)
def test_bad_configuration_is_refused_naming_the_setting(
    uri: str, settings: dict[str, Any], env: dict[str, str], needle: str
) -> None:
    values = {"CF_IMAGES_ACCOUNT_HASH": ACCOUNT_HASH, **settings}
    with pytest.raises(CloudflareImagesError) as info:
        CloudflareImagesConfig.from_settings(uri, Settings(values), env)
    assert info.value.reason == "storage_config" and needle in str(info.value)
    assert TOKEN not in str(info.value) and "two words" not in str(info.value)


def test_defaults_and_account_hash_from_environment() -> None:
    config = CloudflareImagesConfig.from_settings(
        URI, Settings(), {"CF_IMAGES_TOKEN": TOKEN, "CF_IMAGES_ACCOUNT_HASH": "h4sh"}
    )
    assert (config.account_hash, config.variant) == ("h4sh", "public")
    project = Settings()
    project.setmodule("nuke_crawl.settings")
    assert (
        CloudflareImagesConfig.from_settings(
            URI, project, {"CF_IMAGES_TOKEN": TOKEN, "CF_IMAGES_ACCOUNT_HASH": "h4sh"}
        )
        == config
    )  # settings.py lists the same defaults
    assert (config.rate_limit, config.rate_period, config.concurrency) == (1200, 300.0, 8)
    assert config.api_url == "https://api.cloudflare.com/client/v4"


def test_token_never_in_logs_reprs_or_errors(
    cf: FakeCloudflare, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        store = _store(cf)
        store.probe()
        cf.fail_next(429, {"Retry-After": "0"})
        cf.fail_next(500)
        store.upload("v/a.jpg", _jpeg(), "image/jpeg")
        store.upload("v/a.jpg", _jpeg(), "image/jpeg")
        errors = []
        for call in (
            lambda: store.upload("v/x.jpg", b"junk", "image/jpeg"),
            lambda: store.read("v/none.jpg"),
            lambda: _store(cf, token="cf-other-secret-99").probe(),
        ):
            with pytest.raises(CloudflareImagesError) as info:
                call()
            errors.append(info.value)
    assert store.counts["retries"] == 2
    texts = [
        caplog.text,
        repr(store),
        repr(store.config),
        str(store.config),
        *(str(e) for e in errors),
        *(repr(e) for e in errors),
    ]
    for text in texts:
        assert TOKEN not in text and "cf-other-secret-99" not in text
    assert "Cloudflare Images" in caplog.text  # the retries were logged, without the token
    # the token did reach the API, as a bearer header
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in cf.log[:-1])


def test_errors_survive_pickling() -> None:
    import pickle

    error = CloudflareImagesError(
        "storage_rejected", "no", status=415, code=5415, api_message="bad"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.detail, copy.status, copy.code, copy.api_message) == (
        "storage_rejected",
        "no",
        415,
        5415,
        "bad",
    )
