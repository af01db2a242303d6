"""URL helpers: listing de-duplication keys, same-site checks, vehicle-detail-link
and pagination detection, inventory-page discovery."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url, safe_url_string

from nuke_crawl.extraction.text import MAKE_SLUGS
from nuke_crawl.extraction.vin import find_vins

#: Paths a crawler can probe on a dealer site when nothing is linked from its home page.
COMMON_INVENTORY_PATHS: tuple[str, ...] = (
    "/inventory/",
    "/used-vehicles/",
    "/new-vehicles/",
    "/used-inventory/index.htm",
    "/new-inventory/index.htm",
    "/all-inventory/index.htm",
    "/inventory",
    "/cars-for-sale",
    "/used-cars",
    "/used-cars-for-sale",
    "/vehicles",
    "/search",
    "/searchused.aspx",
    "/searchnew.aspx",
    "/inventory.aspx",
    "/showroom",
    "/stock",
)

_TRACKING_EXACT = frozenset(
    {
        "fbclid",
        "gclid",
        "gclsrc",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "igshid",
        "ttclid",
        "twclid",
        "li_fat_id",
        "srsltid",
        "ref",
        "ref_",
        "referrer",
        "referer",
        "ref_src",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "hsctatracking",
        "mkt_tok",
        "sessionid",
        "session_id",
        "sid",
        "phpsessid",
        "jsessionid",
        "aspsessionid",
        "cfid",
        "cftoken",
        "sessid",
        "s_kwcid",
        "ef_id",
        "trk",
        "trkid",
        "cmpid",
        "icid",
        "vero_id",
        "oly_enc_id",
        "oly_anon_id",
        "wickedid",
        "_kx",
        "spm",
    }
)
_TRACKING_PREFIXES = ("utm_", "mc_", "pk_", "piwik_", "matomo_", "hsa_", "_bta_")
_PATH_SESSION = re.compile(r";(jsessionid|phpsessid|sid)=[^/?#]*", re.I)
_TWO_LEVEL_SUFFIXES = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or"})

# The pure URL functions below are memoised: a crawl asks about the same URLs again and
# again (a page's links are keyed, filtered and claimed; navigation links repeat on
# every page of a site), and w3lib's canonicalisation is the costly part of extraction.
_URL_CACHE = 1 << 15
_SMALL_CACHE = 1 << 13  # for cheaper answers: a site's navigation is what repeats


@lru_cache(maxsize=_URL_CACHE)
def canonical_listing_url(url: str) -> str:
    """The de-duplication key of a listing URL.

    Tracking parameters (``utm_*``, ``fbclid``, ``gclid``, ``msclkid``, ``mc_*``, ``ref``,
    ``_ga``, session ids...) and the fragment are removed, the query is sorted, the
    scheme and host are lowercased and percent-encoding is normalised
    (``w3lib.url.canonicalize_url``). The path keeps its case (it matters on many sites).
    """
    url = _PATH_SESSION.sub("", url.strip())
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not _is_tracking_param(k)
    ]
    rebuilt = urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", urlencode(query), "")
    )
    return canonicalize_url(rebuilt, keep_fragments=False)


def _is_tracking_param(name: str) -> bool:
    n = name.lower()
    return n in _TRACKING_EXACT or n.startswith(_TRACKING_PREFIXES)


@lru_cache(maxsize=_SMALL_CACHE)
def site_of(host_or_url: str) -> str:
    """The registrable domain (approximation without the public suffix list):
    ``img.autorevo.com`` -> ``autorevo.com``, ``www.x.co.uk`` -> ``x.co.uk``."""
    host = urlsplit(host_or_url).hostname if "/" in host_or_url else host_or_url
    host = (host or "").lower().rstrip(".")
    labels = host.split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _TWO_LEVEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def same_site(url_a: str, url_b: str) -> bool:
    """True if both URLs belong to the same registrable domain."""
    return site_of(url_a) == site_of(url_b)


def absolutize(href: str | None, base_url: str) -> str | None:
    """An absolute http(s) URL for ``href`` (entities already decoded by lxml), or None
    for empty, javascript:, mailto:, tel: and data: links. The fragment is dropped."""
    if not href:
        return None
    href = href.strip()
    if not href or href.startswith(("#", "javascript:", "mailto:", "tel:", "data:", "sms:")):
        return None
    if href.startswith(("/", "http://", "https://")):
        # resolved against the base's scheme and host alone: a site's navigation and
        # vehicle links repeat on every page, whatever page they are on
        base_url = _origin(base_url)
    return _absolute(base_url, href)


@lru_cache(maxsize=_URL_CACHE)
def _absolute(base_url: str, href: str) -> str | None:
    try:
        absolute = urljoin(base_url, href)
    except ValueError:
        return None
    if not absolute.startswith(("http://", "https://")):
        return None
    return safe_url_string(absolute.split("#", 1)[0])


@lru_cache(maxsize=1024)
def _origin(url: str) -> str:
    """``scheme://host/`` of ``url``: all that ``urljoin`` takes from a base for an
    href that starts with ``/`` or ``http(s)://``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return f"{parts.scheme}://{parts.netloc}/" if parts.scheme and parts.netloc else url


