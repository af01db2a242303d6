"""AutoScout24 detail pages: Next.js ``__NEXT_DATA__`` listingDetails."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from nuke_crawl.extraction.adapters import Adapter, first, register
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.text import canonical_make, parse_year
from nuke_crawl.extraction.vin import normalize_vin


@register
class AutoScout24(Adapter):
    name = "autoscout24"
    domains = (
        "autoscout24.de",
        "autoscout24.com",
        "autoscout24.it",
        "autoscout24.fr",
        "autoscout24.nl",
        "autoscout24.be",
        "autoscout24.at",
        "autoscout24.es",
        "autoscout24.ch",
        "autoscout24.pl",
        "autoscout24.lu",
    )

    def _details(self, page: Page) -> dict[str, Any] | None:
        el = first(page, "script#__NEXT_DATA__")
        if el is None or not el.text:
            return None
        try:
            data = json.loads(el.text)
        except ValueError:
            return None
        det = data.get("props", {}).get("pageProps", {}).get("listingDetails")
        return det if isinstance(det, dict) else None

    def is_detail_page(self, page: Page) -> bool | None:
        return True if self._details(page) else None

    def is_vehicle_link(self, url: str) -> bool | None:
        return bool(
            re.search(
                r"/(angebote|offers|annunci|ofertas|aanbod)/[^/]*[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}",
                url,
            )
        )

    def vehicle(self, page: Page) -> VehicleData | None:
        det = self._details(page)
        if not det:
            return None
        veh = det.get("vehicle") or {}
        v = VehicleData(url=det.get("webPage") or page.url, sources=["autoscout24"])
        v.make = canonical_make(veh.get("make")) or veh.get("make")
        v.model = veh.get("model")
        v.trim = veh.get("modelVersionInput") or veh.get("variant")
        v.year = parse_year(veh.get("firstRegistrationDateRaw")) or parse_year(
            veh.get("productionYear")
        )
        km = veh.get("mileageInKmRaw")
        if isinstance(km, int):
            v.mileage, v.mileage_unit = km, "km"
        price = ((det.get("prices") or {}).get("public") or {}).get("priceRaw")
        if isinstance(price, (int, float)) and price >= 100:
            v.asking_price, v.currency = Decimal(int(price)), "EUR"
        v.vin = normalize_vin((veh.get("identifier") or {}).get("vin"))
        v.registration = veh.get("licensePlate")
        v.color = veh.get("bodyColorOriginal") or veh.get("bodyColor")
        v.interior_color = veh.get("upholsteryColor")
        v.body_style = veh.get("bodyType")
        v.transmission = veh.get("transmissionType")
        v.fuel_type = (veh.get("fuelCategory") or {}).get("formatted")
        loc = det.get("location") or {}
        v.location = (
            ", ".join(x for x in (loc.get("zip"), loc.get("city"), loc.get("countryCode")) if x)
            or None
        )
        v.image_urls = [u for u in det.get("images") or [] if isinstance(u, str)]
        v.sale_status = "for_sale" if det.get("status") == "Active" else None
        return v
