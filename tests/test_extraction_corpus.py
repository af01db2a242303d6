"""Every page of the shared real-page corpus against its manifest's ground truth.

The corpus lives in ``<repo>/../shared/corpus`` (override with ``NUKE_SHARED_DIR``,
the directory holding ``corpus/``). A missing corpus is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from bench.corpus_report import FALLBACK_URLS, extract_entry, is_junk, score_page
from nuke_crawl.extraction import extract_page, is_valid_vin

SHARED = Path(
    os.environ.get("NUKE_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared"
)
CORPUS = SHARED / "corpus" / "pages"
MANIFEST = CORPUS / "MANIFEST.json"


def _manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.fail(
            f"corpus manifest not found at {MANIFEST}; "
            "set NUKE_SHARED_DIR to the directory holding corpus/",
            pytrace=False,
        )
    return json.loads(MANIFEST.read_text())


def _pages() -> dict[str, dict]:
    try:
        return {p["file"]: p for p in json.loads(MANIFEST.read_text())["pages"]}
    except FileNotFoundError:
        return {}


PAGES = _pages()
ALL_PAGES = sorted(PAGES)
_CACHE: dict[str, object] = {}


def run(name: str, **kwargs):
    """extract_page on one corpus page (cached per kwargs)."""
    key = name + repr(sorted(kwargs.items()))
    if key not in _CACHE:
        entry = _manifest_entry(name)
        url = entry["page_url"] or FALLBACK_URLS[name]
        _CACHE[key] = extract_page((CORPUS / name).read_bytes(), url, **kwargs)
    return _CACHE[key]


def _manifest_entry(name: str) -> dict:
    pages = {p["file"]: p for p in _manifest()["pages"]}
    assert name in pages, f"{name} missing from the manifest"
    return pages[name]


def test_corpus_present_and_every_page_covered():
    m = _manifest()
    files = {p["file"] for p in m["pages"]}
    assert len(files) == m["count"] == len(m["pages"]) >= 28
    for f in files:
        assert (CORPUS / f).is_file(), f
    # every manifest page is scored field by field (test_every_field_of_the_truth), and
    # every page with a dedicated test below is in the manifest
    assert set(ALL_PAGES) == files
    assert set(COVERED) <= files
    assert set(KNOWN_WRONG) <= files


def _check_vdp(name: str, gt: dict, r) -> None:
    v = r.vehicle
    assert v is not None, r.skip_reason
    assert r.skip_reason is None
    assert v.url == (_manifest_entry(name)["page_url"] or FALLBACK_URLS[name])
    assert v.year == gt["year"]
    assert v.make == gt["make"]
    assert v.model == gt["model"]
    if gt.get("trim") is None:
        assert v.trim is None
    assert v.vin == gt["vin"]
    if gt.get("price") is None:
        assert v.asking_price is None
    else:
        assert v.asking_price == Decimal(gt["price"])
    if "currency" in gt:
        assert v.currency == gt["currency"]
    assert v.mileage == gt["mileage"]
    assert v.mileage_unit == gt.get("mileage_unit")


# --- detail pages -------------------------------------------------------------------------


def test_craigslist_vdp():
    name = "craigslist-ctd-2019-chevrolet-colorado-lt.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    _check_vdp(name, gt, r)
    # ground truth trim is prose "LT (Crew Cab, diesel 4x4)": the core trim is "LT"
    assert r.vehicle.trim == "LT"
    assert r.vehicle.stock_number == gt["stock"]
    assert len(r.vehicle.image_urls) == gt["photos"] == 22
    assert all(u.endswith("_1200x900.jpg") for u in r.vehicle.image_urls)
    assert r.vehicle.registration is None
    assert r.vehicle_links == [] and r.next_pages == []


def test_carsandbids_auction():
    name = "auction-carsandbids-2000-honda-s2000.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    _check_vdp(name, gt, r)
    v = r.vehicle
    assert v.sale_status == "auction"  # $23,000 is the live high bid, not a sale price
    assert v.location == gt["location"]
    # the gallery claims 79 photos; only photos_in_dom are in the HTML
    assert len(v.image_urls) == gt["photos_in_dom"] == 9
    assert all("media.carsandbids.com" in u and "cdn-cgi" not in u for u in v.image_urls)
    assert v.stock_number is None and v.registration is None


def test_autoscout24_marketplace():
    name = "marketplace-autoscout24-de-bmw-i4.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    _check_vdp(name, gt, r)
    # modelVersionInput is "eDrive40 Gran Coupé DAB Tempomat Klimaaut.": starts with the core trim
    assert r.vehicle.trim.startswith(gt["trim"])
    assert len(r.vehicle.image_urls) == gt["photos"] == 22
    assert r.vehicle.registration is None and r.vehicle.stock_number is None
    assert r.vehicle_links == []


def test_clickdealer_uk_vdp():
    name = "vdp-uk-clickdealer-anyvehicle-2014-fiat-500c.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    _check_vdp(name, gt, r)
    v = r.vehicle
    assert v.trim.startswith(gt["trim"])  # "1.2 Lounge Euro 6 (s/S) 2dr"
    assert v.registration == gt["registration"]
    assert v.asking_price == Decimal(4995)  # not the £109.22 monthly figure nor the £149 fee
    assert len(v.image_urls) == gt["photos"] == 34
    # no thumbnails of the ~10 other stock vehicles (decoys)
    assert all("/vehicles/7454/7454128/" in u for u in v.image_urls)
    assert v.interior_color is None  # "Interior" there heads a feature list
    assert len(r.vehicle_links) == 10  # the similar-vehicles strip, still worth following


def test_fantasyjunction_classic_vdp():
    name = "vdp-classic-fantasyjunction-1956-ford-thunderbird.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    _check_vdp(name, gt, r)  # includes the pre-1981 short serial as vin
    v = r.vehicle
    assert not is_valid_vin(v.vin)
    assert v.stock_number == gt["stock"]
    assert v.color == "Colonial White"
    # ~75 medium thumbnails link to xlarge originals: capped at max_images by default
    assert len(v.image_urls) == 50
    assert all("/img/cars/xlarge/" in u for u in v.image_urls)
    all_images = run(name, max_images=500).vehicle.image_urls
    assert len(all_images) == 75
    assert len(set(all_images)) == 75


def test_autorevo_vdp_with_similar_vehicles_decoys():
    name = "vdp-autorevo-vipmotors-1999-cadillac-deville-hearse.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    _check_vdp(name, gt, r)
    v = r.vehicle
    assert v.trim == gt["trim"]
    assert v.asking_price == Decimal(4573)  # not $5,493 from "Similar Vehicles"
    assert v.mileage is None  # "0 miles" belongs to the similar vehicles
    assert v.stock_number == gt["stock"]
    assert len(v.image_urls) == gt["photos"] == 40
    assert all("5059827" in u for u in v.image_urls)
    assert len(r.vehicle_links) == 5


# --- results pages -----------------------------------------------------------------------


def test_craigslist_search_results_without_links():
    name = "craigslist-newyork-cta-search-results.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    assert r.vehicle is None and r.skip_reason == "inventory_page"
    assert len(r.listings) == gt["vehicle_count_jsonld"] == 299
    first = r.listings[0]
    assert first.title == gt["first_item"]["name"]
    assert (first.year, first.make, first.model) == (2009, "Hyundai", "Sonata")
    assert first.asking_price == Decimal(gt["first_item"]["price"])
    assert first.location == gt["first_item"]["locality"]
    # the ItemList has no per-listing URLs and no cards were rendered: nothing invented
    assert all(item.url is None for item in r.listings)
    assert r.vehicle_links == []


def test_autotrader_srp():
    name = "autotrader-com-srp-toyota-corolla-2020.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    assert r.vehicle is None and r.skip_reason == "inventory_page"
    assert len(r.listings) == gt["vehicle_count_jsonld"] == 28  # 25 rendered + 3 sponsored
    assert len(r.vehicle_links) == 28
    by_url = {item.url: item for item in r.listings}
    ex = by_url[gt["example"]["url"]]
    assert ex.vin == gt["example"]["vin"] and ex.asking_price == Decimal(gt["example"]["price"])
    assert (ex.year, ex.make, ex.model, ex.trim) == (2021, "Toyota", "Corolla", "L")
    outlier = next(i for i in r.listings if i.title == gt["outlier"]["name"])
    assert outlier.vin == gt["outlier"]["vin"]
    assert outlier.asking_price == Decimal(gt["outlier"]["price"])
    assert outlier.mileage == gt["outlier"]["mileage"]
    # the malformed VIN '5YFT4MCE6MP40B066' is never stored
    assert all(i.vin is None or is_valid_vin(i.vin) for i in r.listings)
    assert "5YFT4MCE6MP40B066" not in {i.vin for i in r.listings}
    assert sum(i.vin is None for i in r.listings) == 1
    assert gt["example"]["url"] in r.vehicle_links


def test_dealercenter_inventory_rendered_twice():
    name = "inventory-dealercenter-usautosofdallas.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    assert r.vehicle is None and r.skip_reason == "inventory_page"
    assert len(r.listings) == gt["vehicle_count"] == 15
    assert len(r.vehicle_links) == 15
    for item, want in zip(r.listings, gt["vehicles"], strict=True):
        assert item.vin == want["vin"]
        assert item.title == want["title"]
        assert item.asking_price == (
            Decimal(want["price"]) if want.get("price") is not None else None
        )
        assert item.mileage == want["mileage"]
    assert r.listings[0].url == "https://www.usautosofdallas.com" + gt["vehicles"][0]["vdp"]
    assert r.next_pages == ["https://www.usautosofdallas.com/inventory/?page_no=2"]


def test_dealercom_inventory():
    name = "inventory-dealercom-youngtoyota-new-4runner.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    assert r.vehicle is None and r.skip_reason == "inventory_page"
    assert len(r.listings) == gt["vehicle_count"] == 5
    for item, want in zip(r.listings, gt["vehicles"], strict=True):
        assert item.title.startswith(want["title"])  # DDC appends a model code (FT4WD)
        assert item.asking_price == Decimal(want["price"])  # not the MSRP
        assert item.color == want["color"]
        assert item.stock_number == want.get("stock")
        assert item.vin is None  # vins_in_html == 0
    prefix = gt["vdp_link_pattern"].split("<uuid>")[0]
    assert len(r.vehicle_links) == 5 and all(u.startswith(prefix) for u in r.vehicle_links)
    # generic OEM placeholder photos are not the vehicle's
    assert not any("OEM_VIN_STOCK" in u for i in r.listings for u in i.image_urls)


def test_clickdealer_inventory():
    name = "inventory-uk-clickdealer-anyvehicle.html"
    gt = _manifest_entry(name)["ground_truth"]
    r = run(name)
    assert r.vehicle is None and r.skip_reason == "inventory_page"
    assert len(r.listings) == gt["vehicle_count"] == 11
    assert len(r.vehicle_links) == 11
    ex = gt["example"]
    fiat = next(i for i in r.listings if i.url and i.url.endswith(ex["vdp"]))
    assert (fiat.year, fiat.make, fiat.model) == (2014, "Fiat", "500C")
    assert fiat.asking_price == Decimal(ex["price"])  # not the finance decoys
    assert fiat.currency == "GBP"
    assert fiat.mileage == ex["mileage"]
    assert all(i.asking_price is None or i.asking_price >= 1000 for i in r.listings)


def test_dealerinspire_js_shell():
    name = "inventory-dealerinspire-jaywolfe-4runner-jsonly.html"
    r = run(name)
    assert r.vehicle is None
    assert r.skip_reason == "js_shell" and r.needs_js is True
    assert r.listings == [] and r.vehicle_links == []


COVERED = [
    "craigslist-ctd-2019-chevrolet-colorado-lt.html",
    "auction-carsandbids-2000-honda-s2000.html",
    "marketplace-autoscout24-de-bmw-i4.html",
    "vdp-uk-clickdealer-anyvehicle-2014-fiat-500c.html",
    "vdp-classic-fantasyjunction-1956-ford-thunderbird.html",
    "vdp-autorevo-vipmotors-1999-cadillac-deville-hearse.html",
    "craigslist-newyork-cta-search-results.html",
    "autotrader-com-srp-toyota-corolla-2020.html",
    "inventory-dealercenter-usautosofdallas.html",
    "inventory-dealercom-youngtoyota-new-4runner.html",
    "inventory-uk-clickdealer-anyvehicle.html",
    "inventory-dealerinspire-jaywolfe-4runner-jsonly.html",
]


@pytest.mark.parametrize("name", ALL_PAGES)
def test_no_invented_fields(name):
    """Fields the page does not show stay None; every stored VIN is valid or a labelled
    pre-1981 serial; prices and mileages are consistent with their units."""
    r = run(name)
    items = [r.vehicle] if r.vehicle else r.listings
    for v in items:
        if v.vin is not None and not is_valid_vin(v.vin):
            assert v.year is not None and v.year < 1981
        assert (v.asking_price is None) == (v.currency is None) or v.asking_price is not None
        assert (v.mileage is None) <= (v.mileage_unit is None)
    gt = _manifest_entry(name)["ground_truth"]
    if r.vehicle and gt.get("vin") is None:
        assert r.vehicle.vin is None


# --- every field of every page's truth ------------------------------------------------------


class KnownWrong(Exception):
    """Only fields listed in KNOWN_WRONG are wrong on this page."""


# page -> {field: why it is wrong today}; strict xfail: a page that becomes fully right fails
# until its entry is removed, and a field going wrong that is not listed here fails outright.
KNOWN_WRONG: dict[str, dict[str, str]] = {
    "marketplace-autotempest-2023-toyota-camry-se.html": {
        "photos": "4 marketing slides interleaved in the gallery are kept"
    },
    "marketplace-olx-br-2012-hyundai-ix35.html": {
        "trim": "the state's FIPE version string, not the ad title's 'GLS AUT'",
        "photos": "thumbnails of related ads kept with the gallery",
    },
    "inventory-olx-br-autos-e-pecas-mixed.html": {
        f: "'Vendo' (no make) is the only card of its region's path template: no link found"
        for f in ("card4.link", "card4.price", "card4.mileage", "card4.year")
    },
    "inventory-iseecars-ford-crown-victoria-ajax-fragment.html": {
        "card5.vin": "the unpriced card is not matched (matching needs a title or URL)"
    },
    "marketplace-carfax-2017-mercedes-benz-cla-250.html": {
        "photos": "photos only in the embedded mobx state"
    },
    "marketplace-carscom-2018-chevrolet-malibu-lt-new.html": {
        "photos": "25 photos only in the embedded listing state",
        "location": "dealer address not read",
    },
    "inventory-ksl-classifieds-bike-search-mixed.html": {
        "card0.price": "the title's year taken for the price"
    },
}


def _param(name: str):
    known = KNOWN_WRONG.get(name)
    if not known:
        return name
    by_reason: dict[str, list[str]] = {}
    for f, why in known.items():
        by_reason.setdefault(why, []).append(f)
    reason = "; ".join(f"{','.join(fs)}: {why}" for why, fs in by_reason.items())
    return pytest.param(
        name, marks=pytest.mark.xfail(raises=KnownWrong, strict=True, reason=reason)
    )


_SCORED: dict[str, object] = {}


@pytest.mark.parametrize("name", [_param(n) for n in ALL_PAGES])
def test_every_field_of_the_truth(name):
    """bench/corpus_report.py's scoring: every field the manifest's truth lists is right, and
    no page whose right answer is "no vehicle" gives one (a junk row)."""
    entry = _manifest_entry(name)
    if name not in _SCORED:
        _SCORED[name] = extract_entry(entry)
    result = _SCORED[name]
    # a junk row (a vehicle from a no-vehicle page) is a wrong no_vehicle/classified field
    assert not is_junk(entry, result) or "no_vehicle" in KNOWN_WRONG.get(name, {}), result.vehicle
    wrong = {s.field: (s.got, s.want) for s in score_page(entry, result) if not s.right}
    known = KNOWN_WRONG.get(name, {})
    unexpected = {f: v for f, v in wrong.items() if f not in known}
    assert not unexpected, f"wrong fields (got, want): {unexpected}"
    fixed = sorted(f for f in known if f not in wrong)
    assert not fixed, f"right now, remove from KNOWN_WRONG: {fixed}"
    if wrong:
        raise KnownWrong(f"known wrong fields: {sorted(wrong)}")
