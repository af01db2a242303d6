"""Validate, normalise and thumbnail downloaded images (pure functions, thread-safe).

The image pipeline calls :func:`process_image` in a worker thread for every downloaded
body. It either returns a :class:`ProcessedImage` (the bytes to store, upright and
web-safe, plus resized variants) or raises :class:`ImageRejected` with a machine-readable
``reason`` and a human-readable ``detail``. Nothing here does I/O besides reading the
given bytes, and nothing changes global Pillow state (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES`` and registered plugins are left alone).

Rejection rules (``ImageRejected.reason``)
-------------------------------------------
``empty``
    The body has no bytes.
``not_image``
    Pillow cannot identify the bytes and they carry no known image signature: HTML,
    JSON, text or random bytes, whatever the ``content_type`` claimed. The
    ``content_type`` only enriches ``detail`` (HTML served as ``image/jpeg`` is
    ``not_image``; a real JPEG served as ``text/html`` is processed normally).
``unsupported_format``
    A recognised image container we cannot or will not decode: HEIF/HEIC when the
    optional ``pillow-heif`` package is missing, SVG, PSD, JPEG XL, JPEG 2000, and
    formats outside the allow-list below even when Pillow has a plugin for them (EPS,
    PSD, TGA... are never handed to Pillow: some shell out or misidentify text).
``corrupt``
    A recognised signature whose structure Pillow rejects (``broken.png``), a zero
    width or height (``zero_width.gif``: a GIF signature, so ``corrupt`` rather than
    ``not_image``), or any decode error other than truncation (``OSError`` "broken data
    stream", ``SyntaxError``, ``struct.error``, ``ValueError``, ``KeyError``...).
``truncated``
    The data ends early. Detected by a full decode (``load()``) of every frame we keep;
    ``verify()`` is never relied on. ``LOAD_TRUNCATED_IMAGES`` stays False, so a PNG
    whose pixels are complete but whose last chunk is cut (``truncated_end_chunk.png``)
    is ``truncated`` too.
``decompression_bomb``
    A frame larger than ``max_pixels`` (checked from the headers before decoding; GIF
    frame extents are pre-scanned from the raw blocks so a bomb in frame 2 is caught
    before anything is decoded), all frames of an animation together larger than
    ``max_total_pixels`` (default ``4 * max_pixels``), Pillow's own
    ``DecompressionBombError``/``DecompressionBombWarning`` (the warning is turned into
    this rejection), a PNG text chunk that decompresses past Pillow's limit
    (``png_decompression_dos.png``'s ``ValueError``), or ``MemoryError``.
``too_small``
    Upright (after EXIF orientation) width below ``min_width`` or height below
    ``min_height``.

Only these Pillow formats are opened: JPEG (and MPO, which Pillow reports for
multi-picture JPEGs), PNG/APNG, GIF, WebP, AVIF, TIFF, BMP and ICO; HEIF/HEIC goes through
``pillow-heif`` when it is installed (without registering it as a Pillow plugin).

Output rules
------------
* The original bytes are kept (``reencoded=False``) when the format is JPEG, PNG, WebP,
  GIF or AVIF, the EXIF orientation is 1 or absent and the mode is web-safe (not CMYK,
  YCCK, LAB or 16-bit). Animated GIF/WebP/APNG/AVIF are kept as they are under the same
  conditions, after every frame has been decoded once.
* Otherwise an upright, web-safe copy is encoded (``reencoded=True``; more precisely,
  ``reencoded`` means "``data`` is not the original bytes"):

  - the EXIF orientation is applied (the same transposition as
    ``ImageOps.exif_transpose``) and the EXIF block is dropped from the copy, so no viewer
    can rotate it twice (this also strips GPS data);
  - CMYK/YCCK becomes RGB: through the embedded CMYK ICC profile to sRGB when there is
    one, otherwise Pillow's conversion (Pillow already un-inverts Adobe CMYK JPEGs);
  - 16-bit samples are scaled to 8 bits (``>> 8``, never clipped); a 16-bit grey PNG with
    a ``tRNS`` colour keeps that transparency as an alpha channel;
  - MPO becomes its first picture as a JPEG. When that picture is upright and RGB/L it is
    cut out of the file losslessly (its MPF segment removed), otherwise re-encoded;
  - the target format follows the source: PNG/GIF sources -> PNG, WebP -> WebP, and
    JPEG, MPO, TIFF, BMP, ICO, AVIF, HEIF -> JPEG, or PNG when the image really has
    transparency (alpha is never flattened; a palette/tRNS transparency whose colour no
    pixel uses does not count). Animated sources that need re-encoding (a 16-bit APNG)
    stay animated: APNG -> APNG, others -> animated WebP;
  - JPEG copies keep an RGB/grey ICC profile (a CMYK profile is consumed by the
    conversion instead); PNG and WebP copies keep it too. Encoding is deterministic:
    the same input gives byte-identical output.

Variants
--------
For each ``name -> (max_w, max_h)`` box whose width or height the upright image exceeds, a
:class:`Variant` fitting the box with the aspect ratio kept (Pillow's antialiasing
BILINEAR filter with ``reducing_gap``: 40% cheaper than BICUBIC for thumbnails, and within
0.1 grey level of it on average): JPEG for opaque images, WebP when there is alpha.
Smaller images get no variant for that box. Animated images get variants of their first
frame. ``variant_formats`` (built from ``NUKE_IMAGE_VARIANTS`` by :mod:`nuke_crawl.variants`)
sets a variant's format and quality instead: WebP, AVIF or JPEG, encoded there without
metadata. The default is a single ``thumb`` (320x240); a larger box (say ``"medium":
(1024, 768)``) costs about four times the CPU of the whole verification, because it
forces a full-size decode and a large resize.

When the original JPEG bytes are kept, the JPEG is decoded once with ``Image.draft()``
(libjpeg DCT scaling) to the smallest scale still covering the largest box. DCT scaling
still entropy-decodes every byte of the scan data, so truncation and corruption are
detected exactly as by a full-size decode (checked: same ``OSError`` on cut and
corrupted files), at a fraction of the cost. Images that must be re-encoded are decoded
at full size, and the variants are made from that decoded image.

Thread safety
-------------
``process_image`` shares no mutable state between calls. The only process-wide
resource it touches is the ``warnings`` filter list: ``warnings.catch_warnings()`` is not
thread-safe in Python 3.11, so the short sections that need it (``Image.open``, frame
seeks and EXIF parsing: header work only, never pixel decoding) run under a private
lock, which keeps concurrent calls from restoring each other's filters.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from nuke_crawl import settings as defaults
from nuke_crawl.exceptions import ReasonError

__all__ = [
    "DEFAULT_VARIANTS",
    "REJECTION_REASONS",
    "ImageRejected",
    "ProcessedImage",
    "Variant",
    "heif_supported",
    "process_image",
]

REJECTION_REASONS = frozenset(
    {
        "empty",
        "not_image",
        "unsupported_format",
        "truncated",
        "corrupt",
        "decompression_bomb",
        "too_small",
    }
)

DEFAULT_VARIANTS: Mapping[str, tuple[int, int]] = defaults.NUKE_IMAGE_VARIANTS

# Formats handed to Image.open (MPO is produced by the JPEG factory, it has no opener).
_PILLOW_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP", "ICO")
# Formats whose original bytes may be stored as they are.
_KEEPABLE = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
    "AVIF": ("avif", "image/avif"),
}
_OUTPUT = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
}
_ANIMATABLE = {"GIF", "PNG", "WEBP", "AVIF"}
# Modes a browser shows correctly, per kept format.
_WEB_SAFE_MODES = {
    "JPEG": {"L", "RGB"},
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA"},
    "GIF": {"L", "P", "RGB", "RGBA"},
    "WEBP": {"RGB", "RGBA"},
    "AVIF": {"L", "RGB", "RGBA"},
}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}

# EXIF orientation -> transposition (as ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112

_HEIF_BRANDS = {
    b"heic",
    b"heix",
    b"hevc",
    b"hevx",
    b"heim",
    b"heis",
    b"hevm",
    b"hevs",
    b"mif1",
    b"msf1",
    b"mif2",
    b"miaf",
}
_AVIF_BRANDS = {b"avif", b"avis"}

_WARNINGS_LOCK = threading.Lock()


class ImageRejected(ReasonError):
    """The body is not a storable image.

    ``reason`` is one of :data:`REJECTION_REASONS`; ``detail`` says what was found and why.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REJECTION_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(reason, detail)


