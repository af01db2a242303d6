"""Cars & Bids auctions: quick-facts ``dl``, the bid bar, the gallery preview."""

from __future__ import annotations

from nuke_crawl.extraction.adapters import Adapter, first, first_of, register, text_of
from nuke_crawl.extraction.images import image_candidates
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.text import parse_price


@register
class CarsAndBids(Adapter):
    name = "carsandbids"
    domains = ("carsandbids.com",)

    def detect(self, page: Page) -> bool:
        # the class names appear in the source of any page they match: a substring test
        # spares most pages the two selector scans
        return (
            "quick-facts" in page.raw_text
            and "auction-title" in page.raw_text
            and first(page, ".quick-facts") is not None
            and first(page, ".auction-title") is not None
        )

    def is_detail_page(self, page: Page) -> bool | None:
        return True if first(page, ".quick-facts") is not None else None

    def is_vehicle_link(self, url: str) -> bool | None:
        return "/auctions/" in url

    def vehicle(self, page: Page) -> VehicleData | None:
        if first(page, ".quick-facts") is None:
            return None
        v = VehicleData(url=page.url, sources=["carsandbids"])
        v.title = text_of(first(page, ".auction-title h1"))
        bid = first_of(page, ".bid-bar .bid-value", ".current-bid .bid-value")
        if bid is not None:
            v.asking_price, v.currency = parse_price(
                text_of(bid), host=page.host or "carsandbids.com"
            )
        status = (text_of(first(page, ".bid-bar")) or "").lower()
        v.sale_status = "sold" if "sold for" in status else "auction"
        gallery = first_of(page, ".auction-photos", ".gallery-preview")
        if gallery is not None:
            v.image_urls = image_candidates(gallery)
        return v
