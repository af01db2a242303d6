"""Tests for nuke_crawl.imaging: every corpus image gets a definite, checked outcome."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from nuke_crawl import imaging
from nuke_crawl.imaging import ImageRejected, ProcessedImage, heif_supported, process_image

# ------------------------------------------------------------------------------- corpus


def _shared_dir() -> Path:
    env = os.environ.get("NUKE_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared"


CORPUS = _shared_dir() / "corpus" / "images"


@pytest.fixture(scope="session")
def manifest() -> list[dict[str, Any]]:
    path = CORPUS / "MANIFEST.json"
    if not path.is_file():
        pytest.fail(
            f"image corpus missing: {path} not found. The shared corpus must sit beside the "
            "repository (../shared/corpus/images) or under $NUKE_SHARED_DIR/corpus/images."
        )
    entries: list[dict[str, Any]] = json.loads(path.read_text())
    return entries


def _read(name: str) -> bytes:
    path = CORPUS / name
    if not path.is_file():
        pytest.fail(f"corpus file missing: {path} (see MANIFEST.json beside it)")
    return path.read_bytes()


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _mad(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two RGB renderings."""
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    assert x.shape == y.shape
    return float(np.abs(x - y).mean())


# --------------------------------------------------------------------- expected outcomes


@dataclass(frozen=True)
class Stored:
    source_format: str
    extension: str
    size: tuple[int, int]  # upright
    mode: str  # mode Pillow reports when re-reading the stored bytes
    reencoded: bool
    frames: int = 1
    check: str | None = None  # name of an extra check below


@dataclass(frozen=True)
class Rejected:
    reason: str


HEIF_OUTCOME: Stored | Rejected = (
    Stored("HEIF", "jpg", (128, 128), "RGB", True, check="like_hopper")
    if heif_supported()
    else Rejected("unsupported_format")
)

