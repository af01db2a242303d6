"""Local image analysis: quality measures, dominant colours, a perceptual hash, flags.

Always available (Pillow and NumPy only, no network, no credentials) and cheap enough to
run on every image: 10-15 ms for a 1600x1200 JPEG, because JPEGs are decoded at a
reduced DCT scale (``Image.draft``) straight to the working size (a PNG, whose decode
cannot be scaled, takes ~60 ms). Pure and thread-safe: call :func:`analyze_local` from a
worker thread (``asyncio.to_thread``), never on the reactor thread.

Every measure is taken on a *working copy*: the image converted to RGB and shrunk so
that its longer side is at most :data:`WORK_SIZE` pixels (never enlarged). The numbers
therefore do not depend on the original resolution, and the thresholds below are
calibrated for that size.

Measures (in ``ProviderResult.data``)
-------------------------------------
``width``/``height``
    Of the original image (after no orientation change: EXIF is ignored here).
``sharpness``
    Variance of the 4-neighbour Laplacian of the grey working copy. Depends on content
    and contrast as much as on focus: a sharp photo of a grey wall scores low too.
``exposure``
    ``mean`` luminance (0-255), ``dark_fraction`` (pixels <= :data:`CLIP_DARK`) and
    ``bright_fraction`` (pixels >= :data:`CLIP_BRIGHT`), ``contrast`` (std of luminance).
``entropy``
    Shannon entropy (bits, 0-8) of the 256-bin grey histogram.
``dominant_colors``
    Up to 3 ``{"hex", "rgb", "share"}``: pixels are quantized to a 4x4x4 palette (64
    bins), the three fullest bins win and report the mean colour of their pixels.
``dhash``/``dhash_hex``
    64-bit difference hash (``int``, and 16 hex digits): the grey image reduced to 9x8 by
    area averaging; bit ``r*8+c`` (most significant first) is set when pixel ``(r, c)`` is
    brighter than its right neighbour. Resizing, re-encoding and mild colour changes move
    it by a few bits; a different photo differs by ~32 bits.

Flags (``data["flags"]``) and the ``issue`` tags they produce
-------------------------------------------------------------
``blurry``
    ``sharpness < BLURRY_THRESHOLD`` (not raised for placeholders, which are flat by
    nature, nor for frames with almost no contrast).
``too_dark`` / ``too_bright``
    Mean luminance below :data:`DARK_MEAN` (or more than :data:`CLIPPED_FRACTION` of the
    pixels crushed to black) / above :data:`BRIGHT_MEAN` (or that much blown to white).
``placeholder``
    A "no image" stand-in: the grey level barely varies (std < :data:`FLAT_STD`), or
    the histogram entropy is below :data:`PLACEHOLDER_ENTROPY`, or one palette colour
    covers at least :data:`PLACEHOLDER_SHARE` of the image while entropy stays below
    :data:`PLACEHOLDER_TEXT_ENTROPY` (flat backgrounds with a little text or an icon,
    e.g. "No Image Available" art).
``near_duplicate_of``
    Ids from ``other_hashes`` whose hash is within :data:`DUPLICATE_MAX_DISTANCE` bits.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .results import ImageTag, ProviderResult

logger = logging.getLogger(__name__)

PROVIDER = "local"

WORK_SIZE = 512
"""Longest side (px) of the working copy every measure is taken on."""

BLURRY_THRESHOLD = 60.0
"""Laplacian variance (working copy, 0-255 grey) under which an image is ``blurry``.

