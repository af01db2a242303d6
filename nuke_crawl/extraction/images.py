"""Image URL clean-up (``clean_image_urls``) and gallery candidate collection."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from lxml.html import HtmlElement

_RESIZE_PARAMS = frozenset(
    {
        "w",
        "h",
        "width",
        "height",
        "resize",
        "fit",
        "quality",
        "q",
        "crop",
        "dpr",
        "auto",
        "fm",
        "format",
        "impolicy",
        "imdensity",
        "sharpen",
        "sharp",
        "bg",
        "size",
        "maxwidth",
        "maxheight",
        "max_width",
        "max_height",
        "mw",
        "mh",
        "scale",
        "thumbnail",
        "thumb",
        "strip",
        "rect",
        "ar",
        "cs",
        "ixlib",
        "compress",
        "mode",
        "rw",
        "rh",
        "sw",
        "sh",
        "fit-in",
        "resizemode",
        "imwidth",
        "imheight",
        "downsize",
        "output-quality",
        "output-format",
        "aspect_ratio",
        "optimize",
        "version",
        "v",
    }
)
_CF_RESIZE = re.compile(r"/cdn-cgi/image/[^/]+/")
_WP_SIZE = re.compile(
    r"-(?:\d{2,5}x\d{2,5}|scaled|rotated)(?=\.(?:jpe?g|png|webp|gif|avif)$)", re.I
)
_CL_SIZE = re.compile(r"_(?:\d{2,4}x\d{2,4}c?)(?=\.jpg$)", re.I)
_DROP_HOST = re.compile(
    r"(facebook\.com|facebook\.net|fbcdn\.net/safe_image|doubleclick\.net|google-analytics\.com|"
    r"googletagmanager\.com|googleadservices\.com|googlesyndication\.com|bat\.bing\.com|"
    r"ytimg\.com|img\.youtube\.com|vimeocdn\.com|gravatar\.com|twitter-badges|analytics\.|"
    r"pixel\.|scorecardresearch\.com|quantserve\.com|adsrvr\.org|addthis\.com|sharethis\.com|"
    r"maps\.googleapis\.com|maps\.gstatic\.com|carfax\.com|autocheck\.com)",
    re.I,
)
# whole words of the path (split on non-alphanumerics) that mark non-photos
_DROP_WORDS = frozenset(
    [
        "logo",
        "logos",
        "icon",
        "icons",
        "favicon",
        "favicons",
        "sprite",
        "sprites",
        "banner",
        "banners",
        "promo",
        "promos",
        "badge",
        "badges",
        "placeholder",
        "placeholders",
        "avatar",
        "avatars",
        "spinner",
        "loader",
        "loading",
        "spacer",
        "blank",
        "transparent",
        "clear",
        "pixel",
        "pixels",
        "tracking",
        "beacon",
        "watermark",
        "flag",
        "flags",
        "emoji",
        "arrow",
        "arrows",
        "button",
        "buttons",
        "btn",
        "social",
        "facebook",
        "twitter",
        "instagram",
        "youtube",
        "pinterest",
        "linkedin",
        "tiktok",
        "carfax",
        "autocheck",
        "dealerrater",
        "rating",
        "ratings",
        "map",
        "maps",
        "1x1",
        "noimage",
        "nophoto",
        "nopic",
        "comingsoon",
        "themes",
        "theme",
        "skins",
        "skin",
        "fonts",
        "font",
        "emoticons",
    ]
)
# substrings of the lowercased path that mark placeholders and theme assets
_DROP_SUBSTRINGS = (
    "no-image",
    "no_image",
    "no-photo",
    "no_photo",
    "no-pic",
    "image-coming",
    "image_coming",
    "photo-coming",
    "photo_coming",
    "coming-soon",
    "coming_soon",
    "photos-soon",
    "photo-soon",
    "image-not",
    "image_not",
    "photo-not",
    "image-unavailable",
    "photo-unavailable",
    "awaiting-image",
    "awaiting-photo",
    "default-image",
    "default_image",
    "default-photo",
    "default-car",
    "default-vehicle",
    "stock-ph",
    "stock_ph",
    "_ph.",
    "oem_vin_stock",
    "oem-vin-stock",
    "/wp-includes/",
    "/wp-content/themes/",
    "/wp-content/plugins/",
    "findusonfacebook",
    "star-rating",
    "dealer-rater",
)
_DROP_SUBSTRING = re.compile("|".join(re.escape(sub) for sub in _DROP_SUBSTRINGS))
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_LOCAL_ASSET_PATH = re.compile(
    r"/(assets|static|content/images|images/site|img/site|common|global|layout|ui|design)/", re.I
)
_IMAGE_LIKE = re.compile(r"\.(jpe?g|png|webp|gif|avif|bmp|tiff?)(?:$|[?#])", re.I)
_SIZE_TOKENS = {
    "thumb": 1,
    "thumbs": 1,
    "thumbnail": 1,
    "thumbnails": 1,
    "tn": 1,
    "xs": 1,
    "mini": 1,
    "small": 2,
    "sm": 2,
    "s": 2,
    "medium": 3,
    "med": 3,
    "md": 3,
    "m": 3,
    "normal": 3,
    "large": 5,
    "lg": 5,
    "l": 5,
    "big": 5,
    "large1": 6,
    "large2": 7,
    "xlarge": 8,
    "xl": 8,
    "xxl": 9,
    "hires": 9,
    "hi-res": 9,
    "full": 10,
    "fullsize": 10,
    "original": 11,
    "orig": 11,
}
_WXH = re.compile(r"^(\d{2,5})x(\d{2,5})c?$", re.I)
_FILE_SIZE_SUFFIX = re.compile(
    r"[-_](thumb|thumbnail|small|medium|large|xlarge|big|full|original)(?=\.[a-z0-9]+$)", re.I
)


def clean_image_urls(candidates: Iterable[str], base_url: str, max_images: int = 50) -> list[str]:
    """Clean and de-duplicate candidate image URLs for one vehicle.

    - decode HTML entities, make absolute against ``base_url``; keep http(s) only
      (``data:``, ``blob:``, ``javascript:`` dropped);
    - remove resizing parameters (``w``, ``h``, ``width``, ``height``, ``resize``,
      ``fit``, ``quality``, ``impolicy``...), Cloudflare ``/cdn-cgi/image/<opts>/``
      segments and WordPress ``-scaled`` / ``-1024x768`` suffixes to reach the original;
    - upgrade Craigslist ``_300x300.jpg``-style sizes to ``_1200x900.jpg``;
    - drop logos, icons, sprites, SVGs, tracking pixels (1x1, /pixel, facebook.com/tr,
      doubleclick...), theme assets (WordPress themes/plugins, the site's own /assets/ or
      /static/), promo banners, badges, placeholder "no image" / "coming soon" images,
      video thumbnails and social widgets;
    - de-duplicate after normalisation; size variants of one photo found in the page
      (``/large1/123.jpg`` and ``/96x72/123.jpg``, ``-1-medium.jpg`` and ``-1-large.jpg``)
      count once, as the largest variant seen;
    - keep page order, cap at ``max_images``.
    """
    base_host = (urlsplit(base_url).hostname or "").lower() if base_url else ""
    order: list[str] = []  # variant keys in first-seen order
    best: dict[str, tuple[int, str]] = {}
    # a page names most photos twice (structured data and gallery): normalise each once
    for raw in dict.fromkeys(candidates):
        normalised = _normalise(raw, base_url, base_host)
        if normalised is None:
            continue
        url, netloc, path, query = normalised
        key, rank = _variant_key(netloc, path, query)
        if key not in best:
            order.append(key)
            best[key] = (rank, url)
        elif rank > best[key][0]:
            best[key] = (rank, url)
    out: list[str] = []
    seen: set[str] = set()
    for key in order:
        url = best[key][1]
        if url not in seen:
            seen.add(url)
            out.append(url)
        if len(out) >= max_images:
            break
    return out


def _normalise(raw: str | None, base_url: str, base_host: str) -> tuple[str, str, str, str] | None:
    """The cleaned URL, with its host, path and query (for :func:`_variant_key`), or
    None when ``raw`` is no photo."""
    if not raw:
        return None
    s = str(raw)
    if "&" in s:
        s = html.unescape(s)
    s = s.strip().strip("'\"")
    if (
        not s
        or s.startswith(("data:", "blob:", "javascript:", "about:", "#"))
        or "{{" in s
        or "${" in s
    ):
        return None
    if s.startswith(("https://", "http://")) or not base_url:
        url = s  # already absolute: urljoin would return it as it is
    else:
        try:
            url = urljoin(base_url, s)
        except ValueError:
            return None
    split = _split_http(url)
    if split is None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        split = (parts.scheme, parts.netloc, parts.path, parts.query, parts.hostname.lower())
    scheme, netloc, path, raw_query, host = split
    if not host:
        return None
    low_path = path.lower()
    low_query = raw_query.lower()
    if low_path.endswith(".svg") or ".svg" in low_query or "format=svg" in low_query:
        return None
    if _dropped_host(host) or "/tr?" in url or low_path.endswith("/tr"):
        return None
    if _DROP_SUBSTRING.search(low_path):
        return None
    if not _DROP_WORDS.isdisjoint(_WORD_SPLIT.split(low_path)):
        return None
    if "generic-" in low_path and "oem" in low_path:
        return None
    if host == base_host and _LOCAL_ASSET_PATH.search(path):
        return None
    if "pixel" in (host + low_path).rsplit("/", 1)[-1]:
        return None
    if "/cdn-cgi/" in path:
        path = _CF_RESIZE.sub("/", path)
    if "-" in path:
        path = _WP_SIZE.sub("", path)
    if host.endswith("craigslist.org"):
        path = _CL_SIZE.sub("_1200x900", path)
    query = ""
    if raw_query:
        query_items = parse_qsl(raw_query, keep_blank_values=True)
        for k, v in query_items:
            if k.lower() in ("w", "h", "width", "height") and v.isdigit() and 0 < int(v) <= 2:
                return None  # a tracking pixel
        query = urlencode([(k, v) for k, v in query_items if k.lower() not in _RESIZE_PARAMS])
    netloc = netloc.lower()
    # urlunsplit's result for these parts (the path is empty or starts with "/")
    url = f"{scheme}://{netloc}{path}?{query}" if query else f"{scheme}://{netloc}{path}"
    return url, netloc, path, query


# An absolute http(s) URL with nothing for urlsplit to clean or check: no whitespace or
# control characters, no IPv6 brackets, ASCII only (see _split_http).
_PLAIN_HTTP_URL = re.compile(r"(https?)://([^/?#\[\]]*)((?:/[^?#]*)?)(?:\?([^#]*))?(?:#.*)?", re.S)


def _split_http(url: str) -> tuple[str, str, str, str, str] | None:
    """``urlsplit(url)``'s scheme, netloc, path and query, and its lowercased hostname,
    for the plain absolute URLs most photos have (about five times cheaper); None
    for anything else, which goes through ``urlsplit`` itself."""
    if not (url.isascii() and url.isprintable()) or " " in url:
        return None
    m = _PLAIN_HTTP_URL.fullmatch(url)
    if m is None:
        return None
    scheme, netloc, path, query = m.group(1, 2, 3, 4)
    host = netloc.rpartition("@")[2].partition(":")[0].lower()
    return scheme, netloc, path, query or "", host


@lru_cache(maxsize=4096)
def _dropped_host(host: str) -> bool:
    """Trackers, ad networks, social widgets, maps (a page's photos share a few hosts)."""
    return _DROP_HOST.search(host) is not None


def _variant_key(netloc: str, path: str, query: str) -> tuple[str, int]:
    """A key shared by the size variants of one photo, and the rank of this variant."""
    segments = path.split("/")
    rank = 0
    for i, seg in enumerate(segments[:-1]):
        low = seg.lower()
        m = _WXH.match(low)
        if m:
            segments[i] = "*"
            rank = max(rank, int(m.group(1)) * int(m.group(2)) // 1000)
        elif low in _SIZE_TOKENS:
            segments[i] = "*"
            rank = max(rank, _SIZE_TOKENS[low] * 100_000)
    name = segments[-1]
    m2 = _FILE_SIZE_SUFFIX.search(name)
    if m2:
        rank = max(rank, _SIZE_TOKENS[m2.group(1).lower()] * 100_000)
        name = name[: m2.start()] + "-*" + name[m2.end() :]
    segments[-1] = name
    return netloc + "/".join(segments) + "?" + query, rank


# --- collecting candidates from the DOM -----------------------------------------------------

_BG_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)", re.I)
_LAZY_ATTRS = (
    "data-src",
    "data-lazy-src",
    "data-original",
    "data-lazy",
    "data-full",
    "data-zoom-image",
    "data-large",
    "data-big",
    "data-rsbigimg",
    "data-image",
    "data-img",
    "data-background-image",
    "data-bg",
    "data-href",
)


def largest_srcset(srcset: str | None) -> str | None:
    """The largest candidate of a ``srcset`` (by ``w`` or ``x`` descriptor)."""
    if not srcset:
        return None
    best_url, best_size = None, -1.0
    for part in re.split(r",\s+(?=\S)", srcset.strip()):
        bits = part.strip().split()
        if not bits:
            continue
        size = 1.0
        if len(bits) > 1:
            d = bits[1].lower()
            try:
                size = float(d[:-1]) * (1 if d.endswith("w") else 1000) if d[-1] in "wx" else 1.0
            except ValueError:
                size = 1.0
        if size > best_size:
            best_url, best_size = bits[0], size
    return best_url


def image_candidates(root: HtmlElement, skip: set[HtmlElement] | None = None) -> list[str]:
    """Image URLs under ``root`` in document order: ``<a href>`` to an image file
    wrapping a thumbnail, ``data-*`` lazy attributes, the largest ``srcset`` candidate,
    ``src``, and CSS ``background-image`` in style attributes. Elements in ``skip``
    (pass every excluded element, descendants included) are ignored."""
    out: list[str] = []
    skip = skip or set()
    for el in root.iter("img", "a", "source", "div", "span", "li", "figure", "section"):
        if el in skip:
            continue
        items = el.items()  # one call for all of them; most elements have few
        if not items:
            continue
        attrs = dict(items)
        get = attrs.get
        tag = el.tag
        if tag == "a":
            href = get("href")
            if href and _IMAGE_LIKE.search(href):
                out.append(href)
            for attr in ("data-rsbigimg", "data-full", "data-zoom-image", "data-large"):
                v = get(attr)
                if v:
                    out.append(v)
            continue
        if tag in ("img", "source"):
            for attr in _LAZY_ATTRS:
                v = get(attr)
                if v:
                    out.append(v)
            for attr in ("data-srcset", "srcset", "data-lazy-srcset"):
                v = largest_srcset(get(attr))
                if v:
                    out.append(v)
            src = get("src")
            if src:
                out.append(src)
            continue
        style = get("style")
        if style and "url(" in style:
            out.extend(_BG_URL.findall(style))
        bg = get("data-background-image") or get("data-bg")
        if bg:
            out.append(bg)
    return out