EXPECTED: dict[str, Stored | Rejected] = {
    "hopper.jpg": Stored("JPEG", "jpg", (128, 128), "RGB", False, check="original"),
    "app13-multiple.jpg": Stored("JPEG", "jpg", (256, 160), "RGB", False, check="original"),
    "pil_sample_cmyk.jpg": Stored("JPEG", "jpg", (100, 100), "RGB", True, check="cmyk_red"),
    "hopper_orientation_2.jpg": Stored("JPEG", "jpg", (128, 128), "RGB", True, check="upright"),
    "hopper_orientation_3.jpg": Stored("JPEG", "jpg", (128, 128), "RGB", True, check="upright"),
    "hopper_orientation_4.jpg": Stored("JPEG", "jpg", (128, 128), "RGB", True, check="upright"),
    "hopper_orientation_5.jpg": Stored("JPEG", "jpg", (128, 128), "RGB", True, check="upright"),
    "hopper_orientation_6.jpg": Stored("JPEG", "jpg", (128, 128), "RGB", True, check="upright"),
    "hopper_orientation_7.jpg": Stored("JPEG", "jpg", (128, 128), "RGB", True, check="upright"),
    "hopper_orientation_8.jpg": Stored("JPEG", "jpg", (128, 128), "RGB", True, check="upright"),
    "orientation_rectangle.jpg": Stored("JPEG", "jpg", (1, 2), "RGB", True, check="no_exif"),
    "hopper_bad_exif.jpg": Stored("JPEG", "jpg", (500, 500), "L", False, check="original"),
    "junk_jpeg_header.jpg": Stored("JPEG", "jpg", (1024, 768), "RGB", False, check="original"),
    "truncated_app14.jpg": Stored("JPEG", "jpg", (100, 100), "RGB", False, check="original"),
    "icc_profile_big.jpg": Stored("JPEG", "jpg", (425, 250), "RGB", False, check="icc_variants"),
    "truncated_jpeg.jpg": Rejected("truncated"),
    "ultrahdr.jpg": Rejected("truncated"),
    "sugarshack.mpo": Stored("MPO", "jpg", (640, 480), "RGB", True, check="mpo_first_frame"),
    "transparent.png": Stored("PNG", "png", (200, 150), "RGBA", False, check="alpha"),
    "p_trns_single.png": Stored("PNG", "png", (64, 64), "P", False, check="alpha"),
    "i_trns.png": Stored("PNG", "png", (64, 64), "LA", True, check="i16_trns"),
    "apng_mode_16bit.png": Stored("PNG", "png", (128, 64), "RGBA", True, 3, check="eight_bit_apng"),
    "pil123rgba.png": Stored("PNG", "png", (162, 150), "RGBA", False, check="alpha"),
    "truncated_image.png": Rejected("truncated"),
    "truncated_end_chunk.png": Rejected("truncated"),
    "png_decompression_dos.png": Rejected("decompression_bomb"),
    "broken.png": Rejected("corrupt"),
    "transparent.gif": Stored("GIF", "gif", (200, 150), "P", False, check="alpha"),
    "chi.gif": Stored("GIF", "gif", (320, 240), "P", False, 31, check="original"),
    "decompression_bomb.gif": Rejected("decompression_bomb"),
    "decompression_bomb_extents.gif": Rejected("decompression_bomb"),
    "zero_width.gif": Rejected("corrupt"),
    "hopper.webp": Stored("WEBP", "webp", (128, 128), "RGB", False, check="original"),
    "transparent.webp": Stored("WEBP", "webp", (200, 150), "RGBA", False, check="alpha"),
    "lossless-no-vp8x.webp": Stored("WEBP", "webp", (16, 16), "RGBA", False, check="original"),
    "iss634.webp": Stored("WEBP", "webp", (245, 245), "RGBA", False, 42, check="original"),
    "hopper.avif": Stored("AVIF", "avif", (128, 128), "RGB", False, check="original"),
    "hopper.heif": HEIF_OUTCOME,
    "hopper.tif": Stored("TIFF", "jpg", (128, 128), "RGB", True, check="like_hopper"),
    "multipage.tiff": Stored("TIFF", "jpg", (10, 10), "RGB", True),
    "hopper.bmp": Stored("BMP", "jpg", (128, 128), "RGB", True, check="like_hopper"),
    "bmp_b_shortfile.bmp": Rejected("truncated"),
    "l2rgb_read.bmp": Rejected("decompression_bomb"),
    "hopper.ico": Stored("ICO", "jpg", (16, 16), "RGB", True),  # its alpha is all opaque
    "zero_length.jpg": Rejected("empty"),
}

MIME = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
}


def _check_original(name: str, result: ProcessedImage, out: Image.Image) -> None:
    assert result.data == _read(name)


def _check_upright(name: str, result: ProcessedImage, out: Image.Image) -> None:
    reference = _decode(_read("hopper.jpg"))
    raw = _decode(_read(name))
    assert _mad(out, reference) < 8, "not upright: differs from hopper.jpg"
    assert _mad(raw, reference) > 40, "test premise: the raw pixels are not upright"
    _check_no_exif(name, result, out)


def _check_no_exif(name: str, result: ProcessedImage, out: Image.Image) -> None:
    assert out.getexif().get(0x0112) in (None, 1)


def _check_like_hopper(name: str, result: ProcessedImage, out: Image.Image) -> None:
    assert _mad(out, _decode(_read("hopper.jpg"))) < 8


def _check_cmyk_red(name: str, result: ProcessedImage, out: Image.Image) -> None:
    # The sample is red lettering and a red corner patch on black (Pillow's test_cmyk).
    r, g, b = out.getpixel((0, 0))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60, (r, g, b)
    assert max(out.getpixel((99, 99))) < 40  # type: ignore[arg-type]
    source = np.asarray(_decode(_read(name)), dtype=np.float64) / 255
    c, m, y, k = (source[..., i] for i in range(4))
    naive = np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], -1) * 255
    assert float(np.abs(np.asarray(out, dtype=np.float64) - naive).mean()) < 15