# --- vehicle detail links -------------------------------------------------------------

_NOT_VDP_PATH = re.compile(
    r"/(blog|news|about|about-us|finance|financing|apply|credit|contact|contact-us|service|"
    r"parts|specials|research|reviews?|compare|privacy|terms|careers|jobs|login|account|"
    r"register|sell|sell-my-car|trade|trade-in|value|schedule|directions|hours|faq|help|"
    r"user|users|watch-list|favorites|saved|cart|checkout|wp-admin|wp-login|feed|tag|"
    r"category|author|page|locations?|staff|team|reviews|testimonials|warranty|"
    r"privacy-policy|sitemap|search)(/|$|\.)",
    re.I,
)
_IMAGE_EXT = re.compile(r"\.(jpe?g|png|gif|webp|avif|svg|bmp|pdf|css|js|ico|mp4|zip)$", re.I)
_VDP_KEYWORDS = re.compile(
    r"(vehicledetails|vehicle-details|vehicle_details|/vdp/|/vdp-|/detail/|/details/|"
    r"/listing/|/listings/\d|/auctions?/[a-z0-9]{5,}|/angebote/|/d/[^/]+/\d{6,}\.html|"
    r"/lot/|/inventory/detail|/used/[^/]+/[^/]*\d{4}|/new/[^/]+/[^/]*\d{4}|/car/\d|"
    r"/cars/\d{4,}|/vehicle/\d|/vehicles/\d)",
    re.I,
)
_YEAR_IN_PATH = re.compile(r"(?<![0-9])(19[2-9][0-9]|20[0-4][0-9])(?![0-9])")
_ID_IN_PATH = re.compile(r"(?<![0-9a-z])([0-9]{5,}|[0-9a-f]{16,})(?![0-9a-z])", re.I)
_SLUG_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*", re.I)


@lru_cache(maxsize=_URL_CACHE)
def looks_like_vehicle_url(url: str) -> bool:
    """Heuristic: does ``url`` look like a vehicle detail page (VDP)?

    True when the path holds a valid VIN, a VDP keyword (``vehicledetails``,
    ``/vdp/``, ``/listing/``, Craigslist ``/d/<slug>/<id>.html``...), or a make slug
    together with a model year or a long numeric/hex id (``/2025-Toyota-4Runner-...``,
    ``/used-fiat-500c-...-7454128``, ``/inventory/ram/2500-crew-cab/343106/``).
    Search, blog, finance, about... pages and image files are never VDPs.
    """
    parts = urlsplit(url)
    path = parts.path or "/"
    if path == "/" or _IMAGE_EXT.search(path):
        return False
    if find_vins(path.replace("-", " ").replace("_", " ").replace("/", " ")):
        return True
    if _VDP_KEYWORDS.search(path) or _VDP_KEYWORDS.search(path + "?" + parts.query):
        return True
    if _NOT_VDP_PATH.search(path):
        return False
    words = set(w.lower() for w in re.split(r"[^A-Za-z0-9]+", path) if w)
    if not words & MAKE_SLUGS and not _has_multiword_make(path):
        return False
    segments = [s for s in path.split("/") if s]
    tail = "/".join(segments[-3:])
    return bool(_YEAR_IN_PATH.search(tail) or _ID_IN_PATH.search(tail))