@dataclass
class Variant:
    """A resized copy of the image, fitting a named box."""

    name: str
    data: bytes
    width: int
    height: int
    mime_type: str


@dataclass
class ProcessedImage:
    """The result of :func:`process_image`: what to store, and how it was obtained."""

    data: bytes
    mime_type: str
    extension: str
    width: int
    height: int
    sha256: str
    source_format: str
    reencoded: bool
    variants: list[Variant] = field(default_factory=list)


# --------------------------------------------------------------------------- public API


def heif_supported() -> bool:
    """True when the optional ``pillow-heif`` package is importable (HEIF/HEIC decoding)."""
    return _pillow_heif() is not None


def process_image(
    body: bytes,
    *,
    content_type: str | None = None,
    max_pixels: int = 50_000_000,
    min_width: int = 0,
    min_height: int = 0,
    variants: Mapping[str, tuple[int, int]] = DEFAULT_VARIANTS,
    jpeg_quality: int = 85,
    max_total_pixels: int | None = None,
    variant_formats: Mapping[str, tuple[str, int]] | None = None,
) -> ProcessedImage:
    """Validate ``body`` and return what to store, or raise :class:`ImageRejected`.

    See the module docstring for the rules. ``max_total_pixels`` bounds the pixels of all
    frames of an animation together (``None``: ``4 * max_pixels``). ``variant_formats``
    maps a variant's name to ``(format, quality)`` (``"WEBP"``, ``"AVIF"`` or ``"JPEG"``;
    :mod:`nuke_crawl.variants` builds it from ``NUKE_IMAGE_VARIANTS``); a variant not
    named there gets JPEG, or WebP when the image has alpha. Invalid arguments (not the
    body) raise ``ValueError``.
    """
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError("jpeg_quality must be within 1..100")
    for name, box in variants.items():
        if len(box) != 2 or box[0] <= 0 or box[1] <= 0:
            raise ValueError(f"variant {name!r} needs a positive (width, height) box")
    formats = dict(variant_formats or {})
    for name, (fmt, quality) in formats.items():
        if fmt not in ("WEBP", "AVIF", "JPEG") or not 1 <= quality <= 100:
            raise ValueError(f"variant {name!r}: format {fmt!r} at quality {quality}")
    total_limit = 4 * max_pixels if max_total_pixels is None else max_total_pixels
    if not body:
        raise ImageRejected("empty", "the body has no bytes")
    try:
        return _process(
            body if isinstance(body, bytes) else bytes(body),
            content_type,
            max_pixels,
            total_limit,
            min_width,
            min_height,
            variants,
            jpeg_quality,
            formats,
        )
    except ImageRejected:
        raise
    except MemoryError as exc:
        raise ImageRejected("decompression_bomb", f"out of memory while decoding: {exc}") from exc
    except Exception as exc:  # a decoder bug or an error class we did not map
        raise _classify_error(exc, "while processing") from exc


