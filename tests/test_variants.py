"""NUKE_IMAGE_VARIANTS parsing, and WebP/AVIF variants decoded back."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from scrapy.settings import Settings

from nuke_crawl import variants as variants_module
from nuke_crawl.imaging import process_image
from nuke_crawl.variants import (
    VariantSpec,
    VariantSpecError,
    avif_supported,
    encode_variant,
    extension_for,
    parse_variants,
    process_kwargs,
    process_with_variants,
    variants_from_settings,
)

IMAGES = Path(os.environ.get("NUKE_SHARED_DIR", "/work/shared")) / "corpus" / "images"

needs_avif = pytest.mark.skipif(not avif_supported(), reason="this Pillow cannot write AVIF")


# -- parsing -----------------------------------------------------------------------------


def test_parse_the_documented_example() -> None:
    assert parse_variants("thumb:320x240:webp, medium:1024:webp") == (
        VariantSpec("thumb", 320, 240, "WEBP"),
        VariantSpec("medium", 1024, 1024, "WEBP"),
    )


def test_parse_formats_quality_and_auto() -> None:
    specs = parse_variants("a:10x20,b:30:jpg:70,c:40X50:JPEG,d:60:avif:55")
    assert specs == (
        VariantSpec("a", 10, 20, None),
        VariantSpec("b", 30, 30, "JPEG", 70),
        VariantSpec("c", 40, 50, "JPEG"),
        VariantSpec("d", 60, 60, "AVIF", 55),
    )
    assert [s.encoding for s in specs] == [None, ("JPEG", 70), ("JPEG", 85), ("AVIF", 55)]
    assert process_kwargs(specs) == {
        "variants": {"a": (10, 20), "b": (30, 30), "c": (40, 50), "d": (60, 60)},
        "variant_formats": {"b": ("JPEG", 70), "c": ("JPEG", 85), "d": ("AVIF", 55)},
    }


def test_parse_older_dict_forms_json_and_empty() -> None:
    assert parse_variants({"thumb": (320, 240)}) == (VariantSpec("thumb", 320, 240),)
    assert parse_variants({"thumb": [320, 240, "webp", 70], "m": "1024:avif"}) == (
        VariantSpec("thumb", 320, 240, "WEBP", 70),
        VariantSpec("m", 1024, 1024, "AVIF"),
    )
    assert parse_variants('{"thumb": [320, 240]}') == (VariantSpec("thumb", 320, 240),)
    assert parse_variants('["thumb:8x8:webp"]') == (VariantSpec("thumb", 8, 8, "WEBP"),)
    assert parse_variants("") == () and parse_variants(None) == () and parse_variants({}) == ()
    settings = Settings({"NUKE_IMAGE_VARIANTS": "thumb:320x240:webp"})
    assert variants_from_settings(settings) == (VariantSpec("thumb", 320, 240, "WEBP"),)
    # the project's default (a dict) still reads
    assert variants_from_settings(Settings()) in ((), (VariantSpec("thumb", 320, 240),))


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("thumb", "name:size[:format[:quality]]"),
        ("thumb:320y240:webp", "WIDTHxHEIGHT or one number (got '320y240')"),
        ("thumb:0x10", "within 1..10000"),
        ("thumb:20000", "within 1..10000"),
        ("thumb:320x240:gif", "unknown format 'gif'"),
        ("thumb:320x240:webp:0", "quality must be within 1..100"),
        ("thumb:320x240:webp:high", "quality must be within 1..100"),
        ("thumb:320x240:auto:80", "a quality needs a format"),
        ("thumb:1:webp:80:x", "name:size[:format[:quality]]"),
        ("a b:320", "the name must be"),
        ("../x:320", "the name must be"),
        ("thumb:320,thumb:640", "used twice"),
        ({"thumb": [320]}, "should be [width, height]"),
        ({"thumb": ["320", "240"]}, "must be integers"),
        ({"thumb": 320}, "should be [width, height]"),
        ("{broken", "not valid JSON"),
        (42, "expected entries like"),
        ([1, 2], "is not a name:size"),
    ],
)
def test_bad_specs_are_refused_naming_the_setting(value: object, needle: str) -> None:
    with pytest.raises(VariantSpecError) as info:
        parse_variants(value)
    assert str(info.value).startswith("NUKE_IMAGE_VARIANTS: ")
    assert needle in str(info.value)


def test_avif_refused_where_pillow_cannot_write_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variants_module, "avif_supported", lambda: False)
    with pytest.raises(VariantSpecError, match="NUKE_IMAGE_VARIANTS: 'hero:1600:avif'.*webp"):
        parse_variants("hero:1600:avif")
    with pytest.raises(ValueError, match="cannot write AVIF"):
        encode_variant(Image.new("RGB", (4, 4)), "AVIF", 60)


# -- encoding ------------------------------------------------------------------------------


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _assert_no_metadata(image: Image.Image) -> None:
    assert "exif" not in image.info and "xmp" not in image.info
    assert len(image.getexif()) == 0
    assert "XML:com.adobe.xmp" not in image.info and "comment" not in image.info


def _oriented_jpeg(orientation: int) -> bytes:
    """400x200: left half red, right half blue, with EXIF orientation, GPS and XMP."""
    image = Image.new("RGB", (400, 200), (220, 20, 20))
    image.paste((20, 20, 220), (200, 0, 400, 200))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CameraMaker"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)  # GPS latitude
    buf = io.BytesIO()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    image.save(buf, "JPEG", quality=95, exif=exif, xmp=xmp)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["webp", pytest.param("avif", marks=needs_avif)])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_variants_upright_sized_and_stripped(fmt: str, orientation: int) -> None:
    body = _oriented_jpeg(orientation)
    specs = parse_variants(f"thumb:100x100:{fmt},medium:300:{fmt}:70")
    processed = process_with_variants(body, specs)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(body))).convert("RGB")
    upright_w, upright_h = reference.size
    assert (upright_w, upright_h) == ((200, 400) if orientation in (6, 8) else (400, 200))
    by_name = {v.name: v for v in processed.variants}
    assert list(by_name) == ["thumb", "medium"]
    for name, box in (("thumb", 100), ("medium", 300)):
        variant = by_name[name]
        image = _decode(variant.data)
        assert image.format == fmt.upper()
        assert variant.mime_type == f"image/{fmt}" and extension_for(variant.mime_type) == fmt
        assert image.size == (variant.width, variant.height)
        assert max(image.size) == box  # fits the box, aspect kept
        assert image.size[0] * upright_h == pytest.approx(image.size[1] * upright_w, rel=0.02)
        _assert_no_metadata(image)
        # the pixels are upright: same picture as the EXIF-transposed original
        expected = np.asarray(reference.resize(image.size), dtype=np.int16)
        got = np.asarray(image.convert("RGB"), dtype=np.int16)
        assert np.abs(expected - got).mean() < 12
    if orientation == 1:
        assert processed.data == body and not processed.reencoded  # the original as it came
    else:
        assert processed.reencoded  # made upright, its EXIF dropped, by imaging


@pytest.mark.parametrize("orientation", range(2, 9))
def test_corpus_orientations_come_out_upright(orientation: int) -> None:
    body = (IMAGES / f"hopper_orientation_{orientation}.jpg").read_bytes()  # 128x128
    processed = process_with_variants(body, parse_variants("t:64:webp"))
    (variant,) = processed.variants
    image = _decode(variant.data)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(body))).convert("RGB")
    expected = np.asarray(reference.resize((64, 64)), dtype=np.int16)
    got = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.abs(expected - got).mean() < 12
    # and not merely close to the unrotated picture (this picture is not symmetric)
    raw = np.asarray(Image.open(io.BytesIO(body)).convert("RGB").resize((64, 64)), np.int16)
    assert np.abs(raw - got).mean() > 2 * np.abs(expected - got).mean()
    _assert_no_metadata(image)


@pytest.mark.parametrize("fmt", ["webp", pytest.param("avif", marks=needs_avif)])
def test_real_photo_icc_profile_kept_as_colour(fmt: str) -> None:
    body = (IMAGES / "icc_profile_big.jpg").read_bytes()  # 425x250, a large RGB ICC profile
    processed = process_with_variants(body, parse_variants(f"thumb:200:{fmt}"))
    (variant,) = processed.variants
    image = _decode(variant.data)
    assert image.format == fmt.upper() and image.size == (200, 118)
    assert image.info.get("icc_profile") == Image.open(io.BytesIO(body)).info["icc_profile"]
    _assert_no_metadata(image)
    assert processed.data == body  # the original stays as it came


def test_cmyk_source_gives_rgb_variant_without_the_cmyk_profile() -> None:
    body = (IMAGES / "pil_sample_cmyk.jpg").read_bytes()  # CMYK, EXIF, XMP, Photoshop
    processed = process_with_variants(body, parse_variants("thumb:50:webp,small:60:jpeg"))
    webp, jpeg = (_decode(v.data) for v in processed.variants)
    assert (webp.format, webp.mode, webp.size) == ("WEBP", "RGB", (50, 50))
    assert (jpeg.format, jpeg.mode, jpeg.size) == ("JPEG", "RGB", (60, 60))
    for image in (webp, jpeg):
        _assert_no_metadata(image)
        assert "photoshop" not in image.info and not image.info.get("icc_profile")


def test_transparency_kept_in_webp_and_flattened_on_white_in_jpeg() -> None:
    body = (IMAGES / "transparent.png").read_bytes()  # 200x150 RGBA
    processed = process_with_variants(body, parse_variants("w:100:webp,j:100:jpeg,a:100"))
    webp, jpeg, auto = (_decode(v.data) for v in processed.variants)
    assert webp.mode == "RGBA" and webp.getchannel("A").getextrema()[0] < 255
    assert jpeg.mode == "RGB" and jpeg.format == "JPEG"
    alpha = np.asarray(webp.getchannel("A"))
    clear = alpha == 0
    assert clear.any()
    assert np.asarray(jpeg)[clear].mean() > 240  # transparent areas became white
    assert auto.format == "WEBP"  # auto: WebP for an image with alpha, as before


def test_small_image_gets_no_variant_and_default_behaviour_unchanged() -> None:
    body = (IMAGES / "hopper.jpg").read_bytes()  # 128x128
    processed = process_with_variants(body, parse_variants("big:320:webp,small:64:webp"))
    assert [v.name for v in processed.variants] == ["small"]
    # without variant_formats, process_image makes JPEG variants as it always did
    plain = process_image(body, variants={"small": (64, 64)})
    assert _decode(plain.variants[0].data).format == "JPEG"


def test_process_image_refuses_unknown_variant_format() -> None:
    body = (IMAGES / "hopper.jpg").read_bytes()
    with pytest.raises(ValueError, match="variant 'x'"):
        process_image(body, variants={"x": (10, 10)}, variant_formats={"x": ("GIF", 80)})
    with pytest.raises(ValueError, match="variant 'x'"):
        process_image(body, variants={"x": (10, 10)}, variant_formats={"x": ("WEBP", 0)})


def test_encode_variant_modes_and_metadata_from_info_not_written() -> None:
    grey = Image.new("L", (8, 8), 128)
    grey.info["exif"] = b"Exif\x00\x00junk"
    grey.info["xmp"] = b"<x/>"
    for fmt in ("WEBP", "JPEG", *(["AVIF"] if avif_supported() else [])):
        data, mime = encode_variant(grey, fmt, 80)
        image = _decode(data)
        assert mime == f"image/{fmt.lower()}"
        _assert_no_metadata(image)
    palette = Image.new("P", (8, 8))
    palette.info["transparency"] = 0
    data, _ = encode_variant(palette, "WEBP", 80)
    assert _decode(data).mode == "RGBA"
    with pytest.raises(ValueError, match="cannot encode"):
        encode_variant(grey, "GIF", 80)