@lru_cache(maxsize=_SMALL_CACHE)
def _path_template(url: str) -> tuple[str, int, bool, str]:
    """(first segment, depth, trailing slash, extension) of a URL's path."""
    path = urlsplit(url).path or "/"
    segments = [seg for seg in path.split("/") if seg]
    last = segments[-1] if segments else ""
    ext = last.rsplit(".", 1)[-1].lower() if "." in last else ""
    return (segments[0].lower() if segments else "", len(segments), path.endswith("/"), ext)


def sibling_vehicle_urls(vehicle_urls: Iterable[str], other_urls: Iterable[str]) -> set[str]:
    """Links among ``other_urls`` laid out like the page's vehicle links.

    A listing whose title names no make (``/vehicle/beautiful-convertible-10017/``)
    fails :func:`looks_like_vehicle_url`, yet sits among cards whose links do. A link
    is taken as a vehicle link too when at least two known vehicle links share its
    path template (first segment, depth, trailing slash, extension) and its last
    segment carries a listing id; search, blog, about... paths never are.
    """
    templates = Counter(_path_template(u) for u in vehicle_urls)
    out = set()
    for url in other_urls:
        if templates[_path_template(url)] < 2:
            continue
        path = urlsplit(url).path
        last = [seg for seg in path.split("/") if seg][-1:]
        if (
            last
            and _ID_IN_PATH.search(last[0])
            and not _NOT_VDP_PATH.search(path)
            and not _IMAGE_EXT.search(path)
        ):
            out.add(url)
    return out


def _has_multiword_make(path: str) -> bool:
    p = path.lower()
    return any(
        m in p for m in ("land-rover", "alfa-romeo", "aston-martin", "mercedes-benz", "rolls-royce")
    )


# --- pagination -------------------------------------------------------------------------

_PAGE_PARAMS = (
    "page",
    "page_no",
    "pageno",
    "pagenum",
    "page_num",
    "pagenumber",
    "pg",
    "p",
    "paged",
    "currentpage",
    "start_page",
)
_PAGE_PATH = re.compile(r"/(?:page|p|seite|pagina)/(\d{1,4})/?$", re.I)
_NEXT_TEXT = re.compile(
    r"^\s*(next( page)?|next\s*[›»>]+|[›»]|>|>>"
    r"|weiter|nächste|suivant|siguiente|volgende|avanti)\s*$",
    re.I,
)


@lru_cache(maxsize=_SMALL_CACHE)
def page_number(url: str) -> int | None:
    """The page number a URL carries (``?page=3``, ``?page_no=3``, ``/page/3/``), or None."""
    parts = urlsplit(url)
    for k, v in parse_qsl(parts.query):
        if k.lower() in _PAGE_PARAMS and v.isdigit():
            return int(v)
    m = _PAGE_PATH.search(parts.path)
    return int(m.group(1)) if m else None


@lru_cache(maxsize=4096)
def is_next_label(text: str) -> bool:
    """True for anchor texts / aria-labels like "Next", "Next page", "›", "»"."""
    t = text.strip()
    if not t:
        return False
    return bool(_NEXT_TEXT.match(t)) or t.lower() in (
        "next page",
        "go to next page",
        "nächste seite",
    )


def dedupe(urls: Iterable[str]) -> list[str]:
    """Remove duplicates, keeping the first occurrence."""
    seen: set[str] = set()
    out: list[str] = []
    for u in urls:
        if u not in seen:
            seen.add(u)
            out.append(u)
    return out
