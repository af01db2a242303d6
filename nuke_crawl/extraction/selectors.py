"""Per-organization CSS selectors.

An organization's configuration may carry a ``selectors`` dict; every key is optional
and every value is a CSS selector (a comma-separated list is fine):

``vehicle_link``  anchors to vehicle detail pages on results pages (``a.vdp``)
``next_page``     pagination anchors to follow (``a.next``)
``card``          one inventory card on results pages
``title``         the vehicle title, parsed as "YEAR MAKE MODEL TRIM" (``h1``)
``year`` ``make`` ``model`` ``trim``   the separate fields, when the site shows them
``price``         the asking price (``.price``), parsed with price-parser
``vin``           the VIN (validated; see ``vin.py`` for short pre-1981 serials)
``mileage``       the odometer (``.miles``); "km" in the text gives kilometres
``stock``         the stock number
``color`` ``interior_color`` ``transmission`` ``drivetrain`` ``engine``
``body_style`` ``fuel_type`` ``location`` ``description``   free text fields
``images``        gallery images (``.gallery img``): src, data-src, srcset, a[href]...
``sold``          an element present only when the vehicle is sold

Selectors rank third: they fill what structured data and site adapters left empty,
and override the generic heuristics. An invalid selector is ignored (logged once).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from cssselect import SelectorError
from lxml.cssselect import CSSSelector
from lxml.html import HtmlElement

from nuke_crawl.extraction.images import image_candidates
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page, text_content
from nuke_crawl.extraction.text import (
    canonical_make,
    clean_space,
    parse_mileage,
    parse_price,
    parse_title,
    parse_year,
)
from nuke_crawl.extraction.vin import normalize_serial

logger = logging.getLogger(__name__)

SELECTOR_KEYS = (
    "vehicle_link",
    "next_page",
    "card",
    "title",
    "year",
    "make",
    "model",
    "trim",
    "price",
    "vin",
    "mileage",
    "stock",
    "color",
    "interior_color",
    "transmission",
    "drivetrain",
    "engine",
    "body_style",
    "fuel_type",
    "location",
    "description",
    "images",
    "sold",
)
_TEXT_FIELDS = (
    "color",
    "interior_color",
    "transmission",
    "drivetrain",
    "engine",
    "body_style",
    "fuel_type",
    "location",
    "description",
)


@lru_cache(maxsize=512)
def compile_selector(css: str) -> CSSSelector | None:
    """A compiled selector, or None (logged) when invalid."""
    try:
        return CSSSelector(css, translator="html")
    except (SelectorError, SyntaxError, ValueError):
        logger.warning("invalid CSS selector ignored: %r", css)
        return None


def select(root: HtmlElement, css: str | None) -> list[HtmlElement]:
    """Elements under ``root`` matching ``css`` ([] when missing/invalid)."""
    if not css:
        return []
    sel = compile_selector(css)
    return list(sel(root)) if sel is not None else []


def _text(root: HtmlElement, css: str | None) -> str | None:
    for el in select(root, css):
        t = el.get("content") or el.get("value") or text_content(el)
        t = clean_space(t)
        if t:
            return t
    return None


def vehicle_from_selectors(
    page: Page, selectors: dict[str, str], root: HtmlElement | None = None
) -> VehicleData | None:
    """Partial VehicleData from per-organization selectors (None if none matched)."""
    root = page.tree if root is None else root
    v = VehicleData(url=page.url, sources=["selectors"])
    title = _text(root, selectors.get("title"))
    if title:
        tp = parse_title(title)
        v.title, v.year, v.make, v.model, v.trim = title, tp.year, tp.make, tp.model, tp.trim
    y = parse_year(_text(root, selectors.get("year")))
    v.year = y or v.year
    make = _text(root, selectors.get("make"))
    if make:
        v.make = canonical_make(make) or make
    v.model = _text(root, selectors.get("model")) or v.model
    v.trim = _text(root, selectors.get("trim")) or v.trim
    price = _text(root, selectors.get("price"))
    if price:
        v.asking_price, v.currency = parse_price(price, host=page.host)
    vin = _text(root, selectors.get("vin"))
    if vin:
        v.vin = normalize_serial(
            re.sub(r"^(vin|serial)\s*[:#]?\s*", "", vin, flags=re.I).split(" ")[0], v.year
        )
    miles = _text(root, selectors.get("mileage"))
    if miles:
        v.mileage, v.mileage_unit = parse_mileage(miles, default_unit=page.default_unit)
    stock = _text(root, selectors.get("stock"))
    if stock:
        v.stock_number = (
            re.sub(r"^stock\s*(#|no\.?|number)?\s*:?\s*", "", stock, flags=re.I) or None
        )
    for f in _TEXT_FIELDS:
        val = _text(root, selectors.get(f))
        if val:
            setattr(v, f, val)
    if selectors.get("images"):
        for el in select(root, selectors["images"]):
            v.image_urls.extend(image_candidates(el) if el.tag != "img" else _img_urls(el))
    if selectors.get("sold") and select(root, selectors["sold"]):
        v.sale_status = "sold"
    filled = (
        any(
            getattr(v, f) is not None
            for f in (
                "title",
                "year",
                "make",
                "model",
                "asking_price",
                "vin",
                "mileage",
                "stock_number",
            )
        )
        or v.image_urls
    )
    return v if filled else None


def _img_urls(img: HtmlElement) -> list[str]:
    from nuke_crawl.extraction.images import largest_srcset

    out = [img.get(a) for a in ("data-src", "data-lazy-src", "data-original") if img.get(a)]
    big = largest_srcset(img.get("srcset") or img.get("data-srcset"))
    if big:
        out.append(big)
    if img.get("src"):
        out.append(img.get("src"))
    return [u for u in out if u]
