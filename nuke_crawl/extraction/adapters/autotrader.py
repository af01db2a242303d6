"""Autotrader.com: detail links carry search context; keep only ``listingId``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from nuke_crawl.extraction.adapters import Adapter, register


@register
class AutoTrader(Adapter):
    name = "autotrader"
    domains = ("autotrader.com",)

    def is_vehicle_link(self, url: str) -> bool | None:
        return "vehicledetails" in url

    def normalize_link(self, url: str) -> str:
        parts = urlsplit(url)
        if "vehicledetails" not in parts.path:
            return url
        keep = [(k, v) for k, v in parse_qsl(parts.query) if k == "listingId"]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(keep), ""))