# ------------------------------------------------------------------------- the pipeline


@dataclass
class _Decoded:
    """The upright first frame, plus what is needed to decide the output."""

    image: Image.Image  # upright, loaded (possibly reduced by draft)
    width: int  # upright full-size dimensions
    height: int
    source_format: str
    icc: bytes | None
    frames: list[Image.Image] | None = None  # upright frames, when an animation is re-encoded
    durations: list[int] | None = None
    loop: int | None = None


def _process(
    body: bytes,
    content_type: str | None,
    max_pixels: int,
    total_limit: int,
    min_width: int,
    min_height: int,
    boxes: Mapping[str, tuple[int, int]],
    quality: int,
    formats: Mapping[str, tuple[str, int]],
) -> ProcessedImage:
    im = _open(body, content_type)
    if im is None:
        return _process_heif(body, max_pixels, min_width, min_height, boxes, quality, formats)
    with im:
        fmt = str(im.format)
        width, height = im.size
        _check_dimensions(width, height, max_pixels, fmt)
        if fmt == "GIF":  # before anything seeks: a later frame may grow the canvas
            _check_gif_extents(body, max_pixels, total_limit)
        n_frames = _frame_count(im)
        animated = n_frames > 1 and fmt in _ANIMATABLE
        if animated and n_frames * width * height > total_limit:
            raise ImageRejected(
                "decompression_bomb",
                f"{n_frames} frames of {width}x{height} exceed {total_limit} pixels in total",
            )

        # Orientation is known before decoding except for PNG, whose getexif() loads.
        orientation = None if fmt == "PNG" else _orientation(im)
        if fmt != "PNG":
            _check_min_size(width, height, orientation, min_width, min_height)

        web_safe = (
            fmt in _KEEPABLE
            and im.mode in _WEB_SAFE_MODES[fmt]
            and not _is_sixteen_bit(body, im, fmt)
        )
        draft_box = None
        if fmt == "JPEG" and web_safe and orientation in (None, 1):
            draft_box = _largest_needed_box(width, height, boxes)
        _load(im, draft_box)
        if fmt == "PNG":
            orientation = _orientation(im)
            _check_min_size(width, height, orientation, min_width, min_height)

        icc = im.info.get("icc_profile") or None
        up_w, up_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        keep = web_safe and orientation in (None, 1)
        first = _upright(im, orientation)
        decoded = _Decoded(first, up_w, up_h, fmt, icc)
        if animated:
            if first is im:
                decoded.image = im.copy()
            decoded.loop = im.info.get("loop")
            first_duration = int(im.info.get("duration", 0) or 0)
            frames, durations = _decode_other_frames(
                im, n_frames, max_pixels, orientation, collect=not keep
            )
            if frames is not None and durations is not None:
                decoded.frames = [decoded.image.convert("RGBA"), *frames]
                decoded.durations = [first_duration, *durations]
        if keep:
            ext, mime = _KEEPABLE[fmt]
            return _result(
                body,
                mime,
                ext,
                decoded,
                reencoded=False,
                boxes=boxes,
                quality=quality,
                formats=formats,
            )
        if fmt == "MPO" and orientation in (None, 1) and im.mode in ("L", "RGB"):
            sliced = _mpo_first_picture(body, im)
            if sliced is not None:
                return _result(
                    sliced,
                    "image/jpeg",
                    "jpg",
                    decoded,
                    reencoded=True,
                    boxes=boxes,
                    quality=quality,
                    formats=formats,
                )
        return _reencode(decoded, boxes, quality, formats)


