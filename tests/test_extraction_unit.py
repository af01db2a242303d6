"""Unit tests of the extraction package: VINs, image URLs, canonical URLs, titles,
prices, mileages, selectors, links, pagination, structured data, heuristics."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from nuke_crawl.extraction import (
    COMMON_INVENTORY_PATHS,
    canonical_listing_url,
    clean_image_urls,
    discover_inventory_links,
    extract_page,
    is_valid_vin,
    normalize_vin,
)
from nuke_crawl.extraction.text import parse_mileage, parse_price, parse_title
from nuke_crawl.extraction.urls import looks_like_vehicle_url, sibling_vehicle_urls
from nuke_crawl.extraction.vin import find_vins, normalize_serial

BASE = "https://dealer.example.com/used/2019-honda-civic-123456"


# --- VIN ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vin", ["1GCPTCE11K1220169", "JHMAP1140YT000726", "1M8GDM9AXKP042788", "5YJ3E1EA5NF372092"]
)
def test_valid_vins(vin):
    assert is_valid_vin(vin)
    assert normalize_vin(vin) == vin


def test_check_digit_x():
    assert is_valid_vin("1M8GDM9AXKP042788")  # check digit 10 -> "X"


@pytest.mark.parametrize(
    "vin", ["1GCPTCE12K1220169", "JHMAP1140YT00072", "JHMAP1140YT0007266", "", "5YFT4MCE6MP40B066"]
)
def test_invalid_vins(vin):
    assert not is_valid_vin(vin)
    assert normalize_vin(vin) is None


def test_lowercase_and_spacing():
    assert is_valid_vin("1gcptce11k1220169")
    assert normalize_vin("  1gcptce11k1220169 ") == "1GCPTCE11K1220169"
    assert normalize_vin("1GCPTCE11K-1220169") == "1GCPTCE11K1220169"


@pytest.mark.parametrize("bad", ["1GCPTCE1OK1220169", "1GCPTCE1IK1220169", "1GCPTCE1QK1220169"])
def test_o_i_q_never_valid(bad):
    assert not is_valid_vin(bad)


def test_short_serial_rule():
    assert normalize_serial("P6FH233347", 1956) == "P6FH233347"
    assert normalize_serial("P6FH233347", 1995) is None  # modern cars have 17-char VINs
    assert normalize_serial("P6FH233347", None) is None
    assert normalize_serial("1GCPTCE12K1220169", 1970) is None  # invalid 17-char: never
    assert find_vins("vin 1GCPTCE11K1220169 and 1GCPTCE12K1220169") == ["1GCPTCE11K1220169"]


# --- images ----------------------------------------------------------------------------------


def test_images_absolute_entities_and_dedupe():
    out = clean_image_urls(
        ["/p/a.jpg?x=1&amp;y=2", "https://dealer.example.com/p/a.jpg?x=1&y=2", "p/b.jpg"], BASE
    )
    assert out == [
        "https://dealer.example.com/p/a.jpg?x=1&y=2",
        "https://dealer.example.com/used/p/b.jpg",
    ]


def test_images_resize_params_removed():
    out = clean_image_urls(
        [
            "https://cdn.x.com/a.jpg?w=300&h=200&fit=crop&quality=70&id=5",
            "https://cdn.x.com/a.jpg?id=5&width=1200",
        ],
        BASE,
    )
    assert out == ["https://cdn.x.com/a.jpg?id=5"]


def test_images_wordpress_suffixes():
    out = clean_image_urls(
        [
            "https://x.com/wp-content/uploads/2024/01/car-1024x768.jpg",
            "https://x.com/wp-content/uploads/2024/01/car-scaled.jpg",
            "https://x.com/wp-content/uploads/2024/01/car.jpg",
        ],
        BASE,
    )
    assert out == ["https://x.com/wp-content/uploads/2024/01/car.jpg"]


def test_images_craigslist_upgrade():
    out = clean_image_urls(
        [
            "https://images.craigslist.org/00q0q_abc_300x300.jpg",
            "https://images.craigslist.org/00q0q_abc_50x50c.jpg",
        ],
        BASE,
    )
    assert out == ["https://images.craigslist.org/00q0q_abc_1200x900.jpg"]


def test_images_cloudflare_resizing_removed():
    out = clean_image_urls(
        ["https://media.x.com/cdn-cgi/image/width=542,quality=70/abc/photo.jpg"], BASE
    )
    assert out == ["https://media.x.com/abc/photo.jpg"]


@pytest.mark.parametrize(
    "url",
    [
        "https://x.com/img/logo.png",
        "https://x.com/img/site-logo-white.jpg",
        "https://x.com/icons/phone.png",
        "https://x.com/favicon.ico.png",
        "https://x.com/sprite.png",
        "https://x.com/a.svg",
        "https://www.facebook.com/tr?id=1&ev=PageView",
        "https://ad.doubleclick.net/x.gif",
        "https://x.com/pixel.gif",
        "https://x.com/t.gif?w=1&h=1",
        "https://x.com/1x1.gif",
        "https://dealer.example.com/wp-content/themes/dealer/img/bg.jpg",
        "https://x.com/promo-banner.jpg",
        "https://x.com/images/no-image-available.jpg",
        "https://x.com/coming-soon.jpg",
        "https://x.com/photo-coming-soon.png",
        "data:image/png;base64,AAAA",
        "https://i.ytimg.com/vi/x/hqdefault.jpg",
        "https://dealer.example.com/assets/images/placeholder.jpg",
    ],
)
def test_images_junk_dropped(url):
    assert clean_image_urls([url], BASE) == []


def test_images_size_variants_collapse_to_largest():
    out = clean_image_urls(
        [
            "https://i.x.com/v/1/96x72/10.jpg",
            "https://i.x.com/v/1/large1/10.jpg",
            "https://i.x.com/v/1/96x72/11.jpg",
        ],
        BASE,
    )
    assert out == ["https://i.x.com/v/1/large1/10.jpg", "https://i.x.com/v/1/96x72/11.jpg"]
    out = clean_image_urls(
        ["https://img.x.com/753953-1-medium.jpg", "https://img.x.com/753953-1-large.jpg"], BASE
    )
    assert out == ["https://img.x.com/753953-1-large.jpg"]


def test_images_cap():
    urls = [f"https://x.com/p/{i}.jpg" for i in range(80)]
    assert len(clean_image_urls(urls, BASE)) == 50
    assert clean_image_urls(urls, BASE, max_images=3) == urls[:3]


# --- canonical URLs -------------------------------------------------------------------------


def test_canonical_listing_url():
    u = "HTTPS://WWW.Dealer.COM/Used/Car-123?utm_source=fb&b=2&fbclid=x&a=1&gclid=y&msclkid=z&mc_cid=1&ref=home&_ga=3&sessionid=abc#photos"
    assert canonical_listing_url(u) == "https://www.dealer.com/Used/Car-123?a=1&b=2"
    assert canonical_listing_url("https://x.com/a;jsessionid=ABC?id=1") == "https://x.com/a?id=1"
    assert canonical_listing_url("https://x.com") == "https://x.com/"


# --- titles, prices, mileage ----------------------------------------------------------------


@pytest.mark.parametrize(
    "title,expected",
    [
        ("2019 Chevy Silverado 1500 LT", (2019, "Chevrolet", "Silverado 1500", "LT")),
        ("Used 2017 VW Golf GTI S | Dealer", (2017, "Volkswagen", "Golf", "GTI S")),
        ("2012 Land Rover Range Rover Sport HSE", (2012, "Land Rover", "Range Rover Sport", "HSE")),
        ("2015 Alfa Romeo 4C Spider", (2015, "Alfa Romeo", "4C Spider", None)),
        ("2011 Mazda MX-5 Miata Grand Touring", (2011, "Mazda", "MX-5 Miata", "Grand Touring")),
        ("2018 Jeep Grand Cherokee L Limited", (2018, "Jeep", "Grand Cherokee L", "Limited")),
        ("2020 Mercedes-Benz C 300 4MATIC", (2020, "Mercedes-Benz", "C", "300 4MATIC")),
        ("2018 Mercedes GLC 300", (2018, "Mercedes-Benz", "GLC", "300")),
        ("1965 Aston Martin DB5", (1965, "Aston Martin", "DB5", None)),
        ("2024 RAM 2500 CREW CAB", (2024, "Ram", "2500", "CREW CAB")),
        ("2022 Tesla Model 3 Long Range", (2022, "Tesla", "Model 3", "Long Range")),
        ("FIAT 500C 2014 1.2 Lounge", (2014, "Fiat", "500C", "1.2 Lounge")),
        ("2013 63 SKODA CITIGO 1.0 MPI", (2013, "Skoda", "CITIGO", "1.0 MPI")),
    ],
)
def test_parse_title(title, expected):
    tp = parse_title(title)
    assert (tp.year, tp.make, tp.model, tp.trim) == expected


def test_parse_title_unknown():
    tp = parse_title("About our dealership")
    assert tp.year is None and tp.make is None


@pytest.mark.parametrize(
    "text,host,expected",
    [
        ("€ 34.990", "", (Decimal(34990), "EUR")),
        ("£4,995", "", (Decimal(4995), "GBP")),
        ("$24,998", "x.com", (Decimal(24998), "USD")),
        ("$24,998", "x.ca", (Decimal(24998), "CAD")),
        ("Call For Price", "", (None, None)),
        ("$399/mo", "", (None, None)),
        ("£109.22 per month", "", (None, None)),
        ("$0", "", (None, None)),
        ("EUR 12.500,-", "", (Decimal(12500), "EUR")),
    ],
)
def test_parse_price(text, host, expected):
    assert parse_price(text, host=host) == expected


def test_parse_mileage():
    assert parse_mileage("81321 Miles") == (81321, "mi")
    assert parse_mileage("790 km") == (790, "km")
    assert parse_mileage("32,400", default_unit="mi") == (32400, "mi")
    assert parse_mileage("45k miles") == (45000, "mi")
    assert parse_mileage("Kilometerstand 12.345 km") == (12345, "km")
    assert parse_mileage("none") == (None, None)


# --- pages -------------------------------------------------------------------------------------


def _html(body: str, head: str = "") -> str:
    return f"<html><head>{head}</head><body>{body}</body></html>"


LABELLED_VDP = _html(
    """
    <header><img src="/img/logo.png"></header>
    <h1>2016 Porsche 911 Carrera S</h1>
    <div class="price-box"><span class="label">Price</span><span class="price">$89,500</span></div>
    <div class="payment">Est. $1,299/mo</div>
    <dl><dt>VIN</dt><dd>WP0AB2A93GS123456</dd><dt>Mileage</dt><dd>21,400 miles</dd>
    <dt>Stock #</dt><dd>P1234</dd><dt>Exterior Color</dt><dd>GT Silver</dd></dl>
    <table><tr><th>Transmission</th><td>PDK</td></tr>\
