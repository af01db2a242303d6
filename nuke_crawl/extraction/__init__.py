"""Vehicle extraction: pure functions from HTML to ``VehicleData`` / ``PageExtraction``.

Public API:

- ``extract_page(html, url, *, selectors=None, max_images=50) -> PageExtraction``
- ``discover_inventory_links(html, url) -> list[str]`` and ``COMMON_INVENTORY_PATHS``
- ``is_valid_vin``, ``normalize_vin``
- ``clean_image_urls(candidates, base_url, max_images=50)``
- ``canonical_listing_url(url)``
"""

from __future__ import annotations

from nuke_crawl.extraction.extract import discover_inventory_links, extract_page
from nuke_crawl.extraction.images import clean_image_urls
from nuke_crawl.extraction.model import PageExtraction, VehicleData
from nuke_crawl.extraction.urls import COMMON_INVENTORY_PATHS, canonical_listing_url
from nuke_crawl.extraction.vin import is_valid_vin, normalize_vin

__all__ = [
    "COMMON_INVENTORY_PATHS",
    "PageExtraction",
    "VehicleData",
    "canonical_listing_url",
    "clean_image_urls",
    "discover_inventory_links",
    "extract_page",
    "is_valid_vin",
    "normalize_vin",
]
