"""ClickDealer (UK dealer platform): ``window.CLICK_DATA``, ``dt-spec-list``,
``.listing`` cards on results pages."""

from __future__ import annotations

import re

from nuke_crawl.extraction.adapters import Adapter, first_of, register, script_json, text_of
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.selectors import select
from nuke_crawl.extraction.text import canonical_make, parse_mileage, parse_title


@register
class ClickDealer(Adapter):
    name = "clickdealer"

    def detect(self, page: Page) -> bool:
        return "images.clickdealer.co.uk" in page.raw_text or "window.CLICK_DATA" in page.raw_text

    def is_detail_page(self, page: Page) -> bool | None:
        data = script_json(page, r"window\.CLICK_DATA\s*=")
        if isinstance(data, dict) and "is_detail_page" in data:
            return bool(data.get("is_detail_page"))
        return None

    def is_vehicle_link(self, url: str) -> bool | None:
        return True if re.search(r"/used-[a-z0-9-]+-\d{6,}$", url) else None

    def vehicle(self, page: Page) -> VehicleData | None:
        data = script_json(page, r"window\.CLICK_DATA\s*=")
        if not isinstance(data, dict) or not data.get("is_detail_page"):
            return None
        veh = data.get("vehicle") or {}
        v = VehicleData(url=page.url, sources=["clickdealer"])
        advert = veh.get("advert")
        tp = parse_title(advert)
        v.title = advert
        v.year, v.trim = tp.year, tp.trim
        v.make = canonical_make(veh.get("manufacturer")) or tp.make
        v.model = tp.model
        if isinstance(veh.get("mileage"), int):
            v.mileage, v.mileage_unit = veh["mileage"], "mi"
        v.color = veh.get("colour")
        reg = veh.get("registration")
        v.registration = re.sub(r"\s+", "", reg).upper() if isinstance(reg, str) and reg else None
        gallery = first_of(page, "#gallery-2", ".dt-photo-gallery")
        if gallery is not None:
            v.image_urls = [a.get("href") or "" for a in gallery.iter("a") if a.get("href")]
            v.image_urls += [
                img.get("data-src") or "" for img in gallery.iter("img") if img.get("data-src")
            ]
        return v

    def listings(self, page: Page) -> list[VehicleData] | None:
        cards = select(page.tree, "div.listing")
        if not cards or self.is_detail_page(page):
            return None
        from nuke_crawl.extraction.heuristics import card_vehicle
        from nuke_crawl.extraction.urls import absolutize, canonical_listing_url

        out: list[VehicleData] = []
        seen: set[str] = set()
        for card in cards:
            if card in page.excluded:
                continue
            link = first_of(card, ".listing__image a[href]", "a[href]")
            url = absolutize(link.get("href"), page.url) if link is not None else None
            key = canonical_listing_url(url) if url else None
            if key in seen:
                continue
            if key:
                seen.add(key)
            v = card_vehicle(page, card, key)
            if link is not None and link.get("title"):
                tp = parse_title(link.get("title"))
                v.title = link.get("title")
                v.year, v.make, v.model, v.trim = (
                    tp.year or v.year,
                    tp.make or v.make,
                    tp.model or v.model,
                    tp.trim or v.trim,
                )
            for stat in select(card, ".vehicle-spec__stat"):
                t = text_of(stat) or ""
                if (
                    v.mileage is None
                    and re.fullmatch(r"\d{1,3}(,\d{3})+|\d{1,6}", t)
                    and not re.fullmatch(r"(19|20)\d\d", t)
                ):
                    v.mileage, v.mileage_unit = parse_mileage(t, default_unit="mi")
            out.append(v)
        return out
