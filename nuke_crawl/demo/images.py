"""Deterministic vehicle photos and an image host full of edge cases.

Photos are drawn once per ``(width, height, quality, variant)`` into a pool of
:data:`POOL_SIZE` JPEGs (sky, ground, a car-ish shape, grain: 130-270 KB at
1600x1200, about 65 ms each to make) and URLs are mapped onto the pool by a hash
of their key, so serving 100,000 distinct URLs costs 50 encodes. The same key
always gives the same bytes. With ``unique=True`` a JPEG comment segment
holding the key is inserted right after SOI, so every key also gets distinct
bytes (and a distinct sha256) while staying a valid JPEG with the same pixels;
without it, two keys that land on the same variant are "the same content twice".
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageDraw

from nuke_crawl.demo.server import Request, Response

__all__ = [
    "EDGE_CASES",
    "POOL_SIZE",
    "HitCounter",
    "ImageHost",
    "edge_image",
    "image_bytes",
    "image_variant",
    "warm_pool",
]

POOL_SIZE = 50

_pool: dict[tuple[int, int, int, int], bytes] = {}
_pool_lock = threading.Lock()
_generating: dict[tuple[int, int, int, int], threading.Lock] = {}


def image_variant(key: str) -> int:
    """The pool slot a key maps to (stable across runs and processes)."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % POOL_SIZE