def _check_icc_variants(name: str, result: ProcessedImage, out: Image.Image) -> None:
    _check_original(name, result, out)
    icc = _decode(_read(name)).info["icc_profile"]
    assert result.variants, "425x250 exceeds the 320x240 thumb box"
    for variant in result.variants:
        assert _decode(variant.data).info.get("icc_profile") == icc


def _check_mpo_first_frame(name: str, result: ProcessedImage, out: Image.Image) -> None:
    assert out.format == "JPEG"
    source = Image.open(io.BytesIO(_read(name)))
    source.seek(0)
    source.load()
    assert _mad(out, source) == 0.0, "the first picture is cut out losslessly"


def _check_alpha(name: str, result: ProcessedImage, out: Image.Image) -> None:
    source = _decode(_read(name)).convert("RGBA")
    alpha_out = np.asarray(out.convert("RGBA").getchannel("A"))
    assert alpha_out.min() == 0, "transparency lost"
    assert np.array_equal(alpha_out, np.asarray(source.getchannel("A")))


def _check_i16_trns(name: str, result: ProcessedImage, out: Image.Image) -> None:
    source = np.asarray(_decode(_read(name)))  # I;16, tRNS grey key 255
    alpha = np.asarray(out.getchannel("A"))
    assert np.array_equal(alpha == 0, source == 255)
    grey = np.asarray(out.getchannel("L")).astype(np.int64)
    assert np.array_equal(grey, source.astype(np.int64) >> 8), "16 -> 8 bits must scale"


def _check_eight_bit_apng(name: str, result: ProcessedImage, out: Image.Image) -> None:
    assert result.data[12:16] == b"IHDR" and result.data[24] == 8
    source = Image.open(io.BytesIO(_read(name)))
    for index in range(3):
        source.seek(index)
        out.seek(index)
        assert _mad(out.convert("RGBA"), source.convert("RGBA")) < 1.0


CHECKS: dict[str, Callable[[str, ProcessedImage, Image.Image], None]] = {
    "original": _check_original,
    "upright": _check_upright,
    "no_exif": _check_no_exif,
    "like_hopper": _check_like_hopper,
    "cmyk_red": _check_cmyk_red,
    "icc_variants": _check_icc_variants,
    "mpo_first_frame": _check_mpo_first_frame,
    "alpha": _check_alpha,
    "i16_trns": _check_i16_trns,
    "eight_bit_apng": _check_eight_bit_apng,
}


