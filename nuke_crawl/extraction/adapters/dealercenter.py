"""DealerCenter "DWS" WordPress sites: ``.dws-vehicle-listing-item`` cards (rendered
twice: grid and list), VINs in ``data-vehicle-vin``."""

from __future__ import annotations

import re

from nuke_crawl.extraction.adapters import Adapter, first, first_of, register, text_of
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.selectors import select
from nuke_crawl.extraction.text import parse_mileage, parse_title
from nuke_crawl.extraction.vin import normalize_vin


@register
class DealerCenter(Adapter):
    name = "dealercenter"

    def detect(self, page: Page) -> bool:
        return "dws-vehicle" in page.raw_text or "dealercenter.net" in page.raw_text

    def is_vehicle_link(self, url: str) -> bool | None:
        return True if re.search(r"/inventory/[^/?]+/[^/?]+/[A-Za-z0-9-]{4,}/?$", url) else None

    def is_detail_page(self, page: Page) -> bool | None:
        return False if select(page.tree, ".dws-vehicle-listing-item") else None

    def listings(self, page: Page) -> list[VehicleData] | None:
        cards = select(page.tree, ".dws-vehicle-listing-item")
        if not cards:
            return None
        from nuke_crawl.extraction.heuristics import card_vehicle
        from nuke_crawl.extraction.urls import absolutize, canonical_listing_url

        out: list[VehicleData] = []
        seen: set[str] = set()
        for card in cards:
            if card in page.excluded:
                continue
            link = first_of(card, ".dws-vehicle-listing-item-title a[href]", "a[href]")
            url = absolutize(link.get("href"), page.url) if link is not None else None
            key = canonical_listing_url(url) if url else None
            vin_el = first(card, "[data-vehicle-vin]")
            vin = normalize_vin(vin_el.get("data-vehicle-vin")) if vin_el is not None else None
            dedupe_key = key or vin
            if dedupe_key and dedupe_key in seen:
                continue
            if dedupe_key:
                seen.add(dedupe_key)
            v = card_vehicle(page, card, key)
            v.vin = vin or v.vin
            title = text_of(first(card, ".dws-vehicle-listing-item-title a span.hide")) or text_of(
                link
            )
            if title:
                tp = parse_title(title)
                v.title, v.year, v.make, v.model, v.trim = (
                    title,
                    tp.year,
                    tp.make,
                    tp.model,
                    tp.trim,
                )
            miles = text_of(
                first(card, ".dws-vehicle-field-mileage .dws-vehicle-listing-item-field-value")
            )
            v.mileage, v.mileage_unit = (
                parse_mileage(miles, default_unit="mi") if miles else (None, None)
            )
            out.append(v)
        return out
