"""Score extraction on the shared real-page corpus against its manifest's ground truth.

``python bench/corpus_report.py`` (or ``make corpus-report``) prints one row per page: the
fields its ground truth lists, each right (``+``) or wrong (``-``, with what was extracted),
then the totals and the junk rows (a vehicle extracted from a page whose right answer is "no
vehicle": a negative, an inventory page or a JavaScript shell). The corpus is
``$NUKE_SHARED_DIR/corpus/pages`` (default: ``../shared`` next to the repository).

What is scored (every field the truth lists that extraction has a place for):

- detail pages (truth has a ``year``): ``found`` (a vehicle came out), year, make, model,
  trim (one a prefix of the other, case-insensitive; the truth's trim is sometimes prose),
  vin, price (the asking price, or the sold price of a ``sold`` page), currency, mileage,
  mileage_unit (when the mileage is known), stock, registration, exterior/interior colour
  (case-insensitive), photos (``photos_in_dom`` when given, else ``photos``, when a number),
  location (the extracted location's first part occurs in the truth's) and sold;
- inventory pages: ``classified`` (no own vehicle: cards or a JS shell), then for each
  listed truth vehicle (``vehicles``, ``example``, ``outlier``, ``first_item``, ...): its link
  among the page's vehicle links (when the truth gives a same-site URL) and its card's price,
  year, mileage and VIN;
- negatives: ``no_vehicle``.

``score_page`` is also what ``tests/test_extraction_corpus.py`` asserts on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nuke_crawl.extraction import PageExtraction, VehicleData, extract_page  # noqa: E402 - after the sys.path set-up
from nuke_crawl.extraction.urls import canonical_listing_url, same_site  # noqa: E402 - after the sys.path set-up

# pages saved without their URL: a plausible URL on the right site
FALLBACK_URLS = {
    "auction-carsandbids-2000-honda-s2000.html": "https://carsandbids.com/auctions/KV0vnYqQ/2000-honda-s2000",
    "vdp-classic-fantasyjunction-1956-ford-thunderbird.html": "https://www.fantasyjunction.com/cars/1481-1956-Ford-Thunderbird",
    "negative-autotempest-search-jsshell-toyota-camry.html": "https://www.autotempest.com/results?make=toyota&model=camry&zip=75001&minprice=1500",
    "negative-autotrader-page-unavailable.html": "https://www.autotrader.com/cars-for-sale/vehicledetails.xhtml?listingId=512345678",
    "negative-dealerrater-mckaig-chevrolet-reviews.html": "https://www.dealerrater.com/dealer/McKaig-Chevrolet-Buick-A-Dealer-For-The-People-dealer-reviews-23685/",
    "inventory-iseecars-ford-crown-victoria-ajax-fragment.html": "https://www.iseecars.com/used_cars-t8406-ford-crown-victoria-los-angeles-ca",
}
MAX_IMAGES = 500  # photo counts are compared uncapped


def shared_dir() -> Path:
    env = os.environ.get("NUKE_SHARED_DIR")
    return Path(env) if env else REPO.parent / "shared"


def corpus_dir() -> Path:
    return shared_dir() / "corpus" / "pages"


def load_manifest() -> dict[str, Any]:
    path = corpus_dir() / "MANIFEST.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus manifest not found at {path}; "
            "set NUKE_SHARED_DIR to the directory holding corpus/"
        )
    return json.loads(path.read_text())


def page_url(entry: dict[str, Any]) -> str:
    return entry.get("page_url") or FALLBACK_URLS[entry["file"]]


def extract_entry(entry: dict[str, Any]) -> PageExtraction:
    return extract_page(
        (corpus_dir() / entry["file"]).read_bytes(), page_url(entry), max_images=MAX_IMAGES
    )


@dataclass
class FieldScore:
    field: str
    right: bool
    want: Any
    got: Any


def kind(entry: dict[str, Any]) -> str:
    """``detail``, ``inventory`` or ``negative``."""
    gt = entry["ground_truth"]
    if entry["page_type"] == "negative":
        return "negative"
    if "year" in gt and "vehicles" not in gt:
        return "detail"
    return "inventory"


def is_junk(entry: dict[str, Any], result: PageExtraction) -> bool:
    """A vehicle row from a page whose right answer is no vehicle of its own."""
    return kind(entry) != "detail" and result.vehicle is not None


def _norm(s: Any) -> str:
    return " ".join(str(s).lower().split()) if s is not None else ""


def _eq(want: Any, got: Any) -> bool:
    if isinstance(want, str) or isinstance(got, str):
        return _norm(want) == _norm(got) if want is not None and got is not None else want == got
    return want == got


def _price(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _detail(gt: dict[str, Any], v: VehicleData | None) -> list[FieldScore]:
    out = [FieldScore("found", v is not None, True, v is not None)]
    if v is None:
        v = VehicleData(url=None)

    def add(name: str, want: Any, got: Any, right: bool | None = None) -> None:
        out.append(FieldScore(name, _eq(want, got) if right is None else right, want, got))

    for name in ("year", "make", "model", "vin"):
        if name in gt:
            add(name, gt[name], getattr(v, name))
    if "trim" in gt:
        want, got = _norm(gt["trim"]), _norm(v.trim)
        if not want:
            add("trim", gt["trim"], v.trim, got == "")
        else:
            core = want.split("(")[0].strip()
            add(
                "trim",
                gt["trim"],
                v.trim,
                bool(got) and (got.startswith(core) or core.startswith(got)),
            )
    sold = bool(gt.get("sold"))
    if "price" in gt:
        got_price = v.asking_price
        if sold:
            got_price = getattr(v, "sold_price", None)
        add("price", _price(gt["price"]), got_price)
    if "currency" in gt:
        add("currency", gt["currency"], v.currency)
    if "mileage" in gt:
        add("mileage", gt["mileage"], v.mileage)
        if gt["mileage"] is not None and "mileage_unit" in gt:
            add("mileage_unit", gt["mileage_unit"], v.mileage_unit)
    for name, attr in (
        ("stock", "stock_number"),
        ("registration", "registration"),
        ("exterior_color", "color"),
        ("interior_color", "interior_color"),
    ):
        if name in gt:
            add(name, gt[name], getattr(v, attr))
    photos = gt.get("photos_in_dom", gt.get("photos"))
    if isinstance(photos, int):
        add("photos", photos, len(v.image_urls))
    if gt.get("location"):
        first = _norm((v.location or "").split(",")[0])
        add("location", gt["location"], v.location, bool(first) and first in _norm(gt["location"]))
    if "sold" in gt:
        add("sold", sold, v.sale_status == "sold")
    return out


def _truth_cards(gt: dict[str, Any]) -> list[dict[str, Any]]:
    cards = list(gt.get("vehicles") or [])
    for key in ("example", "outlier", "first_item", "last_row", "first_featured_tile", "unpriced"):
        if isinstance(gt.get(key), dict):
            cards.append(gt[key])
    return cards


def _match_card(
    want: dict[str, Any], listings: list[VehicleData], url: str | None
) -> VehicleData | None:
    if url:
        key = canonical_listing_url(url)
        for item in listings:
            if item.url and canonical_listing_url(item.url) == key:
                return item
    if want.get("vin"):
        for item in listings:
            if item.vin == want["vin"]:
                return item
    title = _norm(want.get("title") or want.get("name"))
    for item in listings:
        got = _norm(item.title)
        if title and got and (got == title or got.startswith(title) or title.startswith(got)):
            return item
    return None


def _inventory(entry: dict[str, Any], result: PageExtraction) -> list[FieldScore]:
    gt = entry["ground_truth"]
    base = page_url(entry)
    out = [
        FieldScore(
            "classified",
            result.vehicle is None and result.skip_reason in ("inventory_page", "js_shell"),
            "inventory_page|js_shell",
            result.skip_reason,
        )
    ]
    links = {canonical_listing_url(u) for u in result.vehicle_links}
    for i, want in enumerate(_truth_cards(gt)):
        if "not a vehicle" in str(want.get("type", "")).lower():
            continue  # a part or accessory ad among the cars: no vehicle card wanted
        url = want.get("url") or (
            base.split("/", 3)[0] + "//" + base.split("/", 3)[2] + want["vdp"]
            if want.get("vdp")
            else None
        )
        if url and ("..." in url or "#" in url or not same_site(url, base)):
            url = None  # partner redirects, elided URLs and in-page anchors are not followed
        label = f"card{i}"
        if url:
            ok = canonical_listing_url(url) in links
            out.append(FieldScore(f"{label}.link", ok, url, None))
        item = _match_card(want, result.listings, url)
        got = item or VehicleData(url=None)
        if "price" in want:
            out.append(
                FieldScore(
                    f"{label}.price",
                    _price(want["price"]) == got.asking_price,
                    want["price"],
                    got.asking_price,
                )
            )
        mileage = want.get("mileage", want.get("mileage_km"))
        if "mileage" in want or "mileage_km" in want:
            out.append(FieldScore(f"{label}.mileage", mileage == got.mileage, mileage, got.mileage))
        for name in ("year", "vin"):
            if name in want:
                out.append(
                    FieldScore(
                        f"{label}.{name}",
                        want[name] == getattr(got, name),
                        want[name],
                        getattr(got, name),
                    )
                )
    return out


def score_page(entry: dict[str, Any], result: PageExtraction) -> list[FieldScore]:
    k = kind(entry)
    if k == "detail":
        return _detail(entry["ground_truth"], result.vehicle)
    if k == "inventory":
        return _inventory(entry, result)
    return [
        FieldScore(
            "no_vehicle",
            result.vehicle is None,
            None,
            None if result.vehicle is None else result.vehicle.title,
        )
    ]


def _short(value: Any) -> str:
    s = str(value)
    return s if len(s) <= 24 else s[:21] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show right fields too")
    parser.add_argument("--page", help="only pages whose file name contains this")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest()
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    total = right = junk = 0
    print(f"{'page':62} {'right':>7}  fields")
    for entry in manifest["pages"]:
        if args.page and args.page not in entry["file"]:
            continue
        result = extract_entry(entry)
        scores = score_page(entry, result)
        n_right = sum(s.right for s in scores)
        total += len(scores)
        right += n_right
        page_junk = is_junk(entry, result)
        junk += page_junk
        marks = []
        for s in scores:
            if s.right:
                if args.verbose or len(scores) <= 16:
                    marks.append(f"+{s.field}")
            else:
                marks.append(f"-{s.field}[{_short(s.got)}≠{_short(s.want)}]")
        if page_junk:
            marks.append("JUNK")
        name = entry["file"].removesuffix(".html")
        print(f"{name[:62]:62} {n_right:>3}/{len(scores):<3}  {' '.join(marks)}")
    pct = 100.0 * right / total if total else 0.0
    print(f"\ntotal: {right}/{total} fields right ({pct:.1f}%), junk rows: {junk}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