def test_table_covers_every_manifest_file(manifest: list[dict[str, Any]]) -> None:
    files = {entry["file"] for entry in manifest}
    assert files == set(EXPECTED), (
        f"not in table: {sorted(files - set(EXPECTED))}; "
        f"not in manifest: {sorted(set(EXPECTED) - files)}"
    )
    for entry in manifest:
        assert (CORPUS / entry["file"]).is_file(), entry["file"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_outcome(name: str, manifest: list[dict[str, Any]]) -> None:
    body = _read(name)
    expected = EXPECTED[name]
    if isinstance(expected, Rejected):
        with pytest.raises(ImageRejected) as info:
            process_image(body)
        assert info.value.reason == expected.reason, info.value.detail
        assert info.value.detail
        return
    result = process_image(body)
    assert result.source_format == expected.source_format
    assert result.extension == expected.extension
    assert result.mime_type == MIME[expected.extension]
    assert (result.width, result.height) == expected.size
    assert result.reencoded is expected.reencoded
    assert result.reencoded is (result.data != body)
    assert result.sha256 == __import__("hashlib").sha256(result.data).hexdigest()
    out = _decode(result.data)
    assert out.size == expected.size
    assert out.mode == expected.mode
    assert getattr(out, "n_frames", 1) == expected.frames
    assert MIME[expected.extension] == Image.MIME[out.format or ""]
    for variant in result.variants:
        box = dict(imaging.DEFAULT_VARIANTS)[variant.name]
        assert variant.width <= box[0] and variant.height <= box[1]
        assert _decode(variant.data).size == (variant.width, variant.height)
    if expected.check:
        CHECKS[expected.check](name, result, out)


@pytest.mark.skipif(not heif_supported(), reason="pillow-heif not installed")
def test_heif_limits_apply_before_decoding() -> None:
    body = _read("hopper.heif")
    assert _reason(body, max_pixels=100 * 100) == "decompression_bomb"
    assert _reason(body, min_width=200) == "too_small"
    assert _reason(body[: len(body) // 2]) in ("truncated", "corrupt")


def test_text_starting_like_a_signature_is_not_image() -> None:
    assert _reason(b"BMW 320i, 2019, 45,000 miles. Call for price!", content_type="text/plain") == (
        "not_image"
    )


def test_heif_without_plugin_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging, "_pillow_heif", lambda: None)
    with pytest.raises(ImageRejected) as info:
        process_image(_read("hopper.heif"), content_type="image/heic")
    assert info.value.reason == "unsupported_format"


# ------------------------------------------------------------------------ synthetic cases


def _jpeg(
    size: tuple[int, int] = (1600, 1200),
    *,
    seed: int = 0,
    exif: Image.Exif | None = None,
    quality: int = 85,
    mode: str = "RGB",
) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    wave = 128 + 100 * np.sin((x + 2 * y) / 97.0)
    arr = np.stack([x * 255 / w, y * 255 / h, wave], -1) + rng.normal(0, 6, (h, w, 3))
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    params: dict[str, Any] = {"quality": quality}
    if exif is not None:
        params["exif"] = exif
    im.save(buf, "JPEG", **params)
    return buf.getvalue()


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 20, 30, 128)[: len(mode)] if mode != "L" else 7).save(buf, "PNG")
    return buf.getvalue()


def _reason(body: bytes, **kwargs: Any) -> str:
    with pytest.raises(ImageRejected) as info:
        process_image(body, **kwargs)
    assert info.value.detail
    return info.value.reason


def test_empty() -> None:
    assert _reason(b"") == "empty"


def test_html_served_as_image_is_not_image() -> None:
    html = b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>"
    assert _reason(html, content_type="text/html; charset=utf-8") == "not_image"
    assert _reason(html, content_type="image/jpeg") == "not_image"
    assert _reason(b'{"error": "rate limited"}', content_type="application/json") == "not_image"
    assert _reason(os.urandom(0) + bytes(range(256)) * 4) == "not_image"


def test_real_image_with_wrong_content_type_is_processed() -> None:
    result = process_image(_jpeg((64, 48)), content_type="text/html")
    assert result.source_format == "JPEG" and not result.reencoded


def test_svg_is_unsupported_but_html_with_svg_is_not_image() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10"/>'
    assert _reason(svg, content_type="image/svg+xml") == "unsupported_format"
    assert _reason(b"<html><body><svg></svg></body></html>") == "not_image"


def test_too_small_single_pixel() -> None:
    assert _reason(_png((1, 1)), min_width=100, min_height=100) == "too_small"


def test_too_small_uses_upright_dimensions() -> None:
    body = _read("orientation_rectangle.jpg")  # stored 2x1, EXIF 8: upright 1x2
    assert _reason(body, min_width=2) == "too_small"
    result = process_image(body, min_height=2)
    assert (result.width, result.height) == (1, 2)


