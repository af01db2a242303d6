"""The org spider's page work, done in its worker process (:mod:`nuke_crawl.workers`).

:func:`extract_for_crawl` extracts a page and returns only what the spider uses of
it, its vehicle already in the shape of a :class:`~nuke_crawl.items.VehicleItem`'s
fields: plain tuples, lists, dicts and strings, cheaper to send back and to unpickle
on the crawler's thread than the whole :class:`~nuke_crawl.extraction.PageExtraction`
(an inventory page's fifty cards included). This module imports no Scrapy: the worker
loads it, and the extraction code, as it starts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from nuke_crawl.db.store import VEHICLE_FIELDS
from nuke_crawl.extraction import VehicleData, extract_page

KM_PER_MILE = 1.609344


class CrawlPage(NamedTuple):
    """One page as the org spider uses it (see :class:`~nuke_crawl.extraction.PageExtraction`)."""

    url: str
    canonical_url: str  # canonical_listing_url(url)
    skip_reason: str | None
    needs_js: bool
    vehicle: dict[str, Any] | None  # see vehicle_payload()
    vehicle_links: list[str]
    next_pages: list[str]
    cards_without_url: int  # inventory cards the page lists without a link


def extract_for_crawl(
    html: str | bytes, url: str, *, selectors: dict[str, str] | None, max_images: int
) -> CrawlPage:
    """``extract_page(html, url, cards=False)`` (vehicles come from their detail pages:
    an inventory page's cards need their URLs only), as a :class:`CrawlPage`."""
    result = extract_page(html, url, selectors=selectors, max_images=max_images, cards=False)
    return CrawlPage(
        url=result.url,
        canonical_url=result.canonical_url,
        skip_reason=result.skip_reason,
        needs_js=result.needs_js,
        vehicle=None if result.vehicle is None else vehicle_payload(result.vehicle),
        vehicle_links=result.vehicle_links,
        next_pages=result.next_pages,
        cards_without_url=sum(1 for card in result.listings if not card.url),
    )


def vehicle_payload(v: VehicleData) -> dict[str, Any]:
    """A vehicle as the org spider's item takes it: ``url`` (None: the page's),
    ``fields`` (the ``vehicles`` columns it has, mileage in miles), ``image_urls``,
    ``sources`` and ``extra`` (stock number, registration, the mileage as given when it
    was in kilometres). The currency and a sold price are columns (migration 6)."""
    fields = {
        name: value
        for name in VEHICLE_FIELDS
        if name != "listing_url" and (value := getattr(v, name, None)) is not None
    }
    extra: dict[str, Any] = {}
    for name in ("stock_number", "registration"):
        if value := getattr(v, name):
            extra[name] = value
    if v.mileage is not None and v.mileage_unit == "km":
        extra["mileage_original"] = {"value": v.mileage, "unit": "km"}
        fields["mileage"] = round(v.mileage / KM_PER_MILE)
    return {
        "url": v.url,
        "fields": fields,
        "image_urls": list(v.image_urls),
        "sources": list(v.sources),
        "extra": extra,
    }
