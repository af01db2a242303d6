"""Dealer.com (DDC) results pages: ``li.vehicle-card[data-uuid]``."""

from __future__ import annotations

import re

from nuke_crawl.extraction.adapters import Adapter, first, first_of, register, text_of
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.selectors import select
from nuke_crawl.extraction.text import parse_price, parse_title


@register
class DealerCom(Adapter):
    name = "dealercom"

    def detect(self, page: Page) -> bool:
        return "pictures.dealer.com" in page.raw_text or "DDC.WS.state" in page.raw_text

    def is_vehicle_link(self, url: str) -> bool | None:
        if re.search(r"/(new|used|certified)/[^/]+/\d{4}-[^/]+\.htm$", url):
            return True
        return None

    def is_detail_page(self, page: Page) -> bool | None:
        if select(page.tree, "li.vehicle-card[data-uuid]"):
            return False
        return None

    def listings(self, page: Page) -> list[VehicleData] | None:
        cards = select(page.tree, "li.vehicle-card[data-uuid]")
        if not cards:
            return None
        from nuke_crawl.extraction.heuristics import card_vehicle
        from nuke_crawl.extraction.urls import absolutize, canonical_listing_url

        out = []
        for card in cards:
            link = first_of(card, ".vehicle-card-title a[href]", "a[href]")
            url = absolutize(link.get("href"), page.url) if link is not None else None
            v = card_vehicle(page, card, canonical_listing_url(url) if url else None)
            title = text_of(link) if link is not None else None
            if title:
                tp = parse_title(title)
                v.title, v.year, v.make, v.model, v.trim = (
                    title,
                    tp.year,
                    tp.make,
                    tp.model,
                    tp.trim,
                )
            final = first_of(card, "dd.final-price .price-value", ".portal-price")
            if final is not None:
                v.asking_price, v.currency = parse_price(text_of(final), host=page.host)
            stock = text_of(first(card, "li.stockNumber"))
            if stock:
                v.stock_number = stock.replace("Stock #", "").strip() or None
            ext = text_of(first(card, "li.exteriorColor"))
            if ext:
                v.color = re.sub(r"\s*Exterior$", "", ext)
            inter = text_of(first(card, "li.interiorColor"))
            if inter:
                v.interior_color = re.sub(r"\s*Interior$", "", inter)
            out.append(v)
        return out
