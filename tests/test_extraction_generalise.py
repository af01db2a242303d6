"""Extraction on pages of shapes no site adapter knows (issue 13): embedded state, data-*
attributes, label/value pairs in six languages, mileage in titles, VIN cross-checks, app
shells by structure, currencies and sold prices."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from nuke_crawl.extraction import extract_page
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.state import has_state_hint, state_vehicles
from nuke_crawl.extraction.text import parse_price
from nuke_crawl.extraction.vin import vin_make, vin_years

URL = "https://autos.example.com/listing/2019-chevrolet-colorado-lt-7831968361"
VIN = "1GCPTCE11K1220169"  # a real 2019 Chevrolet Colorado


def page(head: str = "", body: str = "", title: str = "2019 Chevrolet Colorado LT | Autos") -> str:
    return f"<html><head><title>{title}</title>{head}</head><body>{body}</body></html>"


VEHICLE = {
    "year": 2019,
    "make": {"name": "Chevrolet"},
    "model": "Colorado",
    "trim": "LT",
    "vin": VIN,
    "price": {"amount": 24998, "currency": "USD"},
    "mileage": {"value": 78143, "unit": "mi"},
    "stockNumber": "K1220169",
    "exteriorColor": "Red",
    "id": 7831968361,
    "photos": [{"url": f"https://img.example.com/p/{i}.jpg"} for i in range(3)],
}
OTHER = {
    "year": 2021,
    "make": "Ford",
    "model": "Ranger",
    "vin": "1FTER4FH5MLD12345",
    "price": 31000,
    "id": 9000001,
}
H1 = "<h1>2019 Chevrolet Colorado LT</h1>"


def _state_pages() -> dict[str, str]:
    blob = json.dumps({"props": {"pageProps": {"listing": VEHICLE, "similar": [OTHER]}}})
    escaped = json.dumps(json.dumps({"listing": VEHICLE})).replace('"', "&quot;")
    return {
        "next_data": page(
            body=H1 + f'<script id="__NEXT_DATA__" type="application/json">{blob}</script>'
        ),
        "initial_state": page(body=H1 + f"<script>window.__INITIAL_STATE__ = {blob};</script>"),
        "preloaded_single_quotes": page(
            body=H1 + f"<script>var __PRELOADED_STATE__={blob}\nfoo()</script>"
        ),
        "json_parse": page(
            body=H1
            + "<script>window.s = JSON.parse("
            + json.dumps(json.dumps({"v": VEHICLE}))
            + ");</script>"
        ),
        "apollo": page(
            body=H1
            + "<script>window.__APOLLO_STATE__ = "
            + json.dumps(
                {"ROOT_QUERY": {"x": 1}, "Vehicle:7831968361": {"__typename": "Vehicle", **VEHICLE}}
            )
            + "</script>"
        ),
        "hydrate_argument": page(body=H1 + f"<script>ReactDOM.hydrate(App, {blob}, el)</script>"),
        "data_json_attribute": page(
            body=H1
            + f"<div data-json={escaped[6:-6].join(['&quot;', '&quot;'])!s}></div>".replace(
                "data-json=", 'data-json="'
            ).replace("></div>", '"></div>')
        ),
        "custom_element": page(
            body=H1 + f"<cars-data-broker key='listing'>{blob}</cars-data-broker>"
        ),
    }


@pytest.mark.parametrize("kind", list(_state_pages()))
def test_the_pages_own_vehicle_from_embedded_state(kind: str) -> None:
    html = _state_pages()[kind]
    if kind == "data_json_attribute":  # HTML-escaped JSON in an attribute
        html = page(
            body=H1
            + '<div data-json="'
            + json.dumps({"listing": VEHICLE}).replace('"', "&quot;")
            + '"></div>'
        )
    r = extract_page(html, URL)
    v = r.vehicle
    assert v is not None, r.skip_reason
    assert (v.year, v.make, v.model, v.trim, v.vin) == (2019, "Chevrolet", "Colorado", "LT", VIN)
    assert v.asking_price == Decimal(24998) and v.currency == "USD"
    assert (v.mileage, v.mileage_unit, v.stock_number, v.color) == (78143, "mi", "K1220169", "Red")
    assert "state" in v.sources
    assert [u for u in v.image_urls if "img.example.com/p/" in u] == [
        f"https://img.example.com/p/{i}.jpg" for i in range(3)
    ]


def test_a_results_pages_state_gives_no_vehicle() -> None:
    cars = [dict(OTHER, id=9000000 + i, vin=None, year=2015 + i % 5) for i in range(6)]
    html = page(
        title="Used Ford Ranger for sale",
        body="<h1>Used Ford Ranger</h1><script>"
        f"window.__INITIAL_STATE__ = {json.dumps({'results': cars})}</script>",
    )
    r = extract_page(html, "https://autos.example.com/cars/ford/ranger")
    assert r.vehicle is None


def test_among_many_state_vehicles_the_one_whose_id_is_in_the_url() -> None:
    cars = [dict(OTHER, id=9000000 + i, vin=None) for i in range(5)] + [VEHICLE]
    html = page(
        title="Listing | Autos",
        body="<h1>Listing</h1><script>var data = "
        f"{json.dumps({'list': cars})};</script><p>$24,998</p>",
    )
    r = extract_page(html, URL)
    assert r.vehicle is not None and r.vehicle.vin == VIN and r.vehicle.year == 2019


def test_no_state_hint_no_script_parsed() -> None:
    p = Page(page(body="<h1>2019 Chevrolet Colorado</h1><script>var a = {b: 1};</script>"), URL)
    assert not has_state_hint(p) and state_vehicles(p) == []


def test_jsonld_with_nulls_filled_from_data_attributes_and_inline_json() -> None:
    ld = {
        "@context": "https://schema.org",
        "@type": "Car",
        "name": "2019 Chevrolet Colorado LT",
        "vehicleIdentificationNumber": None,
        "mileageFromOdometer": None,
        "offers": None,
    }
    html = page(
        head=f'<script type="application/ld+json">{json.dumps(ld)}</script>',
        body=H1 + f"<div class='vdp' data-vin='{VIN}' data-year='2019' data-make='Chevrolet'"
        " data-model='Colorado' data-price='24998' data-mileage='78143'></div>"
        '<script>var dl = {"vin": "' + VIN + '", "make": "Chevrolet", "year": 2019};</script>',
    )
    v = extract_page(html, URL).vehicle
    assert v is not None and v.vin == VIN and v.mileage == 78143
    assert v.asking_price == Decimal(24998)


def test_data_attributes_of_decoy_cards_are_not_the_pages() -> None:
    html = page(
        body=H1 + "<p>Price: $24,998</p><div class='similar-vehicles'>"
        "<div data-vin='1FTER4FH5MLD12345' data-make='Ford' data-year='2021'></div></div>"
    )
    v = extract_page(html, URL).vehicle
    assert v is not None and v.vin is None and v.make == "Chevrolet"


@pytest.mark.parametrize(
    "body, want",
    [
        (
            "<dl><dt>Erstzulassung</dt><dd>08/2019</dd><dt>Kilometerstand</dt><dd>12.500 km</dd>"
            "<dt>Kraftstoff</dt><dd>Benzin</dd><dt>Preis</dt><dd>23.990 €</dd></dl>",
            (12500, "km", Decimal(23990), "EUR"),
        ),
        (
            "<table><tr><th>Bouwjaar</th><td>2019</td></tr>"
            "<tr><th>Tellerstand</th><td>45.000 km</td></tr>"
            "<tr><th>Vraagprijs</th><td>€ 19.950</td></tr></table>",
            (45000, "km", Decimal(19950), "EUR"),
        ),
        (
            "<ul><li>Kilométrage : 45 000 km</li><li>Année : 2019</li>"
            "<li>Prix : 14 000 €</li></ul>",
            (45000, "km", Decimal(14000), "EUR"),
        ),
        (
            "<ul><li>Kilometraje: 60.000 km</li><li>Año: 2019</li><li>Precio: 15.500 €</li></ul>",
            (60000, "km", Decimal(15500), "EUR"),
        ),
        (
            "<div><span class='label'>Chilometraggio</span>"
            "<span class='value'>30.000 km</span></div>"
            "<div><span class='label'>Prezzo</span><span class='value'>€ 21.000</span></div>",
            (30000, "km", Decimal(21000), "EUR"),
        ),
        (
            "<p>Odometer: 78,143 miles</p><p>Asking price: $24,998</p>",
            (78143, "mi", Decimal(24998), "USD"),
        ),
    ],
)
def test_spec_labels_in_six_languages(body: str, want: tuple) -> None:
    v = extract_page(page(body=H1 + body, title="2019 Chevrolet Colorado"), URL).vehicle
    assert v is not None
    assert (v.mileage, v.mileage_unit, v.asking_price, v.currency) == want


@pytest.mark.parametrize(
    "title, mileage",
    [
        ("31k-Mile 2004 Porsche 911 Carrera", 31000),
        ("6k Miles: 2019 Porsche 911 GT3", 6000),
        ("2015 Porsche 911 Carrera S - 42,000 miles", 42000),
    ],
)
def test_mileage_in_titles(title: str, mileage: int) -> None:
    html = page(title=title, body=f"<h1>{title}</h1><p>Price: $89,500</p>")
    v = extract_page(html, "https://cars.example.com/listing/porsche-911-1").vehicle
    assert v is not None and (v.mileage, v.mileage_unit) == (mileage, "mi")


def test_vin_decoding() -> None:
    assert vin_make(VIN) == "Chevrolet" and vin_years(VIN) == [2019]
    assert vin_make("WDDSJ4EB1HN424394") == "Mercedes-Benz"
    assert vin_make("KMHTC6AD6CU023817") == "Hyundai"
    assert vin_years("JT2AE92W3K3290563") == [1989, 2019]  # outside North America: ambiguous
    assert vin_make("1GCPTCE12K1220169") is None and vin_years("bad") == []


def test_vin_fills_a_missing_make_and_never_overrules_the_page() -> None:
    ld = {
        "@context": "https://schema.org",
        "@type": "Car",
        "name": "Colorado LT",
        "model": "Colorado",
        "vehicleIdentificationNumber": VIN,
        "modelDate": "2018",
        "offers": {"@type": "Offer", "price": "24998", "priceCurrency": "USD"},
    }
    html = page(
        title="Colorado LT",
        head=f'<script type="application/ld+json">{json.dumps(ld)}</script>',
        body="<h1>Colorado LT</h1>",
    )
    v = extract_page(html, URL).vehicle
    assert v is not None and v.make == "Chevrolet"  # filled from the WMI
    assert v.year == 2018  # the page says 2018: the VIN's 2019 does not overrule it


@pytest.mark.parametrize(
    "html",
    [
        "<html><head><title>Dealer</title><script src='/app.js'></script></head>"
        "<body><div id='app'></div></body></html>",
        '<html><head><title>Home</title></head><body><main id="root"></main>'
        "<script>boot()</script></body></html>",
        "<html><body><div data-reactroot=''></div><script src=x.js></script>"
        "<noscript>You need to enable JavaScript to run this app.</noscript></body></html>",
    ],
)
def test_app_shells_by_structure(html: str) -> None:
    r = extract_page(html, "https://dealer.example.com/")
    assert r.vehicle is None and r.skip_reason == "js_shell" and r.needs_js


def test_a_short_page_with_text_is_no_app_shell() -> None:
    html = (
        "<html><body><div id='app'><h1>Page not found</h1><p>"
        + "Sorry, this page is gone. " * 20
        + "</p></div><script>x()</script></body></html>"
    )
    r = extract_page(html, "https://dealer.example.com/missing")
    assert r.skip_reason == "not_a_listing" and not r.needs_js


@pytest.mark.parametrize(
    "text, host, want",
    [
        ("R 139 900", "www.autotrader.co.za", (Decimal(139900), "ZAR")),
        ("R$ 65.999", "sp.olx.com.br", (Decimal(65999), "BRL")),
        ("14 000 €", "www.leboncoin.fr", (Decimal(14000), "EUR")),
        ("CAD 21,500", "dealer.example.com", (Decimal(21500), "CAD")),
        ("$21,500", "dealer.example.ca", (Decimal(21500), "CAD")),
        ("Rent R5", "x.co.za", (None, None)),
    ],
)
def test_currencies(text: str, host: str, want: tuple) -> None:
    assert parse_price(text, host=host) == want


def test_a_state_price_without_symbol_takes_the_hosts_currency() -> None:
    state = {
        "listing": {
            "year": 2010,
            "make": "Toyota",
            "model": "Corolla",
            "price": 139900,
            "mileage": 81973,
            "id": 25411210,
        }
    }
    html = page(
        title="Toyota Corolla 1.6 Professional",
        body="<h1>2010 Toyota Corolla 1.6 Professional</h1>"
        f"<script>window.__INITIAL_STATE__ = {json.dumps(state)}</script>",
    )
    v = extract_page(
        html, "https://www.autotrader.co.za/car-for-sale/toyota/corolla/25411210"
    ).vehicle
    assert v is not None and v.asking_price == Decimal(139900) and v.currency == "ZAR"
    assert (v.mileage, v.mileage_unit) == (81973, "km")


def test_a_sold_auction_keeps_its_winning_bid_as_a_sold_price() -> None:
    html = page(
        title="2000 Honda S2000 | Auctions",
        body="<h1>2000 Honda S2000</h1>"
        "<div class='status'>SOLD</div><dl><dt>Winning Bid</dt><dd>$23,000</dd>"
        "<dt>VIN</dt><dd>JHMAP1140YT000726</dd><dt>Mileage</dt><dd>32,400</dd></dl>",
    )
    v = extract_page(html, "https://auctions.example.com/auctions/2000-honda-s2000").vehicle
    assert v is not None and v.sale_status == "sold"
    assert v.sold_price == Decimal(23000) and v.asking_price is None and v.currency == "USD"


def test_sold_for_in_the_title() -> None:
    html = page(
        title="1995 Porsche 911 Carrera sold for $87,000 on March 3",
        body="<h1>1995 Porsche 911 Carrera sold for $87,000 on March 3</h1><p>Mileage: 60,000</p>",
    )
    v = extract_page(html, "https://auctions.example.com/listing/1995-porsche-911").vehicle
    assert v is not None and v.sale_status == "sold" and v.sold_price == Decimal(87000)
    assert v.asking_price is None


def test_a_valuation_forms_inputs_are_not_a_listing() -> None:
    html = page(
        title="1998 Ford Explorer Values",
        body="<h1>1998 Ford Explorer</h1>"
        "<form><span>Mileage:</span><span>160,000</span><input type='hidden' name='v'></form>"
        "<p>Fair Purchase Price unavailable</p>",
    )
    r = extract_page(html, "https://values.example.com/ford/explorer/1998/")
    assert r.vehicle is None