def test_truncated_jpeg() -> None:
    body = _jpeg()
    assert _reason(body[: len(body) // 2]) == "truncated"
    # also when variants would be made through a draft (DCT-scaled) decode
    assert _reason(body[: len(body) - 50], variants={"t": (100, 100)}) == "truncated"
    assert _reason(body[: len(body) - 50], variants={}) == "truncated"


def test_corrupt_jpeg_scan_data() -> None:
    body = bytearray(_jpeg())
    for i in range(len(body) // 2, len(body) // 2 + 3000, 7):
        body[i] = 0xFF if body[i] != 0xFF else 0
    assert _reason(bytes(body)) in ("corrupt", "truncated")


def test_decompression_bomb_over_max_pixels() -> None:
    assert _reason(_png((2000, 2000)), max_pixels=1_000_000) == "decompression_bomb"
    assert process_image(_png((1000, 1000)), max_pixels=1_000_000).width == 1000


def test_decompression_bomb_warning_becomes_rejection() -> None:
    # 151.6 Mpx: within our max_pixels here, but over Pillow's warning threshold.
    body = _read("l2rgb_read.bmp")
    assert _reason(body, max_pixels=200_000_000) == "decompression_bomb"


def _two_frame_gif(second_offset: tuple[int, int]) -> bytes:
    frames = [Image.new("P", (100, 100), i) for i in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(
        buf,
        "GIF",
        save_all=True,
        append_images=frames[1:],
        duration=50,
        loop=0,
        optimize=False,
        disposal=1,
    )
    data = bytearray(buf.getvalue())
    descriptors = [
        i
        for i in range(len(data))
        if data[i] == 0x2C and struct.unpack_from("<HH", data, i + 5) == (100, 100)
    ]
    assert len(descriptors) >= 2
    struct.pack_into("<HH", data, descriptors[-1] + 1, *second_offset)
    return bytes(data)


def test_gif_bomb_in_second_frame_below_pillows_own_limit() -> None:
    # frame 2 grows the canvas to 8000x8000 = 64 Mpx: under Pillow's 89 Mpx warning, over ours
    body = _two_frame_gif((7900, 7900))
    assert _reason(body) == "decompression_bomb"
    assert _reason(_two_frame_gif((0, 0)), max_pixels=100) == "decompression_bomb"
    assert process_image(_two_frame_gif((0, 0))).source_format == "GIF"


def test_animation_total_pixels_limit() -> None:
    frames = [Image.new("RGB", (100, 100), (i, 0, 0)) for i in range(10)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    body = buf.getvalue()
    assert _reason(body, max_total_pixels=50_000) == "decompression_bomb"
    assert process_image(body).source_format == "PNG"


def test_deterministic_output_for_every_stored_file() -> None:
    for name, expected in EXPECTED.items():
        if isinstance(expected, Stored):
            first, second = process_image(_read(name)), process_image(_read(name))
            assert first.sha256 == second.sha256, name
            assert [v.data for v in first.variants] == [v.data for v in second.variants], name
    rotated = _rotated_jpeg()
    assert process_image(rotated).sha256 == process_image(rotated).sha256


def _rotated_jpeg(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg(exif=exif)


def test_variants_fit_their_boxes() -> None:
    boxes = {"thumb": (320, 240), "medium": (1024, 768), "tall": (100, 400), "huge": (4000, 4000)}
    # quality 100 for the variants, so that their own JPEG loss does not hide decode errors
    result = process_image(_jpeg(), variants=boxes, jpeg_quality=100)
    assert not result.reencoded
    by_name = {v.name: v for v in result.variants}
    assert set(by_name) == {"thumb", "medium", "tall"}  # not larger than "huge": no variant
    assert (by_name["thumb"].width, by_name["thumb"].height) == (320, 240)
    assert (by_name["medium"].width, by_name["medium"].height) == (1024, 768)
    assert (by_name["tall"].width, by_name["tall"].height) == (100, 75)
    full = _decode(result.data)
    for name, variant in by_name.items():
        box = boxes[name]
        assert variant.width <= box[0] and variant.height <= box[1]
        assert variant.mime_type == "image/jpeg"
        image = _decode(variant.data)
        assert image.size == (variant.width, variant.height)
        # the draft (DCT-scaled) decode gives the same picture as a full-size resize
        reference = full.resize(image.size, Image.Resampling.BILINEAR)
        assert _mad(image, reference) < 2, name


def test_default_variants_are_one_thumbnail() -> None:
    result = process_image(_jpeg())
    assert [(v.name, v.width, v.height) for v in result.variants] == [("thumb", 320, 240)]


def test_variants_of_rotated_jpeg_are_upright() -> None:
    result = process_image(_rotated_jpeg(6), variants={"thumb": (320, 240), "medium": (1024, 768)})
    assert result.reencoded and (result.width, result.height) == (1200, 1600)
    assert [(v.name, v.width, v.height) for v in result.variants] == [
        ("thumb", 180, 240),
        ("medium", 576, 768),
    ]
    upright = _decode(_jpeg()).transpose(Image.Transpose.ROTATE_270)
    assert _mad(_decode(result.data), upright) < 4
    assert (
        _mad(_decode(result.variants[0].data), upright.resize((180, 240), Image.Resampling.BICUBIC))
        < 4
    )


def test_alpha_variants_keep_alpha() -> None:
    im = Image.new("RGBA", (800, 600), (200, 0, 0, 255))
    im.paste((0, 0, 0, 0), (0, 0, 400, 600))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    result = process_image(buf.getvalue())
    assert not result.reencoded
    thumb = result.variants[0]
    assert thumb.mime_type == "image/webp"
    alpha = _decode(thumb.data).convert("RGBA").getchannel("A")
    assert alpha.getextrema() == (0, 255)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_with_exif_orientation_are_made_upright(fmt: str) -> None:
    upright = Image.new("RGB", (60, 40), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 30, 40))  # left half red
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what orientation 6 undoes
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    result = process_image(buf.getvalue())
    assert result.reencoded and result.source_format == fmt
    assert (result.width, result.height) == (60, 40)
    out = _decode(result.data)
    assert out.format == fmt and out.size == (60, 40)
    assert _mad(out, upright) < 3
    assert out.getexif().get(0x0112) in (None, 1)


def test_cmyk_tiff_becomes_rgb_jpeg() -> None:
    im = Image.new("CMYK", (50, 40), (0, 255, 255, 0))
    buf = io.BytesIO()
    im.save(buf, "TIFF")
    result = process_image(buf.getvalue())
    assert result.extension == "jpg"
    r, g, b = _decode(result.data).getpixel((25, 20))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60


def test_transparent_tiff_becomes_png() -> None:
    im = Image.new("RGBA", (30, 20), (0, 0, 255, 0))
    buf = io.BytesIO()
    im.save(buf, "TIFF")
    result = process_image(buf.getvalue())
    assert result.extension == "png"
    assert _decode(result.data).getchannel("A").getextrema() == (0, 0)


def test_rejection_reasons_are_known() -> None:
    with pytest.raises(ValueError):
        ImageRejected("bogus", "x")
    rejected = ImageRejected("corrupt", "bad")
    assert (rejected.reason, rejected.detail) == ("corrupt", "bad")
    import pickle

    clone = pickle.loads(pickle.dumps(rejected))
    assert (clone.reason, clone.detail) == ("corrupt", "bad")


def test_no_global_state_changes() -> None:
    max_pixels = Image.MAX_IMAGE_PIXELS
    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    filters = list(warnings.filters)
    for name in EXPECTED:
        with contextlib.suppress(ImageRejected):
            process_image(_read(name), max_pixels=200_000_000)
    assert max_pixels == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is truncated is False
    assert list(warnings.filters) == filters
    assert "HEIF" not in Image.OPEN  # pillow-heif is used directly, never registered


# ------------------------------------------------------------------------- thread safety


def _outcome(body: bytes) -> tuple[Any, ...]:
    try:
        result = process_image(body)
    except ImageRejected as exc:
        return ("rejected", exc.reason)
    return (
        "stored",
        result.sha256,
        result.width,
        result.height,
        result.mime_type,
        tuple(
            (v.name, v.width, v.height, __import__("hashlib").sha256(v.data).hexdigest())
            for v in result.variants
        ),
    )


def test_threads_match_sequential(manifest: list[dict[str, Any]]) -> None:
    bodies = [_read(entry["file"]) for entry in manifest]
    bodies += [_jpeg(), _rotated_jpeg(), _jpeg()[:100_000]]
    sequential = [_outcome(body) for body in bodies]
    work = bodies * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(_outcome, work))
    assert concurrent == sequential * 4
