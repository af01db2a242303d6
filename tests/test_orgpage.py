"""The org spider's page work in its worker (nuke_crawl.spiders.orgpage)."""

from __future__ import annotations

import json
import pickle
from decimal import Decimal

from nuke_crawl.extraction import extract_page
from nuke_crawl.spiders.orgpage import CrawlPage, extract_for_crawl


def _page(*nodes: dict) -> str:
    scripts = "".join(f'<script type="application/ld+json">{json.dumps(n)}</script>' for n in nodes)
    return f"<html><head><title>t</title>{scripts}</head><body>{{body}}</body></html>"


def test_a_detail_pages_vehicle_comes_as_item_fields() -> None:
    car = {
        "@context": "https://schema.org",
        "@type": "Car",
        "name": "2017 Volkswagen Golf GTI",
        "vehicleIdentificationNumber": "WVWZZZAUZHW123456",
        "sku": "ST-4411",
        "mileageFromOdometer": {"@type": "QuantitativeValue", "value": 80467, "unitCode": "KMT"},
        "color": "Tornado Red",
        "image": ["https://cdn.example.de/p/1.jpg", "https://cdn.example.de/p/2.jpg"],
        "offers": {"@type": "Offer", "price": "18990", "priceCurrency": "EUR"},
    }
    html = _page(car).replace("{body}", "<h1>2017 Volkswagen Golf GTI</h1>")
    url = "https://www.autohaus.example.de/fahrzeuge/golf-gti-4411?utm_source=x"
    page = extract_for_crawl(html, url, selectors=None, max_images=50)
    assert isinstance(page, CrawlPage) and page.skip_reason is None and not page.needs_js
    full = extract_page(html, url, cards=False)
    assert (page.url, page.canonical_url, page.vehicle_links, page.next_pages) == (
        full.url,
        full.canonical_url,
        full.vehicle_links,
        full.next_pages,
    )
    v = page.vehicle
    assert v is not None and v["url"] == full.vehicle.url
    fields = v["fields"]
    assert (
        fields["year"] == 2017
        and fields["make"] == "Volkswagen"
        and fields["color"] == "Tornado Red"
    )
    assert fields["mileage"] == 50000  # 80,467 km in miles
    assert fields["asking_price"] == Decimal("18990") and "listing_url" not in fields
    assert None not in fields.values()
    assert fields["currency"] == "EUR" and "sold_price" not in fields
    assert v["extra"] == {
        "stock_number": "ST-4411",
        "mileage_original": {"value": 80467, "unit": "km"},
    }
    assert v["image_urls"] == full.vehicle.image_urls and v["sources"] == full.vehicle.sources
    # what crosses back from the worker is plain data, smaller than the extraction
    assert len(pickle.dumps(page)) < len(pickle.dumps(full))


def test_an_inventory_page_counts_its_cards_without_a_link() -> None:
    listing = {
        "@context": "https://schema.org",
        "@type": "ItemList",
        "itemListElement": [
            {
                "@type": "ListItem",
                "position": 1,
                "item": {
                    "@type": "Car",
                    "name": "2019 Honda Civic EX",
                    "url": "https://dealer.example/used/2019-honda-civic-1001",
                },
            },
            {
                "@type": "ListItem",
                "position": 2,
                "item": {
                    "@type": "Car",
                    "name": "2020 Toyota Camry SE",
                    "url": "https://dealer.example/used/2020-toyota-camry-1002",
                },
            },
            {
                "@type": "ListItem",
                "position": 3,
                "item": {"@type": "Car", "name": "2018 Ford F-150 XLT"},
            },
        ],
    }
    body = (
        "<a href='/used/2019-honda-civic-1001'>2019 Honda Civic EX</a>"
        "<a href='/used/2020-toyota-camry-1002'>2020 Toyota Camry SE</a>"
        "<a href='/used/?page=2' rel='next'>Next</a>"
    )
    html = _page(listing).replace("{body}", body)
    page = extract_for_crawl(html, "https://dealer.example/used/", selectors=None, max_images=50)
    full = extract_page(html, "https://dealer.example/used/", cards=False)
    assert page.skip_reason == full.skip_reason == "inventory_page" and page.vehicle is None
    assert page.cards_without_url == 1
    assert page.vehicle_links == full.vehicle_links and len(page.vehicle_links) == 2
    assert page.next_pages == full.next_pages == ["https://dealer.example/used/?page=2"]