def _process_heif(
    body: bytes,
    max_pixels: int,
    min_width: int,
    min_height: int,
    boxes: Mapping[str, tuple[int, int]],
    quality: int,
    formats: Mapping[str, tuple[str, int]],
) -> ProcessedImage:
    """Decode HEIF/HEIC through pillow-heif (libheif applies irot/imir: output is upright)."""
    pillow_heif = _pillow_heif()
    if pillow_heif is None:
        raise ImageRejected(
            "unsupported_format", "HEIF/HEIC image and the pillow-heif package is not installed"
        )
    try:
        heif = pillow_heif.open_heif(body, convert_hdr_to_8bit=True)
        width, height = heif.size
    except Exception as exc:
        raise _classify_error(exc, "opening HEIF") from exc
    _check_dimensions(width, height, max_pixels, "HEIF")
    _check_min_size(width, height, 1, min_width, min_height)
    try:
        image = heif.to_pillow()
        image.load()
    except MemoryError:
        raise
    except Exception as exc:
        raise _classify_error(exc, "decoding HEIF") from exc
    icc = image.info.get("icc_profile") or None
    decoded = _Decoded(image, width, height, "HEIF", icc)
    return _reencode(decoded, boxes, quality, formats)


# ----------------------------------------------------------------------- opening, sniffing