def _render(width: int, height: int, variant: int) -> Image.Image:
    """Draw one photo-like RGB picture: sky and ground gradients, a car-shaped
    body with wheels, and grain (the grain is what gives JPEGs their weight)."""
    rng = np.random.default_rng(0xCA5 + variant)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    sky_top = rng.uniform(60, 200, 3)
    sky_bottom = rng.uniform(150, 255, 3)
    ground = rng.uniform(40, 160, 3)
    horizon = float(rng.uniform(0.45, 0.65))
    waviness = float(rng.uniform(5, 30))
    pixels = np.empty((height, width, 3), np.float32)
    for c in range(3):
        sky = sky_top[c] + (sky_bottom[c] - sky_top[c]) * (ys / horizon) + 0 * xs
        land = ground[c] * (0.7 + 0.5 * (ys - horizon)) + 10 * np.sin(xs * waviness + c)
        pixels[:, :, c] = np.where(ys < horizon, sky, land)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    paint = tuple(int(v) for v in rng.integers(0, 255, 3))
    cx = int(width * rng.uniform(0.35, 0.65))
    cy = int(height * (horizon + 0.1))
    bw, bh = int(width * 0.55), max(4, int(height * 0.18))
    draw.rounded_rectangle(
        [cx - bw // 2, cy - bh // 2, cx + bw // 2, cy + bh // 2], radius=bh // 3, fill=paint
    )
    cabin = tuple(int(v * 0.75) for v in paint)
    draw.rounded_rectangle(
        [cx - bw // 4, cy - bh, cx + bw // 5, cy - bh // 2 + 5], radius=bh // 4, fill=cabin
    )
    for wx in (cx - bw // 3, cx + bw // 3):
        r = bh // 2
        draw.ellipse([wx - r, cy + bh // 2 - r, wx + r, cy + bh // 2 + r], fill=(20, 20, 20))
        r2 = r // 2
        draw.ellipse([wx - r2, cy + bh // 2 - r2, wx + r2, cy + bh // 2 + r2], fill=(165, 165, 170))
    sigma = float(rng.uniform(1.5, 4.0))
    grain = rng.normal(0, sigma, ((height + 1) // 2, (width + 1) // 2, 1)).astype(np.int16)
    grain = np.repeat(np.repeat(grain, 2, 0), 2, 1)[:height, :width]
    noisy = np.clip(np.asarray(image).astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


def _pool_jpeg(width: int, height: int, quality: int, variant: int) -> bytes:
    """The cached JPEG of one pool slot; generated once, thread-safely."""
    slot = (width, height, quality, variant)
    cached = _pool.get(slot)
    if cached is not None:
        return cached
    with _pool_lock:
        slot_lock = _generating.setdefault(slot, threading.Lock())
    with slot_lock:
        cached = _pool.get(slot)
        if cached is None:
            buffer = io.BytesIO()
            _render(width, height, variant).save(buffer, "JPEG", quality=quality)
            cached = buffer.getvalue()
            _pool[slot] = cached
    return cached


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """``jpeg`` with a COM segment holding ``text`` right after SOI."""
    payload = text.encode("utf-8")[:65000]
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def image_bytes(
    key: str,
    *,
    width: int = 1600,
    height: int = 1200,
    quality: int = 85,
    unique: bool = False,
) -> bytes:
    """A deterministic JPEG for ``key``: the same key always gives the same bytes.

    Without ``unique``, keys share a pool of :data:`POOL_SIZE` pictures; with
    it, the key is written into a JPEG comment so every key's bytes differ.
    """
    jpeg = _pool_jpeg(width, height, quality, image_variant(key))
    return _with_comment(jpeg, f"nuke-demo:{key}") if unique else jpeg


def warm_pool(width: int = 1600, height: int = 1200, quality: int = 85) -> None:
    """Generate every pool picture of a size now (about 4 s for 1600x1200),
    so a benchmark does not time the first encodes."""
    for variant in range(POOL_SIZE):
        _pool_jpeg(width, height, quality, variant)


# --- edge cases -------------------------------------------------------------

_PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
    b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

_HTML_BODY = (
    b"<!DOCTYPE html><html><head><title>Access denied</title></head>"
    b"<body><h1>Access denied</h1><p>Please enable cookies.</p></body></html>\n"
)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _bomb_png(side: int = 30000) -> bytes:
    """A complete, valid 1-bit PNG of ``side`` x ``side`` zeros: ~100 KB on the
    wire, 900 megapixels declared (Pillow refuses it as a decompression bomb)."""
    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    chunks.append(compressor.compress(row * (side % 1000)))
    chunks.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(chunks))
        + _png_chunk(b"IEND", b"")
    )


def _png_alpha() -> bytes:
    base = _render(800, 600, 7).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 800, dtype=np.uint8)[None, :], (600, 1))
    base.putalpha(Image.fromarray(alpha))
    return _encode(base, "PNG")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return _encode(_render(1600, 1200, 11), "JPEG", quality=85, exif=exif.tobytes())


def _truncated() -> bytes:
    whole = _pool_jpeg(1600, 1200, 85, 13)
    return whole[: len(whole) * 6 // 10]


_EDGE_BUILDERS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "png-alpha.png": ("image/png", _png_alpha),
    "webp.webp": ("image/webp", lambda: _encode(_render(1200, 900, 3), "WEBP", quality=80)),
    "gif.gif": (
        "image/gif",
        lambda: _encode(_render(640, 480, 5).convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
    ),
    "avif.avif": ("image/avif", lambda: _encode(_render(800, 600, 9), "AVIF", quality=60)),
    "cmyk.jpg": (
        "image/jpeg",
        lambda: _encode(_render(1200, 900, 17).convert("CMYK"), "JPEG", quality=85),
    ),
    "exif-rotated.jpg": ("image/jpeg", _exif_rotated),
    "truncated.jpg": ("image/jpeg", _truncated),
    "html.jpg": ("image/jpeg", lambda: _HTML_BODY),
    "empty.jpg": ("image/jpeg", lambda: b""),
    "bomb.png": ("image/png", _bomb_png),
    "pixel.gif": ("image/gif", lambda: _PIXEL_GIF),
    "same-a.jpg": ("image/jpeg", lambda: image_bytes("same-content")),
    "same-b.jpg": ("image/jpeg", lambda: image_bytes("same-content")),
}

#: Every path name under ``/edge/`` and what it does.
EDGE_CASES: dict[str, str] = {
    "png-alpha.png": "200 PNG with an alpha channel",
    "webp.webp": "200 WebP",
    "gif.gif": "200 GIF (palette)",
    "avif.avif": "200 AVIF",
    "cmyk.jpg": "200 CMYK JPEG",
    "exif-rotated.jpg": "200 JPEG stored 1600x1200 with EXIF orientation 6",
    "truncated.jpg": "200 JPEG cut at 60%",
    "html.jpg": "200 HTML body served as image/jpeg",
    "empty.jpg": "200 with an empty body",
    "bomb.png": "200 small PNG declaring 30000x30000 pixels",
    "pixel.gif": "200 1x1 GIF",
    "404.jpg": "404",
    "410.jpg": "410",
    "flaky-500.jpg": "500 on the first request to this host, then 200 JPEG",
    "rate-limited.jpg": "429 with Retry-After: 1 on the first request, then 200 JPEG",
    "slow.jpg": "200 JPEG after ImageHost.slow_seconds",
    "redirect.jpg": "302 -> /edge/redirect-hop.jpg 302 -> /img/redirect-final.jpg",
    "redirect-hop.jpg": "302 -> /img/redirect-final.jpg",
    "hotlink.jpg": "403 unless the Referer starts with ImageHost.hotlink_referer",
    "same-a.jpg": "200 JPEG, bytes identical to same-b.jpg",
    "same-b.jpg": "200 JPEG, bytes identical to same-a.jpg",
}


@functools.cache
def edge_image(name: str) -> tuple[str, bytes]:
    """``(content_type, body)`` of a static edge case under ``/edge/``."""
    content_type, build = _EDGE_BUILDERS[name]
    return content_type, build()


class HitCounter(Counter[str]):
    """A Counter of requests per path whose increments are thread-safe
    (reads are plain dict reads; missing paths read as 0)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def hit(self, path: str) -> int:
        """Count one request for ``path``; return its new count."""
        with self._lock:
            self[path] += 1
            return self[path]

    def total(self) -> int:
        """All requests counted so far."""
        with self._lock:
            return sum(self.values())


_IMG_RE = re.compile(r"^/img/(?:(?P<w>\d{1,4})x(?P<h>\d{1,4})/)?(?P<key>[^/]+)\.jpe?g$")


class ImageHost:
    """An app serving photos at ``/img/<key>.jpg`` (optionally
    ``/img/<w>x<h>/<key>.jpg``) and the cases of :data:`EDGE_CASES` at
    ``/edge/<name>``. Query strings are ignored (``?w=800`` serves the original).

    - ``unique_bytes`` (default True): every key gets distinct bytes (see
      :func:`image_bytes`); False maps keys onto the shared pool.
    - ``slow_seconds`` (default 5.0): how long ``/edge/slow.jpg`` waits.
    - ``hotlink_referer`` (default None): the prefix a Referer needs for
      ``/edge/hotlink.jpg``; None accepts any non-empty Referer.

    ``hits[path]`` counts every request per path (query string stripped),
    including HEADs and failures; "first time" behaviours count per instance.
    """

    def __init__(
        self,
        *,
        unique_bytes: bool = True,
        slow_seconds: float = 5.0,
        hotlink_referer: str | None = None,
        width: int = 1600,
        height: int = 1200,
        quality: int = 85,
    ) -> None:
        self.unique_bytes = unique_bytes
        self.slow_seconds = slow_seconds
        self.hotlink_referer = hotlink_referer
        self.width = width
        self.height = height
        self.quality = quality
        self.hits = HitCounter()
        self.url: str | None = None

    def bind(self, url: str) -> None:
        """Remember the URL the host is served at (called by ``serve``)."""
        self.url = url

    def photo(self, key: str, width: int | None = None, height: int | None = None) -> bytes:
        """The bytes ``/img/<key>.jpg`` serves."""
        return image_bytes(
            key,
            width=width or self.width,
            height=height or self.height,
            quality=self.quality,
            unique=self.unique_bytes,
        )

    def _jpeg(self, key: str, width: int | None = None, height: int | None = None) -> Response:
        return Response(
            content_type="image/jpeg",
            body=self.photo(key, width, height),
            headers={"Cache-Control": "public, max-age=86400"},
        )

    def __call__(self, request: Request) -> Response:
        path = urlsplit(request.target).path
        count = self.hits.hit(path)
        match = _IMG_RE.match(path)
        if match:
            w, h = match["w"], match["h"]
            if w and h and not (16 <= int(w) <= 4000 and 16 <= int(h) <= 4000):
                return _not_found()
            return self._jpeg(match["key"], int(w) if w else None, int(h) if h else None)
        if path.startswith("/edge/"):
            return self._edge(path[len("/edge/") :], count, request)
        if path == "/robots.txt":
            return Response(content_type="text/plain", body=b"User-agent: *\nAllow: /\n")
        return _not_found()

    def _edge(self, name: str, count: int, request: Request) -> Response:
        if name in _EDGE_BUILDERS:
            content_type, body = edge_image(name)
            return Response(content_type=content_type, body=body)
        if name in ("404.jpg", "410.jpg"):
            return Response(status=int(name[:3]), content_type="text/html", body=b"Gone\n")
        if name == "flaky-500.jpg":
            if count == 1:
                return Response(status=500, content_type="text/html", body=b"Server error\n")
            return self._jpeg("edge-flaky")
        if name == "rate-limited.jpg":
            if count == 1:
                return Response(
                    status=429,
                    content_type="text/plain",
                    body=b"Too many requests\n",
                    headers={"Retry-After": "1"},
                )
            return self._jpeg("edge-rate-limited")
        if name == "slow.jpg":
            response = self._jpeg("edge-slow")
            response.delay = self.slow_seconds
            return response
        if name == "redirect.jpg":
            return _redirect(request, "/edge/redirect-hop.jpg")
        if name == "redirect-hop.jpg":
            return _redirect(request, "/img/redirect-final.jpg")
        if name == "hotlink.jpg":
            referer = request.header("Referer")
            allowed = (
                referer.startswith(self.hotlink_referer) if self.hotlink_referer else bool(referer)
            )
            if not allowed:
                return Response(status=403, content_type="text/html", body=b"Hotlinking denied\n")
            return self._jpeg("edge-hotlink")
        return _not_found()


def _redirect(request: Request, path: str) -> Response:
    host = request.header("Host")
    location = f"http://{host}{path}" if host else path
    return Response(
        status=302, content_type="text/html", body=b"Moved\n", headers={"Location": location}
    )


def _not_found() -> Response:
    return Response(status=404, content_type="text/html; charset=utf-8", body=b"Not found\n")
