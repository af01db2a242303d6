"""The values extraction hands to spiders: plain dataclasses, no Scrapy."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class VehicleData:
    """One vehicle as read from a page. Every field is optional except ``url``
    (which may be ``None`` only for inventory cards that carry no link)."""

    url: str | None
    title: str | None = None
    year: int | None = None
    make: str | None = None
    model: str | None = None
    trim: str | None = None
    vin: str | None = None
    stock_number: str | None = None
    registration: str | None = None
    mileage: int | None = None
    mileage_unit: str | None = None  # "mi" or "km"
    asking_price: Decimal | None = None
    currency: str | None = None  # ISO 4217 code of asking_price / sold_price
    sold_price: Decimal | None = None  # the price a sold vehicle (or a won auction) went for
    color: str | None = None
    interior_color: str | None = None
    transmission: str | None = None
    drivetrain: str | None = None
    body_style: str | None = None
    fuel_type: str | None = None
    engine: str | None = None
    description: str | None = None
    location: str | None = None
    sale_status: str | None = None  # "for_sale", "sold", "pending", "auction"
    image_urls: list[str] = field(default_factory=list)
    # which extractors contributed, e.g. ["jsonld", "heuristics"]
    sources: list[str] = field(default_factory=list)


@dataclass
class PageExtraction:
    """Everything one page yields.

    ``vehicle`` is the page's own vehicle (a detail page); ``listings`` are the
    vehicle cards of an inventory page (partial data, used to follow links and
    as a fallback); ``vehicle_links`` and ``next_pages`` are absolute URLs to
    follow. When ``vehicle`` is None, ``skip_reason`` says why
    (``not_a_listing``, ``missing_year_make``, ``inventory_page``, ``js_shell``).
    """

    url: str
    canonical_url: str = ""  # canonical_listing_url(url), worked out once with the page
    vehicle: VehicleData | None = None
    listings: list[VehicleData] = field(default_factory=list)
    vehicle_links: list[str] = field(default_factory=list)
    next_pages: list[str] = field(default_factory=list)
    skip_reason: str | None = None
    needs_js: bool = False