<tr><th>Engine</th><td>3.0L Twin-Turbo H6</td></tr></table>
    <p>Drivetrain: RWD</p>
    <div class="gallery"><img data-src="https://cdn.dealer.com/photos/1.jpg?w=300"><img src="https://cdn.dealer.com/photos/2.jpg"></div>
    <section class="similar-vehicles"><a href="/used/2015-porsche-911-999999">\
<img src="https://cdn.dealer.com/photos/other.jpg"></a>\
<span class="price">$79,000</span></section>
    """
)


def test_plain_label_value_page():
    vin = "WP0AB2A93GS123456"
    assert not is_valid_vin(vin)  # made-up VIN with a wrong check digit must be dropped
    r = extract_page(LABELLED_VDP, "https://www.dealer.com/used/2016-porsche-911-123456")
    v = r.vehicle
    assert v is not None
    assert (v.year, v.make, v.model, v.trim) == (2016, "Porsche", "911", "Carrera S")
    assert v.vin is None
    assert v.asking_price == Decimal(89500) and v.currency == "USD"
    assert (v.mileage, v.mileage_unit) == (21400, "mi")
    assert v.stock_number == "P1234"
    assert v.color == "GT Silver" and v.transmission == "PDK" and v.drivetrain == "RWD"
    assert v.engine == "3.0L Twin-Turbo H6"
    assert v.image_urls == [
        "https://cdn.dealer.com/photos/1.jpg",
        "https://cdn.dealer.com/photos/2.jpg",
    ]
    assert r.vehicle_links == ["https://www.dealer.com/used/2015-porsche-911-999999"]


def test_valid_vin_in_label_kept():
    html = LABELLED_VDP.replace("WP0AB2A93GS123456", "1GCPTCE11K1220169")
    assert (
        extract_page(html, "https://www.dealer.com/used/x-123456").vehicle.vin
        == "1GCPTCE11K1220169"
    )


@pytest.mark.parametrize(
    "marker",
    ["<div class='badge'>SOLD</div>", "<span class='status-sold'>x</span>", "<p>Sale Pending</p>"],
)
def test_sold_markers(marker):
    html = LABELLED_VDP.replace("<h1>", marker + "<h1>")
    v = extract_page(html, "https://www.dealer.com/used/x-123456").vehicle
    assert v.sale_status in ("sold", "pending")
    assert v.sale_status == ("pending" if "Pending" in marker else "sold")


def test_blog_post_is_not_a_listing():
    html = _html(
        "<h1>5 tips for buying your first car</h1>"
        "<p>Shop around. Compare prices like $20,000 vs $25,000.</p>"
        "<a href='/blog/next-post'>next</a>"
    )
    r = extract_page(html, "https://www.dealer.com/blog/first-car-tips")
    assert r.vehicle is None and r.skip_reason == "not_a_listing" and not r.needs_js


def test_missing_year_make():
    html = _html(
        "<h1>Great truck for sale</h1><dl><dt>VIN</dt><dd>1GCPTCE11K1220169</dd>"
        "<dt>Mileage</dt><dd>10,000</dd><dt>Price</dt><dd>$20,000</dd></dl>"
    )
    r = extract_page(html, "https://www.dealer.com/used/truck-123456")
    assert r.vehicle is None and r.skip_reason == "missing_year_make"


def test_jsonld_graph_vehicle():
    data = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebPage", "name": "2020 Honda Civic EX | Dealer"},
            {"@type": "AutoDealer", "name": "Dealer", "image": "https://x.com/dealer.jpg"},
            {
                "@type": ["Car", "Product"],
                "name": "2020 Honda Civic EX",
                "vehicleIdentificationNumber": "2HGFC1F39LH000001",
                "brand": {"@type": "Brand", "name": "Honda"},
                "model": "Civic",
                "vehicleConfiguration": "EX",
                "vehicleModelDate": "2020",
                "mileageFromOdometer": {
                    "@type": "QuantitativeValue",
                    "value": "12000",
                    "unitCode": "KMT",
                },
                "color": "Red",
                "image": ["https://x.com/c1.jpg", "https://x.com/c2.jpg"],
                "offers": {
                    "@type": "Offer",
                    "price": "21500",
                    "priceCurrency": "CAD",
                    "availability": "https://schema.org/SoldOut",
                },
            },
        ],
    }
    html = _html(
        "<h1>2020 Honda Civic EX</h1>",
        f'<script type="application/ld+json">{json.dumps(data)}</script>',
    )
    v = extract_page(html, "https://x.ca/vehicle/123").vehicle
    assert (v.year, v.make, v.model, v.trim, v.color) == (2020, "Honda", "Civic", "EX", "Red")
    assert v.vin is None or is_valid_vin(v.vin)
    assert (v.mileage, v.mileage_unit) == (12000, "km")
    assert v.asking_price == Decimal(21500) and v.currency == "CAD"
    assert v.sale_status == "sold"
    assert v.image_urls[:2] == ["https://x.com/c1.jpg", "https://x.com/c2.jpg"]
    assert "structured" in v.sources


def test_jsonld_itemlist_of_cars():
    items = [
        {
            "@type": "ListItem",
            "position": i,
            "item": {
                "@type": "Car",
                "name": f"201{i} Ford Focus SE",
                "url": f"/inventory/ford/focus/10000{i}/",
                "offers": {"price": 9000 + i, "priceCurrency": "USD"},
            },
        }
        for i in range(3)
    ]
    data = {"@context": "https://schema.org", "@type": "ItemList", "itemListElement": items}
    html = _html(
        "<h1>Used inventory</h1>", f'<script type="application/ld+json">{json.dumps(data)}</script>'
    )
    r = extract_page(html, "https://www.dealer.com/inventory/")
    assert r.vehicle is None and r.skip_reason == "inventory_page"
    assert [i.url for i in r.listings] == [
        f"https://www.dealer.com/inventory/ford/focus/10000{i}/" for i in range(3)
    ]
    assert [i.asking_price for i in r.listings] == [Decimal(9000), Decimal(9001), Decimal(9002)]
    assert r.listings[1].year == 2011 and r.listings[1].make == "Ford"


def test_microdata_vehicle():
    html = _html(
        """<div itemscope itemtype="https://schema.org/Car">
        <h1 itemprop="name">2018 Subaru Outback 2.5i Premium</h1>
        <span itemprop="vehicleIdentificationNumber">4S4BSAFC5J3000001</span>
        <div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
          <meta itemprop="priceCurrency" content="USD">\
