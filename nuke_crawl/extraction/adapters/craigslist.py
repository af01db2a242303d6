"""Craigslist postings: ``p.attrgroup`` attributes, ``imgList`` photos."""

from __future__ import annotations

import re

from nuke_crawl.extraction.adapters import Adapter, first, register, script_json, text_of
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.selectors import select
from nuke_crawl.extraction.text import (
    canonical_make,
    parse_mileage,
    parse_price,
    parse_title,
    parse_year,
)
from nuke_crawl.extraction.vin import normalize_serial

_ATTR_FIELDS = {
    "drive": "drivetrain",
    "fuel": "fuel_type",
    "transmission": "transmission",
    "type": "body_style",
    "paint color": "color",
    "cylinders": "engine",
}


@register
class Craigslist(Adapter):
    name = "craigslist"
    domains = ("craigslist.org",)

    def is_detail_page(self, page: Page) -> bool | None:
        if first(page, "#postingbody") is not None or first(page, "#titletextonly") is not None:
            return True
        return False if "/search/" in page.url else None

    def is_vehicle_link(self, url: str) -> bool | None:
        return bool(re.search(r"/d/[^/]+/\d{6,}\.html", url))

    def vehicle(self, page: Page) -> VehicleData | None:
        if not self.is_detail_page(page):
            return None
        v = VehicleData(url=page.url, sources=["craigslist"])
        v.title = text_of(first(page, "#titletextonly"))
        price_el = first(page, ".postingtitle .price")
        if price_el is not None:
            v.asking_price, v.currency = parse_price(text_of(price_el), host=page.host)
        v.year = parse_year(text_of(first(page, ".attrgroup .valu.year")))
        makemodel = text_of(first(page, ".attrgroup .valu.makemodel"))
        if makemodel:
            tp = parse_title(f"{v.year or ''} {makemodel}")
            v.make = tp.make or canonical_make(makemodel.split()[0])
            v.model, v.trim = tp.model, tp.trim
        for attr in select(page.tree, ".attrgroup .attr"):
            label = (text_of(first(attr, ".labl")) or "").rstrip(":").strip().lower()
            value = text_of(first(attr, ".valu"))
            if not label or not value:
                continue
            if label == "vin":
                v.vin = normalize_serial(value, v.year)
            elif label == "odometer":
                v.mileage, v.mileage_unit = parse_mileage(value, default_unit="mi")
            elif label in _ATTR_FIELDS and getattr(v, _ATTR_FIELDS[label]) is None:
                setattr(v, _ATTR_FIELDS[label], value)
        images = script_json(page, r"var\s+imgList\s*=")
        if isinstance(images, list):
            v.image_urls = [
                i["url"] for i in images if isinstance(i, dict) and isinstance(i.get("url"), str)
            ]
        return v