@contextmanager
def _pillow_warnings() -> Iterator[None]:
    """Make DecompressionBombWarning an error and silence Pillow's UserWarnings, locally.

    ``warnings.catch_warnings`` swaps the process-wide filter list, so concurrent entries
    are serialised by a lock; only header parsing runs inside.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _open(body: bytes, content_type: str | None) -> ImageFile.ImageFile | None:
    """Open ``body`` lazily (header only). ``None`` means: HEIF, to be decoded elsewhere."""
    try:
        with _pillow_warnings():
            return Image.open(io.BytesIO(body), formats=_PILLOW_FORMATS)
    except UnidentifiedImageError:
        pass
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("decompression_bomb", str(exc)) from exc
    except Exception as exc:
        if _sniff(body) is None:  # e.g. text starting with "BM" that Pillow tried as BMP
            raise ImageRejected(
                "not_image", f"no image signature ({exc}): {_describe(body, content_type)}"
            ) from exc
        raise _classify_error(exc, "opening") from exc
    kind = _sniff(body)
    described = _describe(body, content_type)
    if kind == "heif":
        return None
    if kind is None:
        raise ImageRejected("not_image", f"no image signature: {described}")
    if kind in ("gif", "png", "jpeg", "webp", "bmp", "tiff", "ico", "avif"):
        raise ImageRejected(
            "corrupt", f"{kind.upper()} signature but unreadable structure: {described}"
        )
    raise ImageRejected("unsupported_format", f"{kind} image is not supported: {described}")


def _sniff(body: bytes) -> str | None:
    """Name the container from its magic bytes (None: not an image signature we know)."""
    head = body[:64]
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and struct.unpack_from("<I", head, 14)[0] in (12, 16, 40, 52, 56, 64, 108, 124)
    ):
        return "bmp"  # a DIB header size: not just text starting with "BM"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if head.startswith(b"\x00\x00\x01\x00") and len(body) >= 22:
        return "ico"
    if head[4:8] == b"ftyp":
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(len(head), 40), 4)}
        if brands & _AVIF_BRANDS:
            return "avif" if head[8:12] in _AVIF_BRANDS or not brands & _HEIF_BRANDS else "heif"
        if brands & _HEIF_BRANDS:
            return "heif"
        if head[8:12] in (b"jxl ",):
            return "jpeg-xl"
        if head[8:12] in (b"jp2 ", b"jpx ", b"jpm "):
            return "jpeg-2000"
        return None
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "jpeg-xl"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg-2000"
    if head.startswith(b"8BPS"):
        return "psd"
    if head.startswith(b"%!PS"):
        return "eps"
    if _looks_like_svg(body):
        return "svg"
    return None


_SVG_PROLOGUE = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!DOCTYPE\s+svg[^>]*>\s*)?"
    rb"(?:<!--.*?-->\s*)*<svg[\s>]",
    re.IGNORECASE | re.DOTALL,
)


def _looks_like_svg(body: bytes) -> bool:
    """True when the document element of ``body`` is ``<svg>`` (not HTML embedding one)."""
    return bool(_SVG_PROLOGUE.match(body[:4096]))


def _describe(body: bytes, content_type: str | None) -> str:
    """A short, printable description of unidentified bytes, for ``detail``."""
    head = body[:32]
    text = head.decode("ascii", "replace")
    printable = "".join(ch if ch.isprintable() else "." for ch in text)
    ctype = content_type or "no content type"
    return f"{len(body)} bytes ({ctype}), starting {printable!r}"


def _classify_error(exc: BaseException, when: str) -> ImageRejected:
    """Map a Pillow/decoder exception to a rejection."""
    message = str(exc)
    lower = message.lower()
    name = type(exc).__name__
    detail = f"{name} {when}: {message}" if message else f"{name} {when}"
    if isinstance(exc, ImageRejected):
        return exc
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError)):
        return ImageRejected("decompression_bomb", detail)
    if isinstance(exc, ValueError) and "decompressed data too large" in lower:
        return ImageRejected("decompression_bomb", detail)
    if isinstance(exc, EOFError) or "truncated" in lower or "premature end" in lower:
        return ImageRejected("truncated", detail)
    if isinstance(exc, UnidentifiedImageError):
        return ImageRejected("corrupt", detail)
    return ImageRejected("corrupt", detail)


# -------------------------------------------------------------------- checks before decode


def _check_dimensions(width: int, height: int, max_pixels: int, fmt: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"{fmt} declares a {width}x{height} image")
    if width * height > max_pixels:
        raise ImageRejected(
            "decompression_bomb",
            f"{fmt} {width}x{height} is {width * height} pixels, over the limit of {max_pixels}",
        )


def _check_min_size(
    width: int, height: int, orientation: int | None, min_width: int, min_height: int
) -> None:
    up_w, up_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    if up_w < min_width or up_h < min_height:
        raise ImageRejected(
            "too_small", f"{up_w}x{up_h} (upright) is below the minimum {min_width}x{min_height}"
        )


def _frame_count(im: Image.Image) -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception as exc:
        raise _classify_error(exc, "counting frames") from exc


def _gif_frame_rects(body: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Yield (x, y, w, h) of every GIF image descriptor, without decoding anything.

    Stops quietly at truncation: the decoder will report it.
    """
    if len(body) < 13:
        return
    pos = 13
    flags = body[10]
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)

    def skip_sub_blocks(p: int) -> int:
        while p < len(body):
            size = body[p]
            p += 1 + size
            if size == 0:
                return p
        return len(body) + 1

    while pos < len(body):
        marker = body[pos]
        if marker == 0x3B:  # trailer
            return
        if marker == 0x21:  # extension: label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif marker == 0x2C:  # image descriptor
            if pos + 10 > len(body):
                return
            x, y, w, h = struct.unpack_from("<HHHH", body, pos + 1)
            yield x, y, w, h
            local = body[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 << ((local & 7) + 1)
            pos = skip_sub_blocks(pos + 1)  # LZW minimum code size, then data
        else:
            return  # garbage: let the decoder judge


def _check_gif_extents(body: bytes, max_pixels: int, total_limit: int) -> None:
    """Reject GIFs whose frames (as Pillow would grow the canvas) exceed the limits."""
    canvas_w, canvas_h = struct.unpack_from("<HH", body, 6)
    total = 0
    for index, (x, y, w, h) in enumerate(_gif_frame_rects(body)):
        canvas_w, canvas_h = max(canvas_w, x + w), max(canvas_h, y + h)
        pixels = canvas_w * canvas_h
        if pixels > max_pixels:
            raise ImageRejected(
                "decompression_bomb",
                f"GIF frame {index + 1} extends the canvas to {canvas_w}x{canvas_h} "
                f"({pixels} pixels), over the limit of {max_pixels}",
            )
        total += pixels
        if total > total_limit:
            raise ImageRejected(
                "decompression_bomb",
                f"GIF frames up to {index + 1} total {total} pixels, over {total_limit}",
            )


def _orientation(im: Image.Image) -> int | None:
    """The EXIF orientation (1-8), or None when absent or invalid. PNG: loads the image."""
    try:
        with _pillow_warnings():
            value = im.getexif().get(_EXIF_ORIENTATION_TAG)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("decompression_bomb", str(exc)) from exc
    except Exception as exc:
        if im.format == "PNG":  # getexif() loaded the pixels: a real decode error
            raise _classify_error(exc, "decoding") from exc
        return None  # unreadable EXIF: treat as absent, the pixels decide validity
    if isinstance(value, int) and 1 <= value <= 8:
        return value
    return None


def _is_sixteen_bit(body: bytes, im: Image.Image, fmt: str) -> bool:
    if im.mode in _SIXTEEN_BIT_MODES:
        return True
    if fmt == "PNG" and len(body) > 24 and body[12:16] == b"IHDR":
        return body[24] == 16  # Pillow reduces 16-bit RGB(A) to 8 bits; the file is not
    return False


def _largest_needed_box(
    width: int, height: int, boxes: Mapping[str, tuple[int, int]]
) -> tuple[int, int] | None:
    """The union of the boxes the image exceeds (what a draft decode must still cover)."""
    needed = [box for box in boxes.values() if width > box[0] or height > box[1]]
    if not needed:
        return None
    return max(b[0] for b in needed), max(b[1] for b in needed)


# ------------------------------------------------------------------------------- decoding


def _load(im: ImageFile.ImageFile, draft_box: tuple[int, int] | None) -> None:
    """Decode the current frame fully (optionally DCT-scaled), mapping errors to rejections."""
    try:
        if draft_box is not None:
            im.draft(None, draft_box)
        im.load()
    except ImageRejected:
        raise
    except Exception as exc:
        raise _classify_error(exc, "decoding") from exc


def _decode_other_frames(
    im: ImageFile.ImageFile,
    n_frames: int,
    max_pixels: int,
    orientation: int | None,
    *,
    collect: bool,
) -> tuple[list[Image.Image] | None, list[int] | None]:
    """Seek to and fully decode frames 1..n-1, checking each frame's size first."""
    frames: list[Image.Image] | None = [] if collect else None
    durations: list[int] | None = [] if collect else None
    for index in range(1, n_frames):
        try:
            with _pillow_warnings():
                im.seek(index)
        except EOFError as exc:
            raise ImageRejected("truncated", f"frame {index + 1} of {n_frames} is missing") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("decompression_bomb", f"frame {index + 1}: {exc}") from exc
        except Exception as exc:
            raise _classify_error(exc, f"seeking to frame {index + 1}") from exc
        width, height = im.size
        _check_dimensions(width, height, max_pixels, f"{im.format} frame {index + 1}")
        _load(im, None)
        if frames is not None and durations is not None:
            frame = im.convert("RGBA")
            frames.append(_upright(frame, orientation))
            durations.append(int(im.info.get("duration", 0) or 0))
    return frames, durations


def _upright(im: Image.Image, orientation: int | None) -> Image.Image:
    method = _ORIENTATION_TRANSPOSE.get(orientation or 1)
    return im if method is None else im.transpose(method)


def _mpo_first_picture(body: bytes, im: Image.Image) -> bytes | None:
    """The first picture of an MPO as a plain JPEG (lossless slice, MPF removed), or None."""
    try:
        entries = im.mpinfo[0xB002]  # type: ignore[attr-defined]
        size = int(entries[0]["Size"])
    except Exception:  # noqa: BLE001 - any malformed MPF index: not an MPO we can slice
        return None
    if not 0 < size <= len(body):
        return None
    stripped = _strip_jpeg_app2_mpf(body[:size])
    if stripped is None:
        return None
    try:
        with _pillow_warnings(), Image.open(io.BytesIO(stripped), formats=("JPEG",)) as check:
            ok = check.format == "JPEG" and check.size == im.size
    except Exception:  # noqa: BLE001 - Pillow raises many types on a bad slice: not usable
        return None
    return stripped if ok else None


def _strip_jpeg_app2_mpf(data: bytes) -> bytes | None:
    """Remove APP2 "MPF" segments from a JPEG's header (segments before SOS)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    out = [b"\xff\xd8"]
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            out.append(data[pos:])
            return b"".join(out)
        length = struct.unpack_from(">H", data, pos + 2)[0]
        segment = data[pos : pos + 2 + length]
        if not (marker == 0xE2 and segment[4:8] == b"MPF\x00"):
            out.append(segment)
        pos += 2 + length
    return None


# ------------------------------------------------------------------------------- encoding


def _has_alpha(im: Image.Image) -> bool:
    """True when the image has transparency that some pixel actually uses."""
    if im.mode in _ALPHA_MODES:
        alpha = im.getchannel("A") if im.mode not in ("RGBa", "La") else im.getchannel("a")
        return alpha.getextrema()[0] < 255  # type: ignore[index,operator]
    if "transparency" in im.info and im.mode in ("P", "L", "RGB", "1"):
        return _has_alpha(im.convert("RGBA"))
    return False


def _to_eight_bit(im: Image.Image) -> Image.Image:
    """Scale 16-bit/int/float greyscale to L (and a tRNS grey key to an LA alpha)."""
    arr = np.asarray(im)
    if im.mode == "F":
        scaled = np.clip(arr * (255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0), 0, 255)
        eight = scaled.astype(np.uint8)
    else:
        eight = (np.clip(arr.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    out = Image.fromarray(eight, "L")
    key = im.info.get("transparency")
    if isinstance(key, int):
        alpha = Image.fromarray(np.where(arr == key, 0, 255).astype(np.uint8), "L")
        out = Image.merge("LA", (out, alpha))
    return out


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """CMYK -> RGB through the embedded CMYK profile when there is one (to sRGB)."""
    if icc and _icc_colour_space(icc) == b"CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                im, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    return im.convert("RGB")


def _icc_colour_space(icc: bytes) -> bytes:
    return icc[16:20] if len(icc) >= 20 else b""


def _web_image(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bool]:
    """Convert to one of L, LA, RGB, RGBA; returns (image, has_alpha)."""
    mode = im.mode
    if mode in ("CMYK", "YCCK"):
        return _cmyk_to_rgb(im, icc), False
    if mode in _SIXTEEN_BIT_MODES:
        im = _to_eight_bit(im)
        mode = im.mode
    alpha = _has_alpha(im)
    if mode in ("L", "RGB") and not alpha:
        return im, False
    if mode == "1":
        return im.convert("L"), False
    if mode in ("L", "LA", "La"):
        return (im.convert("LA"), True) if alpha else (im.convert("L"), False)
    if alpha:
        return im.convert("RGBA"), True
    return im.convert("RGB"), False


def _icc_for(icc: bytes | None, mode: str) -> bytes | None:
    """The ICC profile to embed in an output of ``mode`` (only when colour spaces match)."""
    if not icc:
        return None
    space = _icc_colour_space(icc)
    if mode in ("RGB", "RGBA") and space == b"RGB ":
        return icc
    if mode in ("L", "LA") and space == b"GRAY":
        return icc
    return None


def _encode(im: Image.Image, fmt: str, quality: int, icc: bytes | None) -> bytes:
    buf = io.BytesIO()
    params: dict[str, Any] = {}
    profile = _icc_for(icc, im.mode)
    if profile:
        params["icc_profile"] = profile
    if fmt == "JPEG":
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        im.save(buf, "JPEG", quality=quality, **params)
    elif fmt == "WEBP":
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if im.mode in _ALPHA_MODES else "RGB")
        im.save(buf, "WEBP", quality=quality, method=4, **params)
    else:
        im.save(buf, "PNG", **params)
    return buf.getvalue()


def _target_format(source: str, alpha: bool) -> str:
    if source in ("PNG", "GIF"):
        return "PNG"
    if source == "WEBP":
        return "WEBP"
    return "PNG" if alpha else "JPEG"


def _reencode(
    decoded: _Decoded,
    boxes: Mapping[str, tuple[int, int]],
    quality: int,
    formats: Mapping[str, tuple[str, int]],
) -> ProcessedImage:
    image, alpha = _web_image(decoded.image, decoded.icc)
    decoded.image = image
    icc = None if _icc_colour_space(decoded.icc or b"") == b"CMYK" else decoded.icc
    decoded.icc = icc
    if decoded.frames is not None and len(decoded.frames) > 1:
        fmt = "PNG" if decoded.source_format == "PNG" else "WEBP"
        data = _encode_animation(decoded, fmt, quality)
    else:
        fmt = _target_format(decoded.source_format, alpha)
        data = _encode(image, fmt, quality, icc)
    ext, mime = _OUTPUT[fmt]
    return _result(
        data, mime, ext, decoded, reencoded=True, boxes=boxes, quality=quality, formats=formats
    )


def _encode_animation(decoded: _Decoded, fmt: str, quality: int) -> bytes:
    assert decoded.frames is not None
    frames = [_web_image(frame, decoded.icc)[0].convert("RGBA") for frame in decoded.frames]
    buf = io.BytesIO()
    params: dict[str, Any] = {"save_all": True, "append_images": frames[1:]}
    if decoded.durations:
        params["duration"] = decoded.durations
    if decoded.loop is not None:
        params["loop"] = decoded.loop
    if fmt == "WEBP":
        frames[0].save(buf, "WEBP", quality=quality, method=4, **params)
    else:
        frames[0].save(buf, "PNG", **params)
    return buf.getvalue()


def _fit(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with the aspect of width x height that fits inside ``box``."""
    box_w, box_h = box
    if width * box_h >= height * box_w:  # limited by width
        return box_w, max(1, min(box_h, round(height * box_w / width)))
    return max(1, min(box_w, round(width * box_h / height))), box_h


def _make_variants(
    decoded: _Decoded,
    boxes: Mapping[str, tuple[int, int]],
    quality: int,
    formats: Mapping[str, tuple[str, int]],
) -> list[Variant]:
    needed = {
        name: box
        for name, box in boxes.items()
        if decoded.width > box[0] or decoded.height > box[1]
    }
    if not needed:
        return []
    source, alpha = _web_image(decoded.image, decoded.icc)
    fmt = "WEBP" if alpha else "JPEG"
    ext_mime = _OUTPUT[fmt][1]
    icc = None if _icc_colour_space(decoded.icc or b"") == b"CMYK" else decoded.icc
    made: dict[str, Variant] = {}
    # Largest box first; each smaller one is resized from the smallest earlier result that
    # is still at least twice its size (cheaper, and reducing_gap keeps quality).
    order = sorted(needed, key=lambda n: needed[n][0] * needed[n][1], reverse=True)
    ladder: list[Image.Image] = [source]
    for name in order:
        size = _fit(decoded.width, decoded.height, needed[name])
        base = source
        for candidate in ladder:
            if candidate.width >= 2 * size[0] and candidate.height >= 2 * size[1]:
                base = candidate
        resized = base.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        ladder.append(resized)
        if name in formats:  # WebP/AVIF/JPEG as NUKE_IMAGE_VARIANTS asked (nuke_crawl.variants)
            from nuke_crawl.variants import encode_variant  # late: variants imports us

            own_fmt, own_quality = formats[name]
            data, mime = encode_variant(resized, own_fmt, own_quality, icc)
            made[name] = Variant(name, data, size[0], size[1], mime)
            continue
        made[name] = Variant(name, _encode(resized, fmt, quality, icc), size[0], size[1], ext_mime)
    return [made[name] for name in boxes if name in made]


def _result(
    data: bytes,
    mime: str,
    ext: str,
    decoded: _Decoded,
    *,
    reencoded: bool,
    boxes: Mapping[str, tuple[int, int]],
    quality: int,
    formats: Mapping[str, tuple[str, int]],
) -> ProcessedImage:
    return ProcessedImage(
        data=data,
        mime_type=mime,
        extension=ext,
        width=decoded.width,
        height=decoded.height,
        sha256=hashlib.sha256(data).hexdigest(),
        source_format=decoded.source_format,
        reencoded=reencoded,
        variants=_make_variants(decoded, boxes, quality, formats),
    )


# ------------------------------------------------------------------------------ optional


@functools.lru_cache(maxsize=1)
def _pillow_heif() -> Any:
    """The pillow_heif module, or None. Used directly: never registered as a Pillow plugin."""
    try:
        import pillow_heif
    except ImportError:
        return None
    return pillow_heif