<span itemprop="price" content="18995">$18,995</span></div>
        <div itemprop="mileageFromOdometer" itemscope itemtype="https://schema.org/QuantitativeValue">
          <meta itemprop="value" content="45000"><meta itemprop="unitCode" content="SMI"></div>
        </div>"""
    )
    v = extract_page(html, "https://x.com/vehicle/555555").vehicle
    assert (v.year, v.make, v.model) == (2018, "Subaru", "Outback")
    assert v.asking_price == Decimal(18995) and v.currency == "USD"
    assert (v.mileage, v.mileage_unit) == (45000, "mi")


def test_jsonld_dealer_only_is_not_a_vehicle():
    data = {
        "@context": "https://schema.org",
        "@type": "AutoDealer",
        "name": "2020 Cars LLC",
        "image": "https://x.com/a.jpg",
    }
    html = _html(
        "<h1>Welcome</h1>", f'<script type="application/ld+json">{json.dumps(data)}</script>'
    )
    r = extract_page(html, "https://x.com/")
    assert r.vehicle is None and r.skip_reason == "not_a_listing"


def test_broken_jsonld_is_ignored():
    html = _html(
        "<h1>2010 Toyota Camry LE</h1><p>Price: $7,995</p>",
        '<script type="application/ld+json">{"@type": "Car", </script>',
    )
    v = extract_page(html, "https://x.com/used/2010-toyota-camry-1").vehicle
    assert v.asking_price == Decimal(7995)


# --- selectors ----------------------------------------------------------------------------------


def test_per_org_selectors():
    html = _html(
        """<div class="hdr">Big Sale!</div>\