Sharp photographs of cars measure in the hundreds to thousands at this size; the same
photos under a 3-4 px Gaussian blur fall to 5-40. Deliberately conservative: soft but
usable photos should not be flagged."""

MIN_CONTRAST_FOR_BLUR = 8.0
"""Below this grey std the image is too flat to judge focus (no ``blurry`` flag)."""

DARK_MEAN = 40.0
"""Mean luminance (0-255) under which an image is ``too_dark``."""

BRIGHT_MEAN = 225.0
"""Mean luminance (0-255) above which an image is ``too_bright``."""

CLIP_DARK = 10
"""Grey level at or below which a pixel counts as crushed to black."""

CLIP_BRIGHT = 245
"""Grey level at or above which a pixel counts as blown to white."""

CLIPPED_FRACTION = 0.6
"""Share of crushed (blown) pixels that makes an image ``too_dark`` (``too_bright``)."""

FLAT_STD = 3.0
"""Grey std under which an image is a single colour (``placeholder``)."""

PLACEHOLDER_ENTROPY = 1.5
"""Grey-histogram entropy (bits) under which an image is a ``placeholder``."""

PLACEHOLDER_SHARE = 0.85
"""Share of the dominant palette colour from which a low-entropy image is a placeholder."""

PLACEHOLDER_TEXT_ENTROPY = 3.0
"""Entropy limit (bits) that goes with :data:`PLACEHOLDER_SHARE`."""

DUPLICATE_MAX_DISTANCE = 6
"""Largest Hamming distance (of 64 bits) between dHashes of near-duplicates."""

_LEVELS = 4  # palette levels per channel (4**3 = 64 colours)


def analyze_local(
    data: bytes, *, other_hashes: Mapping[str, int | str] | None = None
) -> ProviderResult:
    """Measure one image's quality and fingerprint it; never raises for bad bytes.

    ``other_hashes`` maps image ids of the same vehicle to their ``dhash`` (int, or the
    16-digit hex form) to find near-duplicates. Undecodable bytes give ``ok=False`` with
    reason ``invalid_image``.
    """
    started = time.perf_counter()
    try:
        rgb, width, height = _load_working_copy(data)
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as exc:
        return ProviderResult.failure(
            PROVIDER,
            "invalid_image",
            f"{type(exc).__name__}: {exc}",
            elapsed_s=time.perf_counter() - started,
        )

    pixels = np.asarray(rgb, dtype=np.uint8)
    grey_img = rgb.convert("L")
    grey = np.asarray(grey_img, dtype=np.float32)

    sharpness = _laplacian_variance(grey)
    hist = np.bincount(grey.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    total = float(hist.sum())
    probs = hist[hist > 0] / total
    entropy = float(-(probs * np.log2(probs)).sum())
    mean = float(grey.mean())
    contrast = float(grey.std())
    dark_fraction = float(hist[: CLIP_DARK + 1].sum() / total)
    bright_fraction = float(hist[CLIP_BRIGHT:].sum() / total)
    colors = _dominant_colors(pixels)
    dhash = _dhash(grey_img)

    placeholder = (
        contrast < FLAT_STD
        or entropy < PLACEHOLDER_ENTROPY
        or (
            bool(colors)
            and colors[0]["share"] >= PLACEHOLDER_SHARE
            and entropy < PLACEHOLDER_TEXT_ENTROPY
        )
    )
    too_dark = mean < DARK_MEAN or dark_fraction > CLIPPED_FRACTION
    too_bright = mean > BRIGHT_MEAN or bright_fraction > CLIPPED_FRACTION
    blurry = not placeholder and contrast >= MIN_CONTRAST_FOR_BLUR and sharpness < BLURRY_THRESHOLD
    duplicates = _near_duplicates(dhash, other_hashes or {})

    flags: dict[str, Any] = {
        "blurry": blurry,
        "too_dark": too_dark,
        "too_bright": too_bright,
        "placeholder": placeholder,
        "near_duplicate_of": [image_id for image_id, _ in duplicates],
    }
    measures = {
        "sharpness": sharpness,
        "contrast": contrast,
        "mean": mean,
        "entropy": entropy,
        "dark_fraction": dark_fraction,
        "bright_fraction": bright_fraction,
    }
    tags = _issue_tags(flags, measures, duplicates)
    result_data: dict[str, Any] = {
        "width": width,
        "height": height,
        "sharpness": round(sharpness, 2),
        "exposure": {
            "mean": round(mean, 2),
            "contrast": round(contrast, 2),
            "dark_fraction": round(dark_fraction, 4),
            "bright_fraction": round(bright_fraction, 4),
        },
        "entropy": round(entropy, 3),
        "dominant_colors": colors,
        "dhash": dhash,
        "dhash_hex": f"{dhash:016x}",
        "flags": flags,
        "duplicate_distances": {image_id: dist for image_id, dist in duplicates},
    }
    return ProviderResult(
        provider=PROVIDER,
        ok=True,
        model="local-v1",
        data=result_data,
        tags=tags,
        cost_usd=0.0,
        elapsed_s=time.perf_counter() - started,
    )


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return ((a ^ b) & 0xFFFF_FFFF_FFFF_FFFF).bit_count()


def parse_hash(value: int | str) -> int:
    """A dHash given as int (signed or unsigned 64-bit) or as hex text, as unsigned int."""
    if isinstance(value, str):
        return int(value, 16) & 0xFFFF_FFFF_FFFF_FFFF
    return int(value) & 0xFFFF_FFFF_FFFF_FFFF


def _load_working_copy(data: bytes) -> tuple[Image.Image, int, int]:
    """The image as RGB with its longer side <= WORK_SIZE, plus the original size."""
    if not data:
        raise ValueError("empty body")
    img: Image.Image = Image.open(io.BytesIO(data))
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ValueError(f"bad size {width}x{height}")
    if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
        # DCT scaling: decode at 1/2, 1/4 or 1/8 size, never below the working size
        img.draft("RGB", (WORK_SIZE, WORK_SIZE))
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # transparent regions count as white, the way a listing page shows them
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB")
    if max(img.size) > WORK_SIZE:
        img.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return img, width, height


def _laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (0 for images under 3x3)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = (
        grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    )
    return float(lap.var())


def _dominant_colors(pixels: np.ndarray, top: int = 3) -> list[dict[str, Any]]:
    """Top colours of a 64-colour palette with their share of the image."""
    flat = pixels.reshape(-1, 3)
    if len(flat) > 65536:
        flat = flat[:: len(flat) // 65536 + 1]
    q = (flat >> 6).astype(np.int32)  # 256 / _LEVELS = 64 -> shift by 6
    bins = q[:, 0] * _LEVELS * _LEVELS + q[:, 1] * _LEVELS + q[:, 2]
    counts = np.bincount(bins, minlength=_LEVELS**3)
    sums = np.stack(
        [np.bincount(bins, weights=flat[:, ch], minlength=_LEVELS**3) for ch in range(3)],
        axis=1,
    )
    order = np.argsort(counts)[::-1][:top]
    n = float(len(flat))
    out: list[dict[str, Any]] = []
    for b in order:
        c = int(counts[b])
        if c == 0:
            break
        r, g, bl = (round(float(v)) for v in sums[b] / c)
        out.append({"hex": f"#{r:02x}{g:02x}{bl:02x}", "rgb": [r, g, bl], "share": round(c / n, 4)})
    return out


def _dhash(grey: Image.Image) -> int:
    """64-bit difference hash of a grey image (see the module docstring)."""
    small = np.asarray(grey.resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (small[:, :-1] > small[:, 1:]).ravel()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def _near_duplicates(dhash: int, others: Mapping[str, int | str]) -> list[tuple[str, int]]:
    """``(image_id, distance)`` of hashes within DUPLICATE_MAX_DISTANCE, closest first."""
    found: list[tuple[str, int]] = []
    for image_id, other in others.items():
        try:
            dist = hamming(dhash, parse_hash(other))
        except (TypeError, ValueError):
            logger.debug("ignoring unparsable hash %r for image %s", other, image_id)
            continue
        if dist <= DUPLICATE_MAX_DISTANCE:
            found.append((str(image_id), dist))
    found.sort(key=lambda pair: (pair[1], pair[0]))
    return found


def _issue_tags(
    flags: Mapping[str, Any], measures: Mapping[str, float], duplicates: list[tuple[str, int]]
) -> list[ImageTag]:
    """``issue`` tags for the raised flags, with the measure that raised them."""
    tags: list[ImageTag] = []
    if flags["blurry"]:
        tags.append(
            ImageTag(
                "blurry",
                "issue",
                _confidence_below(measures["sharpness"], BLURRY_THRESHOLD),
                ai_detection_data={
                    "source": PROVIDER,
                    "sharpness": round(measures["sharpness"], 2),
                    "threshold": BLURRY_THRESHOLD,
                },
            )
        )
    if flags["too_dark"]:
        tags.append(
            ImageTag(
                "too_dark",
                "issue",
                90.0,
                ai_detection_data={
                    "source": PROVIDER,
                    "mean": round(measures["mean"], 2),
                    "dark_fraction": round(measures["dark_fraction"], 4),
                },
            )
        )
    if flags["too_bright"]:
        tags.append(
            ImageTag(
                "too_bright",
                "issue",
                90.0,
                ai_detection_data={
                    "source": PROVIDER,
                    "mean": round(measures["mean"], 2),
                    "bright_fraction": round(measures["bright_fraction"], 4),
                },
            )
        )
    if flags["placeholder"]:
        tags.append(
            ImageTag(
                "placeholder",
                "issue",
                85.0,
                ai_detection_data={
                    "source": PROVIDER,
                    "entropy": round(measures["entropy"], 3),
                    "contrast": round(measures["contrast"], 2),
                },
            )
        )
    if duplicates:
        closest_id, closest = duplicates[0]
        tags.append(
            ImageTag(
                "near_duplicate",
                "issue",
                100.0 - 100.0 * closest / (2 * (DUPLICATE_MAX_DISTANCE + 1)),
                ai_detection_data={
                    "source": PROVIDER,
                    "of": [i for i, _ in duplicates],
                    "closest": closest_id,
                    "distance": closest,
                },
            )
        )
    return tags


def _confidence_below(value: float, threshold: float) -> float:
    """50 at the threshold, rising towards 100 as ``value`` falls to 0."""
    if threshold <= 0:
        return 50.0
    return 50.0 + 50.0 * max(0.0, min(1.0, (threshold - value) / threshold))


class LocalProvider:
    """:func:`analyze_local` behind the :class:`~nuke_crawl.analysis.registry.Provider`
    protocol: always configured, run first, in a thread. ``context["other_hashes"]``
    (the vehicle's other images' perceptual hashes) flags near-duplicates."""

    name = PROVIDER
    remote = False
    optional = False
    in_progress_factor = 1
    missing = ""

    @classmethod
    def from_settings(cls, settings: Any) -> LocalProvider:
        return cls()

    def configured(self) -> bool:
        return True

    async def check(self) -> tuple[bool, str]:
        """Analyse a generated image: proves Pillow and NumPy work here."""
        from .registry import probe_image

        result = await asyncio.to_thread(analyze_local, probe_image())
        if result.ok:
            return True, "ok: Pillow/NumPy analysis works"
        return False, f"{result.error_reason}: {result.error_detail}"

    async def analyze(
        self, image: bytes, mime_type: str, *, context: Mapping[str, Any] | None = None
    ) -> ProviderResult:
        others = (context or {}).get("other_hashes") or {}
        return await asyncio.to_thread(analyze_local, image, other_hashes=dict(others))

    async def aclose(self) -> None:
        """Nothing to release."""
