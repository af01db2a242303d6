"""AutoRevo dealer sites: main price row, ``#photosPanel`` gallery."""

from __future__ import annotations

from nuke_crawl.extraction.adapters import Adapter, first, register, text_of
from nuke_crawl.extraction.images import image_candidates
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.text import parse_price, parse_title


@register
class AutoRevo(Adapter):
    name = "autorevo"
    domains = ("autorevo.com",)

    def detect(self, page: Page) -> bool:
        return (
            "img.autorevo.com" in page.raw_text and first(page, "#vehicleDetailTitle") is not None
        )

    def is_detail_page(self, page: Page) -> bool | None:
        return True if first(page, "#vehicleDetailTitle") is not None else None

    def vehicle(self, page: Page) -> VehicleData | None:
        if first(page, "#vehicleDetailTitle") is None:
            return None
        v = VehicleData(url=page.url, sources=["autorevo"])
        v.title = text_of(first(page, "#vehicleDetailTitle h1"))
        tp = parse_title(v.title)
        v.year, v.make, v.model, v.trim = tp.year, tp.make, tp.model, tp.trim
        row = first(page, "#vehicleMainPriceRow")
        if row is not None:
            v.asking_price, v.currency = parse_price(text_of(row), host=page.host)
        panel = first(page, "#photosPanel")
        if panel is not None:
            v.image_urls = image_candidates(panel)
        return v