<div class="car-name">2011 Mazda MX-5 Miata Grand Touring</div>
        <div class="amt">USD 12,900</div><div class="odo">88,000</div>\
<div class="serial">JM1NC2PF0B0000001</div>
        <div class="stk">Stock: A77</div>\
<ul class="pics"><li><img src="/p/1.jpg"></li><li><img src="/p/2.jpg"></li></ul>
        <a class="vdp" href="/car?id=1">x</a><a class="vdp" href="/car?id=2">y</a>\
<a class="more" href="/list?pg=2">more</a>"""
    )
    sel = {
        "title": ".car-name",
        "price": ".amt",
        "mileage": ".odo",
        "vin": ".serial",
        "stock": ".stk",
        "images": ".pics img",
        "vehicle_link": "a.vdp",
        "next_page": "a.more",
    }
    r = extract_page(html, "https://shop.example.org/car?id=9", selectors=sel)
    v = r.vehicle
    assert (v.year, v.make, v.model) == (2011, "Mazda", "MX-5 Miata")  # data/models.json
    assert v.asking_price == Decimal(12900) and v.currency == "USD"
    assert v.mileage == 88000 and v.stock_number == "A77"
    assert v.image_urls == ["https://shop.example.org/p/1.jpg", "https://shop.example.org/p/2.jpg"]
    assert r.vehicle_links == [
        "https://shop.example.org/car?id=1",
        "https://shop.example.org/car?id=2",
    ]
    assert r.next_pages == ["https://shop.example.org/list?pg=2"]


def test_invalid_selector_ignored():
    r = extract_page(
        _html("<h1>2010 Toyota Camry</h1><p>Price: $5,000</p>"),
        "https://x.com/used/2010-toyota-camry-9",
        selectors={"price": "div[[["},
    )
    assert r.vehicle.asking_price == Decimal(5000)


# --- links and pagination -------------------------------------------------------------------------

INVENTORY = _html(
    """<h1>Used Vehicles</h1>
    <div class="card"><a href="/used/2019-honda-civic-111111"><img src="/photos/a.jpg"></a>\
