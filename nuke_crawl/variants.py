"""Image variants: the ``NUKE_IMAGE_VARIANTS`` setting, and WebP/AVIF/JPEG encoding.

``NUKE_IMAGE_VARIANTS`` names each variant's box and format, comma-separated::

    thumb:320x240:webp,medium:1024:webp,hero:1600x1200:avif:55

Each entry is ``name:size[:format[:quality]]``:

- ``name``: letters, digits, ``-`` or ``_`` (it becomes part of a file name), unique;
- ``size``: ``WIDTHxHEIGHT``, or one number for a square box (``1024``: the longest side
  at most 1024 px); 1..10000 each. The variant fits the box with the aspect ratio kept;
  an image already inside the box gets no variant of that name (never upscaled);
- ``format``: ``webp``, ``avif`` (only where this Pillow can write AVIF: see
  :func:`avif_supported`), ``jpeg``/``jpg``, or ``auto`` (the default: JPEG, or WebP when
  the image has transparency);
- ``quality``: 1..100 (defaults: WebP 80, AVIF 60, JPEG 85 - AVIF's scale is not JPEG's:
  60 looks about like JPEG 85 at a third of the size).

The older dict form (``{"thumb": [320, 240]}``, also as JSON on the command line) is still
read, with ``auto`` format; values may also be ``"320x240:webp"`` strings. An empty value
means no variants. A bad entry is refused with a :class:`VariantSpecError` naming the
setting and the entry, before any download.

Variants are made by :func:`nuke_crawl.imaging.process_image` from the image it has
already decoded (once, DCT-scaled for JPEG): EXIF orientation is applied first, and
:func:`encode_variant` writes no EXIF, XMP or other metadata (only an RGB/grey ICC profile,
which is colour, not metadata). The original is never touched: ``ProcessedImage.data``
stays the bytes as they came whenever ``imaging`` keeps them.

On the Cloudflare Images store, variants are Cloudflare's (named on the account) and
nothing of these is uploaded; these are for the folder and S3 stores.

Costs measured here (2 shared cores, one 1024x1024 variant): WebP ~50-120 ms, AVIF at
``speed=8`` ~0.6 s, JPEG ~3 ms; a 320x240 WebP ~10-20 ms, AVIF ~35 ms. AVIF is for
deliberate use, not a default.
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, features

from nuke_crawl.imaging import ProcessedImage, process_image

__all__ = [
    "DEFAULT_QUALITY",
    "SETTING",
    "VariantSpec",
    "VariantSpecError",
    "avif_supported",
    "encode_variant",
    "extension_for",
    "parse_variants",
    "process_kwargs",
    "process_with_variants",
    "variants_from_settings",
]

SETTING = "NUKE_IMAGE_VARIANTS"
#: Pillow format -> default quality.
DEFAULT_QUALITY: Mapping[str, int] = {"WEBP": 80, "AVIF": 60, "JPEG": 85}
_FORMATS = {"webp": "WEBP", "avif": "AVIF", "jpeg": "JPEG", "jpg": "JPEG", "auto": None}
_MIME = {"WEBP": "image/webp", "AVIF": "image/avif", "JPEG": "image/jpeg"}
_EXTENSIONS = {
    "image/webp": "webp",
    "image/avif": "avif",
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SIZE = re.compile(r"(\d{1,5})(?:x(\d{1,5}))?", re.IGNORECASE)
_MAX_SIDE = 10_000
# AVIF encoder speed (0 slowest/best .. 10 fastest): 8 is ~2x faster than libavif's
# default 6 for ~5% more bytes at the same quality.
_AVIF_SPEED = 8
# libwebp's default effort; 6 buys ~1% smaller files for about twice the time.
_WEBP_METHOD = 4


class VariantSpecError(ValueError):
    """``NUKE_IMAGE_VARIANTS`` (or a value given for it) cannot be used."""


@dataclass(frozen=True)
class VariantSpec:
    """One variant: its ``name``, box (``width`` x ``height``), Pillow ``format``
    (``None``: JPEG, or WebP when the image has alpha) and ``quality`` (None: default)."""

    name: str
    width: int
    height: int
    format: str | None = None
    quality: int | None = None

    @property
    def box(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def encoding(self) -> tuple[str, int] | None:
        """``(format, quality)`` for :func:`~nuke_crawl.imaging.process_image`, or None."""
        if self.format is None:
            return None
        return self.format, self.quality or DEFAULT_QUALITY[self.format]


@functools.lru_cache(maxsize=1)
def avif_supported() -> bool:
    """True when this Pillow can write AVIF (Pillow 11.3+ built with libavif)."""
    try:
        return bool(features.check("avif"))
    except Exception:  # noqa: BLE001 - an unknown feature name on an older Pillow
        return False


def parse_variants(value: Any, setting: str = SETTING) -> tuple[VariantSpec, ...]:
    """Parse a ``NUKE_IMAGE_VARIANTS`` value (string, JSON, dict or list of entries)."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("{", "[")):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise VariantSpecError(f"{setting}: not valid JSON ({exc})") from None
        else:
            value = [part for part in (p.strip() for p in text.split(",")) if part]
    specs: list[VariantSpec] = []
    if isinstance(value, Mapping):
        for name, spec in value.items():
            specs.append(_from_mapping_entry(str(name), spec, setting))
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        for entry in value:
            if not isinstance(entry, str):
                raise VariantSpecError(
                    f"{setting}: {entry!r} is not a name:size[:format[:quality]] entry"
                )
            specs.append(_parse_entry(entry.strip(), setting))
    else:
        raise VariantSpecError(
            f"{setting}: expected entries like 'thumb:320x240:webp', got {value!r}"
        )
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise VariantSpecError(f"{setting}: the variant name {spec.name!r} is used twice")
        seen.add(spec.name)
    return tuple(specs)


def variants_from_settings(settings: Any, setting: str = SETTING) -> tuple[VariantSpec, ...]:
    """The variants a Scrapy ``settings`` object asks for (its raw ``NUKE_IMAGE_VARIANTS``)."""
    return parse_variants(settings.get(setting), setting)


def process_kwargs(specs: Sequence[VariantSpec]) -> dict[str, Any]:
    """``variants`` and ``variant_formats`` arguments of ``process_image`` for ``specs``."""
    formats = {spec.name: spec.encoding for spec in specs if spec.encoding is not None}
    return {"variants": {spec.name: spec.box for spec in specs}, "variant_formats": formats}


def process_with_variants(
    body: bytes, specs: Sequence[VariantSpec], **options: Any
) -> ProcessedImage:
    """:func:`~nuke_crawl.imaging.process_image` with ``specs``'s variants (same errors)."""
    return process_image(body, **options, **process_kwargs(specs))


def extension_for(mime_type: str) -> str:
    """The file extension of a variant's MIME type (``image/webp`` -> ``webp``)."""
    return _EXTENSIONS.get(mime_type, "jpg")


def encode_variant(
    image: Image.Image, fmt: str, quality: int, icc: bytes | None = None
) -> tuple[bytes, str]:
    """Encode an upright, resized ``image`` as ``fmt`` (WEBP, AVIF, JPEG); ``(data, mime)``.

    No EXIF, XMP or comment is written, whatever ``image.info`` holds; ``icc`` is embedded
    only when it is an RGB (or grey, for a grey JPEG) profile. JPEG has no alpha:
    a transparent image is flattened onto white.
    """
    if fmt not in _MIME:
        raise ValueError(f"cannot encode a variant as {fmt!r}")
    if fmt == "AVIF" and not avif_supported():
        raise ValueError("this Pillow cannot write AVIF")
    if image.mode not in ("L", "RGB", "LA", "RGBA"):
        alpha = image.mode in ("PA", "RGBa", "La") or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
    has_alpha = image.mode in ("LA", "RGBA")
    if fmt == "JPEG" and has_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif fmt != "JPEG" and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if has_alpha else "RGB")
    profile = _profile_for(icc, image.mode)
    buf = io.BytesIO()
    # Every encoder is given its metadata explicitly: nothing is taken from image.info.
    if fmt == "WEBP":
        image.save(
            buf,
            "WEBP",
            quality=quality,
            method=_WEBP_METHOD,
            icc_profile=profile,
            exif=b"",
            xmp=b"",
        )
    elif fmt == "AVIF":
        image.save(
            buf, "AVIF", quality=quality, speed=_AVIF_SPEED, icc_profile=profile, exif=b"", xmp=b""
        )
    else:
        params: dict[str, Any] = {"quality": quality, "optimize": False}
        if profile:
            params["icc_profile"] = profile
        image.save(buf, "JPEG", **params)
    return buf.getvalue(), _MIME[fmt]


# --------------------------------------------------------------------------- helpers


def _profile_for(icc: bytes | None, mode: str) -> bytes | None:
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    if mode in ("RGB", "RGBA") and space == b"RGB ":
        return icc
    if mode == "L" and space == b"GRAY":
        return icc
    return None


def _parse_entry(entry: str, setting: str) -> VariantSpec:
    fields = entry.split(":")
    if len(fields) < 2 or len(fields) > 4:
        raise VariantSpecError(
            f"{setting}: {entry!r} should be name:size[:format[:quality]], e.g. thumb:320x240:webp"
        )
    return _build(
        entry,
        fields[0].strip(),
        fields[1].strip(),
        fields[2].strip() if len(fields) > 2 else "auto",
        fields[3].strip() if len(fields) > 3 else None,
        setting,
    )


def _from_mapping_entry(name: str, spec: Any, setting: str) -> VariantSpec:
    entry = f"{name}: {spec!r}"
    if isinstance(spec, str):
        fields = spec.split(":")
        if len(fields) > 3:
            raise VariantSpecError(f"{setting}: {entry} should be size[:format[:quality]]")
        return _build(
            entry,
            name,
            fields[0].strip(),
            fields[1].strip() if len(fields) > 1 else "auto",
            fields[2].strip() if len(fields) > 2 else None,
            setting,
        )
    if isinstance(spec, Sequence) and 2 <= len(spec) <= 4:
        width, height = spec[0], spec[1]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
            raise VariantSpecError(f"{setting}: {entry}: width and height must be integers")
        fmt = str(spec[2]) if len(spec) > 2 else "auto"
        quality = str(spec[3]) if len(spec) > 3 else None
        return _build(entry, name, f"{width}x{height}", fmt, quality, setting)
    raise VariantSpecError(f"{setting}: {entry} should be [width, height] or 'WxH:format'")


def _build(
    entry: str, name: str, size: str, fmt_text: str, quality_text: str | None, setting: str
) -> VariantSpec:
    where = f"{setting}: {entry!r}"
    if not _NAME.fullmatch(name):
        raise VariantSpecError(
            f"{where}: the name must be 1-32 letters, digits, - or _ (got {name!r})"
        )
    match = _SIZE.fullmatch(size)
    if not match:
        raise VariantSpecError(
            f"{where}: the size must be WIDTHxHEIGHT or one number (got {size!r})"
        )
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) else width
    if not (1 <= width <= _MAX_SIDE and 1 <= height <= _MAX_SIDE):
        raise VariantSpecError(f"{where}: width and height must be within 1..{_MAX_SIDE}")
    key = fmt_text.lower()
    if key not in _FORMATS:
        raise VariantSpecError(f"{where}: unknown format {fmt_text!r} (webp, avif, jpeg or auto)")
    fmt = _FORMATS[key]
    if fmt == "AVIF" and not avif_supported():
        raise VariantSpecError(
            f"{where}: this Pillow ({Image.__version__}) cannot write AVIF; use webp"
        )
    quality: int | None = None
    if quality_text is not None:
        if fmt is None:
            raise VariantSpecError(f"{where}: a quality needs a format (webp, avif, jpeg)")
        if not quality_text.isdigit() or not 1 <= int(quality_text) <= 100:
            raise VariantSpecError(
                f"{where}: the quality must be within 1..100 (got {quality_text!r})"
            )
        quality = int(quality_text)
    return VariantSpec(name, width, height, fmt, quality)