<h3><a href="/used/2019-honda-civic-111111">2019 Honda Civic LX</a></h3>\
<span class="price">$15,000</span><span>32,000 mi</span></div>
    <div class="card"><a href="/used/2018-ford-f-150-222222?utm_source=x">2018 Ford F-150 XLT</a>\
<span class="price">$25,500</span></div>
    <div class="card"><a href="/used/2018-ford-f-150-222222#gallery">photos</a></div>
    <div class="card">\
<a href="https://other-site.com/used/2017-kia-soul-333333">2017 Kia Soul</a></div>
    <a href="/blog/2019-honda-civic-review">review</a><a href="/finance">Finance</a>
    <nav class="pagination"><a href="?page=1">1</a><a href="?page=2">2</a><a href="?page=3">3</a>\
<a rel="next" href="?page=2">Next</a></nav>"""
)


def test_inventory_links_cards_and_pagination():
    r = extract_page(INVENTORY, "https://www.dealer.com/used-vehicles/")
    assert r.vehicle is None and r.skip_reason == "inventory_page"
    assert r.vehicle_links == [
        "https://www.dealer.com/used/2019-honda-civic-111111",
        "https://www.dealer.com/used/2018-ford-f-150-222222",
    ]
    assert [(i.year, i.make, i.asking_price) for i in r.listings] == [
        (2019, "Honda", Decimal(15000)),
        (2018, "Ford", Decimal(25500)),
    ]
    assert r.listings[0].mileage == 32000
    assert r.next_pages == [
        "https://www.dealer.com/used-vehicles/?page=2",
        "https://www.dealer.com/used-vehicles/?page=3",
    ]


def test_cards_false_keeps_the_card_urls_only():
    full = extract_page(INVENTORY, "https://www.dealer.com/used-vehicles/")
    light = extract_page(INVENTORY, "https://www.dealer.com/used-vehicles/", cards=False)
    assert light.skip_reason == "inventory_page"
    assert light.vehicle_links == full.vehicle_links and light.next_pages == full.next_pages
    assert [i.url for i in light.listings] == [i.url for i in full.listings]
    assert all(
        i.year is None and i.asking_price is None and not i.image_urls for i in light.listings
    )
    # structured cards cost little and stay whole
    items = [
        {
            "@type": "ListItem",
            "position": i,
            "item": {
                "@type": "Car",
                "name": f"201{i} Ford Focus SE",
                "url": f"/inventory/ford/focus/10000{i}/",
                "offers": {"price": 9000 + i},
            },
        }
        for i in range(3)
    ]
    data = {"@context": "https://schema.org", "@type": "ItemList", "itemListElement": items}
    html = _html(
        "<h1>Used inventory</h1>", f'<script type="application/ld+json">{json.dumps(data)}</script>'
    )
    structured = extract_page(html, "https://www.dealer.com/inventory/", cards=False).listings
    assert [(i.year, i.asking_price) for i in structured] == [
        (2010 + i, Decimal(9000 + i)) for i in range(3)
    ]


def test_pagination_only_greater_pages():
    r = extract_page(INVENTORY, "https://www.dealer.com/used-vehicles/?page=2")
    assert r.next_pages == ["https://www.dealer.com/used-vehicles/?page=3"]
    html = _html(
        '<a href="/inventory/page/3/">3</a><a href="/inventory/page/1/">1</a>'
        '<link rel="next" href="/inventory/page/3/">'
    )
    r = extract_page(html, "https://x.com/inventory/page/2/")
    assert r.next_pages == ["https://x.com/inventory/page/3/"]


@pytest.mark.parametrize(
    "url,expected",
    [
        (
            "https://x.com/new/Toyota/2025-Toyota-4Runner-Logan-UT-1d1095e3ac183d5c6d318c5bb8295c6e.htm",
            True,
        ),
        ("https://x.com/used-fiat-500c-barnoldswick-lancashire-7454128", True),
        ("https://x.com/inventory/ram/2500-crew-cab/343106/", True),
        ("https://x.com/vehicle-details/used-2019-honda-civic", True),
        ("https://x.com/inventory/1GCPTCE11K1220169", True),
        ("https://x.com/inventory/", False),
        ("https://x.com/search/honda/s2000", False),
        ("https://x.com/cars-for-sale/Toyota/Tacoma", False),
        ("https://x.com/blog/2019-honda-civic-review-123456", False),
        ("https://x.com/finance/apply", False),
        ("https://x.com/photos/2019-honda-civic-123456.jpg", False),
    ],
)
def test_looks_like_vehicle_url(url, expected):
    assert looks_like_vehicle_url(url) is expected


def test_discover_inventory_links():
    html = _html(
        """<nav><a href="/">Home</a><a href="/about-us">About</a><a href="/finance">Finance</a>
        <a href="/used-vehicles/">Used Cars</a><a href="/new-inventory/index.htm">New Inventory</a>
        <a href="/used-vehicles/?make=Ford">Used Fords</a><a href="/specials">Specials</a>
        <a href="https://other.com/inventory/">Partner inventory</a><a href="/shop">Shop</a>
        <a href="/used/2019-honda-civic-111111">2019 Civic</a></nav>"""
    )
    links = discover_inventory_links(html, "https://www.dealer.com/")
    assert links[:2] == [
        "https://www.dealer.com/used-vehicles/",
        "https://www.dealer.com/new-inventory/index.htm",
    ]
    assert "https://www.dealer.com/shop" in links
    assert "https://www.dealer.com/used-vehicles/?make=Ford" in links
    assert not any(
        "other.com" in u or "finance" in u or "civic" in u or "about" in u for u in links
    )
    assert "/inventory/" in COMMON_INVENTORY_PATHS and "/used-vehicles/" in COMMON_INVENTORY_PATHS


def test_js_shell_generic():
    html = _html(
        '<div id="root"></div><script src="/app.js"></script>', "<title>Used Cars for Sale</title>"
    )
    r = extract_page(html, "https://x.com/used-cars/")
    assert r.skip_reason == "js_shell" and r.needs_js and r.vehicle is None


def test_bytes_input_and_encoding():
    html = (
        "<html><head><meta charset='windows-1252'><title>x</title></head>"
        "<body><h1>2010 Citroën C4 Exclusive</h1>"
        "<p>Preis: 4.990 €</p><p>Kilometerstand: 120.000 km</p></body></html>"
    ).encode("cp1252")
    v = extract_page(html, "https://x.fr/voiture/2010-citroen-c4-123456").vehicle
    assert (v.year, v.make, v.model) == (2010, "Citroen", "C4")
    assert v.asking_price == Decimal(4990) and v.currency == "EUR"
    assert (v.mileage, v.mileage_unit) == (120000, "km")


def test_small_vdp_speed():
    """A ~30 KB dealer VDP extracts in a few milliseconds."""
    filler = "".join(
        f"<li class='feature'>Feature number {i} with some descriptive text</li>"
        for i in range(400)
    )
    html = LABELLED_VDP.replace("</body>", f"<ul>{filler}</ul></body>")
    assert 25_000 < len(html) < 40_000
    extract_page(html, "https://www.dealer.com/used/2016-porsche-911-123456")
    # CPU time, the best of four rounds: other processes on a busy machine (the suite's
    # own servers, a parallel job) take wall time, not this thread's CPU time.
    rounds = []
    for _ in range(4):
        t = time.thread_time()
        for _ in range(5):
            extract_page(html, "https://www.dealer.com/used/2016-porsche-911-123456")
        rounds.append((time.thread_time() - t) / 5)
    per_page = min(rounds)
    assert per_page < 0.02, rounds


def test_links_laid_out_like_vehicle_links_are_vehicle_links():
    known = {
        "https://d.example/vehicle/2005-jeep-wrangler-10016/",
        "https://d.example/vehicle/2014-honda-cr-v-10004/",
    }
    others = [
        "https://d.example/vehicle/beautiful-convertible-must-see-10017/",  # taken
        "https://d.example/vehicle/compare/",  # no listing id
        "https://d.example/blog/spring-sale-20240/",  # another template
        "https://d.example/vehicle/2/finance/10018/",  # another depth
        "https://d.example/vehicle/photo-10019.jpg",
    ]  # another template (extension)
    assert sibling_vehicle_urls(known, others) == {others[0]}
    # one known vehicle link is not a pattern
    assert sibling_vehicle_urls(list(known)[:1], others) == set()


SPLIT_CASES = [
    "https://cdn.example.com/photos/1.jpg",
    "http://127.0.0.2:8080/img/a-1.jpg?w=300&id=5#frag",
    "https://user:pw@Photos.Example.COM:443/x/Y.JPG",
    "https://host?only=query",
    "https://host#only-fragment",
    "https://host",
    "http://:80/no-host.jpg",
    "https://host/a?b?c#d#e",
    "https://host/with space.jpg",
    "https://host/tab\there.jpg",
    "https://[::1]:8080/v6.jpg",
    "https://hôte.example/ü.jpg",
    "HTTPS://UPPER.example.com/a.jpg",
    "ftp://host/a.jpg",
    "//host/protocol-relative.jpg",
]


@pytest.mark.parametrize("url", SPLIT_CASES)
def test_the_plain_url_fast_path_agrees_with_urlsplit(url: str) -> None:
    from urllib.parse import urlsplit

    from nuke_crawl.extraction.images import _split_http

    fast = _split_http(url)
    if fast is None:  # left to urlsplit itself
        assert any(c in url for c in " \t[ôü") or not url.startswith(("http://", "https://"))
        return
    parts = urlsplit(url)
    assert fast == (
        parts.scheme,
        parts.netloc,
        parts.path,
        parts.query,
        (parts.hostname or "").lower(),
    )


def test_clean_image_urls_gives_the_same_result_through_either_split() -> None:
    from unittest import mock

    from nuke_crawl.extraction import images

    urls = [u for u in SPLIT_CASES if "://" in u] + [
        "https://cdn.x.com/a.jpg?w=300&h=200&fit=crop&quality=70&id=5",
        "https://media.x.com/cdn-cgi/image/width=542,quality=70/abc/photo.jpg",
        "https://x.com/wp-content/uploads/2024/01/car-1024x768.jpg",
        "https://images.craigslist.org/00q0q_abc_300x300.jpg",
        "https://px.example.com/t.gif?w=1&h=1",
    ]
    fast = clean_image_urls(urls, BASE)
    with mock.patch.object(images, "_split_http", lambda url: None):
        assert clean_image_urls(urls, BASE) == fast
    assert "https://user:pw@photos.example.com:443/x/Y.JPG" in fast  # host lowercased
    assert "https://images.craigslist.org/00q0q_abc_1200x900.jpg" in fast
    assert not any("px.example.com" in u or "ftp:" in u for u in fast)


def test_a_page_comes_back_with_its_de_duplication_key() -> None:
    url = "HTTPS://Dealer.Example.com/used/2019-honda-civic-123456?utm_source=x&b=2&a=1#top"
    html = (
        "<html><head><title>2019 Honda Civic</title></head><body><h1>2019 Honda Civic</h1>"
        "<p>Price: $18,500</p></body></html>"
    )
    result = extract_page(html, url)
    assert result.canonical_url == canonical_listing_url(url)
    assert result.canonical_url == "https://dealer.example.com/used/2019-honda-civic-123456?a=1&b=2"


def test_text_content_is_lxmls_own() -> None:
    from nuke_crawl.extraction.page import Page, text_content

    page = Page(
        "<html><head><title> A &amp; B </title></head><body>"
        "<h1>x<!-- hidden -->y<?pi z?><b>&nbsp;caf\u00e9</b>tail<script>s()</script></h1>after"
        "<a href='/p/2'> Next <span>\u203a</span></a><p></p></body></html>",
        "https://dealer.example/",
    )
    for el in page.tree.iter():
        if isinstance(el.tag, str):
            assert text_content(el) == el.text_content(), el.tag


def test_decoys_found_through_class_and_id_values() -> None:
    from nuke_crawl.extraction.page import Page

    page = Page(
        "<html><body><h1>2019 Honda Civic</h1>"
        "<div class='gallery'><img src='/a.jpg'></div>"
        "<section class='similar-vehicles'><a href='/v/1'>2018 Honda Civic</a></section>"
        # a class and an id that make a decoy only together ("recently viewed")
        "<div class='recently' id='viewed'><a href='/v/2'>x</a></div>"
        "<div id='footer-links'><a href='/about'>About</a></div>"
        "<div class='related'><h1>its own h1: not a decoy</h1></div>"
        "<nav><a href='/'>Home</a></nav><footer>c</footer></body></html>",
        "https://dealer.example/v/3",
    )
    names = sorted((el.tag, el.get("class") or el.get("id") or "") for el in page.decoys)
    assert names == [
        ("div", "footer-links"),
        ("div", "recently"),
        ("footer", ""),
        ("nav", ""),
        ("section", "similar-vehicles"),
    ]
    plain = Page(
        "<html><body><div class='specs'><h1>x</h1></div></body></html>",
        "https://dealer.example/v/4",
    )
    assert plain.decoys == []
