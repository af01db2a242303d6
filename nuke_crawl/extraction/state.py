"""Embedded state: vehicles in the JSON a page carries for its scripts.

Many pages keep their data in state objects rather than in JSON-LD: ``__NEXT_DATA__``,
``window.__INITIAL_STATE__ = {...}``, ``__PRELOADED_STATE__``, Apollo caches,
``<script type="application/json">``, ``var x = {...}``, ``JSON.parse("...")`` strings,
``ReactDOM.hydrate(..., {...})`` arguments, HTML-escaped JSON in ``data-*`` attributes and
raw JSON inside custom elements. :func:`state_vehicles` finds the objects shaped like a
vehicle (a known make with a year or model, or a valid VIN with a make or year) under the
common key spellings, including ``[{label|name, value}]`` spec lists, and
:func:`page_state_vehicle` picks the one that is this page's: the one whose VIN or id is in
the URL, or whose make/model/year match the page's title. Several vehicles and none
matching: none (a results page's state is not a detail page's).

Cheap on pages without state: the raw source is searched for a vehicle key (``"vin"``,
``"make"``...) before any script is parsed, and only scripts/attributes holding one are.
"""

from __future__ import annotations

import html as _html
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.text import (
    canonical_make,
    clean_space,
    parse_mileage,
    parse_price,
    parse_year,
)
from nuke_crawl.extraction.vin import is_valid_vin, normalize_vin

_KEYS: dict[str, str] = {}
for _field, _names in {
    "year": (
        "year",
        "modelyear",
        "vehicleyear",
        "caryear",
        "yearofmanufacture",
        "productionyear",
        "regdate",
        "registrationyear",
        "firstregistrationyear",
        "manufactureyear",
        "baujahr",
        "bouwjaar",
        "anno",
        "ano",
        "annee",
        "annomodello",
        "anomodelo",
    ),
    "make": (
        "make",
        "makename",
        "brand",
        "brandname",
        "manufacturer",
        "vehiclemake",
        "carmake",
        "marke",
        "marca",
        "merk",
        "marque",
        "vehiclebrand",
        "makedisplayname",
    ),
    "model": (
        "model",
        "modelname",
        "vehiclemodel",
        "carmodel",
        "modell",
        "modelo",
        "modele",
        "modello",
        "modeldisplayname",
        "basemodel",
    ),
    "trim": (
        "trim",
        "trimname",
        "trimlevel",
        "variant",
        "submodel",
        "modelversion",
        "modelvariant",
        "version",
        "series",
        "seriesname",
        "ausstattung",
        "uitvoering",
        "finition",
        "versione",
    ),
    "vin": (
        "vin",
        "vinnumber",
        "vehicleidentificationnumber",
        "chassisnumber",
        "fahrgestellnummer",
        "chassisno",
        "vincode",
        "vehiclevin",
    ),
    "price": (
        "price",
        "askingprice",
        "listprice",
        "saleprice",
        "sellingprice",
        "internetprice",
        "currentprice",
        "displayprice",
        "pricevalue",
        "finalprice",
        "ourprice",
        "retailprice",
        "cashprice",
        "priceamount",
        "formattedprice",
        "pricelabel",
        "preis",
        "prijs",
        "prix",
        "precio",
        "prezzo",
        "preco",
        "rawprice",
        "offerprice",
    ),
    "mileage": (
        "mileage",
        "odometer",
        "miles",
        "kilometers",
        "kilometres",
        "km",
        "kms",
        "mileagefromodometer",
        "odometerreading",
        "kilometerstand",
        "kilometrage",
        "kilometraje",
        "chilometraggio",
        "quilometragem",
        "tellerstand",
        "mileagevalue",
        "odometervalue",
        "mileagekm",
        "mileagemiles",
        "mileageinkm",
        "odometerinkm",
        "mileageinmiles",
    ),
    "currency": ("currency", "currencycode", "pricecurrency", "currencyiso"),
    "stock_number": ("stocknumber", "stockno", "stocknum", "stockid", "stock"),
    "color": (
        "exteriorcolor",
        "exteriorcolour",
        "extcolor",
        "color",
        "colour",
        "farbe",
        "exteriorcolorname",
        "kleur",
        "couleur",
        "colore",
        "cor",
    ),
    "interior_color": ("interiorcolor", "interiorcolour", "intcolor", "interiorcolorname"),
    "images": (
        "images",
        "photos",
        "photourls",
        "photourlslarge",
        "imageurls",
        "gallery",
        "pictures",
        "imagelist",
        "photolist",
        "media",
        "largephotos",
        "photosurls",
    ),
    "sold_price": ("soldprice", "winningbid", "finalbid", "hammerprice", "soldfor", "saleamount"),
    "status": ("status", "salestatus", "auctionstatus", "listingstatus", "availability"),
}.items():
    for _n in _names:
        _KEYS[_n] = _field
_ID_KEYS = frozenset(
    {
        "id",
        "listid",
        "listingid",
        "adid",
        "vehicleid",
        "inventoryid",
        "itemid",
        "auctionid",
        "classifiedid",
        "uuid",
        "slug",
        "stocknumber",
    }
)
_LABEL_KEYS = ("label", "name", "key", "title", "code")
_VALUE_KEYS = ("value", "valuelabel", "text", "displayvalue", "formattedvalue")
_NAME_KEYS = ("name", "label", "displayname", "value", "text", "title", "description")
# raw-source hints that a page may carry vehicle state: a quoted vehicle key
_HINT = re.compile(
    r"[\"'](?:vin|make|makename|modelyear|mileage|odometer|regdate|marke|"
    r"vehicle_?brand|brand)\\?[\"']\s*:",
    re.IGNORECASE,
)
_ATTR_HINT = re.compile(
    r"\"(?:vin|make|mileage|modelyear|regdate|brand|vehicle_brand|marke|marca)\"", re.IGNORECASE
)
_HINT_ESCAPED = re.compile(
    r"&quot;(?:vin|make|mileage|modelyear|regdate|brand|properties)&quot;\s*:"
    r"|\\\"(?:vin|make|mileage|modelyear)\\\"\s*:",
    re.IGNORECASE,
)
# where a JSON value may start inside a script: after "=", "(", "," or at the start
_JSON_START = re.compile(r"(?:^|[=(,:]\s*)(\{|\[)|JSON\.parse\(\s*(['\"])", re.MULTILINE)
# raw JSON as the text of a custom element (<cars-data-broker key="listing">{"...)
_CUSTOM_JSON = re.compile(r"<([a-z][\w]*-[\w-]*)[^>]*>\{\"", re.IGNORECASE)
_SKIP_SCRIPT_TYPES = frozenset(
    {"application/ld+json", "text/template", "text/x-template", "text/html", "text/css"}
)
_MAX_SCRIPT = 4_000_000
_MAX_STARTS = 60
_MAX_NODES = 200_000
_SOLD_STATUS = re.compile(r"^(sold|sold_out|closed_sold|ended_sold|sold_auction)$", re.IGNORECASE)


def _nk(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def has_state_hint(page: Page) -> bool:
    """Whether the page may carry vehicle state: an inline script quoting a vehicle key,
    HTML-escaped JSON quoting one, or JSON inside a custom element. Substring tests and
    the scripts' own text only, never a regular expression over the whole page."""
    raw = page.raw_text
    if "&quot;" in raw and _HINT_ESCAPED.search(raw):
        return True
    if '>{"' in raw and _CUSTOM_JSON.search(raw):
        return True
    for script in page.tree.iter("script"):
        text = script.text
        if text and len(text) > 20 and _HINT.search(text):
            return True
    return False


def _json_values(text: str) -> list[Any]:
    """The JSON objects/arrays in a script's text (whole, or after "=", "(", ",")."""
    text = text.strip()
    if not text:
        return []
    if text[0] in "{[":
        try:
            return [json.loads(text)]
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    out: list[Any] = []
    pos_done = -1
    for n, m in enumerate(_JSON_START.finditer(text)):
        if n >= _MAX_STARTS:
            break
        if m.start() < pos_done:
            continue
        if m.group(2):  # JSON.parse('...') / JSON.parse("...")
            quote = m.group(2)
            end = m.end()
            close = re.compile(r"(?<!\\)(?:\\\\)*" + re.escape(quote))
            cm = close.search(text, end)
            if not cm:
                continue
            literal = text[end : cm.end() - 1]
            if quote == "'":
                literal = re.sub(r'(?<!\\)((?:\\\\)*)"', r'\1\\"', literal).replace("\\'", "'")
            try:
                value = json.loads(json.loads('"' + literal + '"'))
            except ValueError:
                continue
            out.append(value)
            pos_done = cm.end()
            continue
        start = m.start(1)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, (dict, list)) and value:
            out.append(value)
            pos_done = end
    return out


def _blobs(page: Page) -> list[Any]:
    """Every JSON value the page carries that may hold a vehicle."""
    out: list[Any] = []
    for script in page.tree.iter("script"):
        typ = (script.get("type") or "").strip().lower()
        if typ in _SKIP_SCRIPT_TYPES or script.get("src"):
            continue
        text = script.text or ""
        if len(text) > _MAX_SCRIPT or not _HINT.search(text):
            continue
        out.extend(_json_values(text))
    raw = page.raw_text
    if "&quot;" in raw and _HINT_ESCAPED.search(raw):
        # HTML-escaped JSON in attributes (data-json, data-state, :props...)
        for el in page.tree.iter():
            if not isinstance(el.tag, str):
                continue
            for value in el.attrib.values():
                if len(value) > 40 and value.lstrip()[:1] in "{[" and _ATTR_HINT.search(value):
                    try:
                        out.append(json.loads(value))
                    except ValueError:
                        continue
    if '>{"' in raw and _CUSTOM_JSON.search(raw):
        # raw JSON as the text of a custom element
        for m in _CUSTOM_JSON.finditer(raw):
            for el in page.tree.iter(m.group(1).lower()):
                text = (el.text or "").strip()
                if text.startswith("{") and _HINT.search(text):
                    try:
                        out.append(json.loads(text))
                    except ValueError:
                        try:
                            out.append(json.loads(_html.unescape(text)))
                        except ValueError:
                            continue
            break
    return out


def _scalar(value: Any) -> Any:
    """A dict's display value ({"name": "Toyota"}, {"value": 2019, "unit": "km"}), a list's
    first item, or the value itself."""
    for _ in range(3):
        if isinstance(value, list):
            value = value[0] if value else None
        elif isinstance(value, dict):
            low = {_nk(k): v for k, v in value.items()}
            for k in (
                "value",
                "amount",
                "name",
                "label",
                "displayname",
                "text",
                "makename",
                "modelname",
                "formatted",
                "raw",
            ):
                if k in low and low[k] not in (None, "", [], {}):
                    value = low[k]
                    break
            else:
                return None
        else:
            return value
    return value if not isinstance(value, (dict, list)) else None


def _unit_of(value: Any) -> str | None:
    if isinstance(value, dict):
        for k, v in value.items():
            if _nk(k) in ("unit", "unitcode", "unittext") and isinstance(v, str):
                u = v.lower()
                if u.startswith(("km", "kmt", "kilom")):
                    return "km"
                if u.startswith(("mi", "smi")):
                    return "mi"
    return None


def _price_of(value: Any, host: str) -> tuple[Decimal | None, str | None]:
    cur = None
    if isinstance(value, dict):
        for k, v in value.items():
            if _nk(k) in ("currency", "currencycode", "pricecurrency") and isinstance(v, str):
                cur = v.upper()[:3]
    s = _scalar(value)
    if isinstance(s, bool) or s is None:
        return None, None
    if isinstance(s, (int, float)):
        try:
            amount = Decimal(str(s))
        except InvalidOperation:
            return None, None
        if not Decimal(100) <= amount <= Decimal(50_000_000):
            return None, None
        return amount.quantize(Decimal(1)) if amount == amount.to_integral() else amount, cur
    parsed, c = parse_price(str(s), host=host)
    return parsed, cur or c


def _pairs(items: list[Any]) -> dict[str, Any]:
    """[{"name"|"label": ..., "value": ...}] spec lists -> {normalised key: value}."""
    out: dict[str, Any] = {}
    for it in items[:200]:
        if not isinstance(it, dict):
            return {}
        low = {_nk(k): v for k, v in it.items()}
        val = next((low[k] for k in _VALUE_KEYS if k in low and low[k] not in (None, "")), None)
        if val is None or isinstance(val, (dict, list)):
            continue
        for k in _LABEL_KEYS:
            lab = low.get(k)
            if isinstance(lab, str) and _nk(lab) in _KEYS:
                out.setdefault(_nk(lab), val)
                break
            if isinstance(lab, str):
                from nuke_crawl.extraction.heuristics import LABELS, norm_label

                field = LABELS.get(norm_label(lab))
                if field:
                    key = {"stock_number": "stocknumber", "interior_color": "interiorcolor"}.get(
                        field, field
                    )
                    out.setdefault(key, val)
                    break
    return out


class _Candidate:
    __slots__ = ("ids", "n", "sold_price", "v")

    def __init__(self) -> None:
        self.v = VehicleData(url=None)
        self.ids: set[str] = set()
        self.sold_price: Decimal | None = None
        self.n = 0


def _vehicle_of(node: dict[str, Any], host: str, default_unit: str | None) -> _Candidate | None:
    fields: dict[str, Any] = {}
    ids: set[str] = set()
    for k, value in node.items():
        nk = _nk(k)
        field = _KEYS.get(nk)
        if field and field not in fields and value not in (None, "", [], {}):
            fields[field] = (value, nk)
        if nk in _ID_KEYS and isinstance(value, (str, int)) and not isinstance(value, bool):
            s = str(value)
            if 4 <= len(s) <= 64:
                ids.add(s.lower())
        if isinstance(value, list) and value and isinstance(value[0], dict) and field is None:
            for pk, pv in _pairs(value).items():
                pf = _KEYS.get(pk)
                if pf and pf not in fields:
                    fields[pf] = (pv, pk)
    if "make" not in fields and "vin" not in fields:
        return None
    c = _Candidate()
    v = c.v
    if "make" in fields:
        v.make = canonical_make(str(_scalar(fields["make"][0]) or ""))
    if "year" in fields:
        y = _scalar(fields["year"][0])
        v.year = parse_year(y if isinstance(y, int) and not isinstance(y, bool) else str(y or ""))
    if "vin" in fields:
        s = _scalar(fields["vin"][0])
        vin = normalize_vin(str(s)) if isinstance(s, str) else None
        v.vin = vin if vin and is_valid_vin(vin) else None
    if "model" in fields:
        s = _scalar(fields["model"][0])
        if isinstance(s, (str, int)) and not isinstance(s, bool):
            v.model = clean_space(str(s))
    if not (v.make and (v.year or v.model)) and not (v.vin and (v.make or v.year)):
        return None
    if v.model and v.make and v.model.lower().startswith(v.make.lower() + " "):
        v.model = v.model[len(v.make) + 1 :].strip() or None
    if "trim" in fields:
        s = _scalar(fields["trim"][0])
        if isinstance(s, str) and len(s) <= 80:
            v.trim = clean_space(s)
    if "price" in fields:
        v.asking_price, v.currency = _price_of(fields["price"][0], host)
    if "currency" in fields and isinstance(fields["currency"][0], str):
        cur = fields["currency"][0].strip().upper()
        if re.fullmatch(r"[A-Z]{3}", cur):
            v.currency = cur
    if v.asking_price is None:
        v.currency = None
    if "mileage" in fields:
        raw, key = fields["mileage"]
        s = _scalar(raw)
        unit = _unit_of(raw) or (
            "km"
            if key.startswith("kilo")
            or key.endswith(("km", "kms"))
            or key
            in ("kilometerstand", "quilometragem", "chilometraggio", "kilometraje", "kilometrage")
            else None
        )
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            if 0 <= s < 2_000_000:
                v.mileage = int(s)
                v.mileage_unit = unit or (
                    "mi" if key in ("miles", "mileagemiles") else default_unit
                )
        elif isinstance(s, str):
            m, u = parse_mileage(
                s if re.search(r"[a-z]", s, re.IGNORECASE) else s + (" " + unit if unit else ""),
                default_unit=unit or default_unit,
            )
            v.mileage, v.mileage_unit = m, (u if m is not None else None)
    if "stock_number" in fields:
        s = _scalar(fields["stock_number"][0])
        if (
            isinstance(s, (str, int))
            and not isinstance(s, bool)
            and re.fullmatch(r"[A-Za-z0-9_/-]{2,24}", str(s))
        ):
            v.stock_number = str(s)
    for f in ("color", "interior_color"):
        if f in fields:
            s = _scalar(fields[f][0])
            if isinstance(s, str) and 2 <= len(s) <= 40 and not s.startswith("#"):
                setattr(v, f, clean_space(s))
    if "images" in fields:
        v.image_urls = _image_urls(fields["images"][0])
    if "sold_price" in fields:
        c.sold_price, sold_cur = _price_of(fields["sold_price"][0], host)
        if sold_cur and v.currency is None:
            v.currency = sold_cur
    if "status" in fields:
        s = _scalar(fields["status"][0])
        if isinstance(s, str) and _SOLD_STATUS.match(s.strip()):
            v.sale_status = "sold"
    for key in ("sold", "issold"):
        if node.get(key) is True:
            v.sale_status = "sold"
    c.ids = ids
    c.n = sum(x is not None for x in (v.year, v.make, v.model, v.vin, v.asking_price, v.mileage))
    v.sources.append("state")
    return c


def _image_urls(value: Any) -> list[str]:
    out: list[str] = []
    items = value if isinstance(value, list) else [value]
    for it in items[:300]:
        if isinstance(it, str):
            url = it
        elif isinstance(it, dict):
            low = {_nk(k): v for k, v in it.items()}
            url = next(
                (
                    low[k]
                    for k in (
                        "url",
                        "src",
                        "large",
                        "uri",
                        "href",
                        "original",
                        "full",
                        "xlarge",
                        "fullsize",
                        "path",
                    )
                    if isinstance(low.get(k), str)
                ),
                "",
            )
        else:
            continue
        if url.startswith(("http://", "https://", "//", "/")) and not url.startswith("/" * 3):
            out.append(url)
    return out


def _walk(value: Any, host: str, default_unit: str | None, out: list[_Candidate]) -> None:
    stack = [value]
    seen = 0
    while stack and seen < _MAX_NODES:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            c = _vehicle_of(node, host, default_unit)
            if c is not None:
                out.append(c)
            stack.extend(v for v in reversed(list(node.values())) if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in reversed(node) if isinstance(v, (dict, list)))


_DATA_HINT = re.compile(
    r"data-(?:vehicle-?|car-?|vdp-?)?(?:vin|make|year|model|mileage|odometer)\s*=", re.IGNORECASE
)


_DATA_KEYS = ("vin", "make", "year", "vehicle", "car-", "vdp-")


def _data_attribute_objects(page: Page) -> list[dict[str, str]]:
    """``data-vin``, ``data-year``, ``data-make``, ``data-model``, ``data-price``,
    ``data-mileage`` (and ``data-vehicle-make``...) of each element, outside decoys."""
    out: list[dict[str, str]] = []
    excluded = page.excluded
    for el in page.body.xpath("//*[@*[starts-with(name(), 'data-')]]"):
        if el in excluded:
            continue
        obj = {}
        for k, v in el.attrib.items():
            if k.startswith("data-") and v:
                key = _nk(re.sub(r"^data-(?:vehicle-?|car-?|vdp-?|item-?)?", "", k))
                if key in _KEYS:
                    obj[key] = v
        if len(obj) >= 2 or "vin" in obj:
            out.append(obj)
    return out


def state_vehicles(page: Page) -> list[_Candidate]:
    """Every vehicle-shaped object in the page's embedded state and ``data-*`` vehicle
    attributes, duplicates merged (same VIN, or same year/make/model/price), document
    order (worked out once per page)."""
    cached = page.__dict__.get("_state_vehicles")
    if cached is None:
        cached = page.__dict__["_state_vehicles"] = _state_vehicles(page)
    return cached


def card_state(page: Page) -> dict[str, VehicleData]:
    """State vehicles by their ids (listing id, stock number...), for inventory cards whose
    URL carries the id."""
    out: dict[str, VehicleData] = {}
    for c in state_vehicles(page):
        for i in c.ids:
            out.setdefault(i, c.v)
    return out


def _state_vehicles(page: Page) -> list[_Candidate]:
    state_hint = has_state_hint(page)
    raw = page.raw_lower
    data_hint = any(f"data-{k}" in raw for k in _DATA_KEYS) and bool(
        _DATA_HINT.search(page.raw_text)
    )
    if not (state_hint or data_hint):
        return []
    found: list[_Candidate] = []
    if state_hint:
        for blob in _blobs(page):
            _walk(blob, page.host, page.default_unit, found)
    if data_hint:
        for obj in _data_attribute_objects(page):
            c = _vehicle_of(obj, page.host, page.default_unit)
            if c is not None:
                c.v.sources[-1] = "attributes"
                found.append(c)
    merged: list[_Candidate] = []
    by_key: dict[tuple[Any, ...], _Candidate] = {}
    for c in found:
        v = c.v
        key: tuple[Any, ...] = (
            (v.vin,) if v.vin else (v.year, v.make, (v.model or "").lower(), v.asking_price)
        )
        prev = by_key.get(key)
        if prev is None and v.vin is None:
            # a partial copy of a VIN-keyed vehicle (same make/model/year)
            prev = next(
                (
                    p
                    for p in merged
                    if p.v.vin
                    and p.v.make == v.make
                    and p.v.year == v.year
                    and (p.v.model or "").lower() == (v.model or "").lower()
                ),
                None,
            )
        if prev is None:
            by_key[key] = c
            merged.append(c)
            continue
        for f in (
            "year",
            "make",
            "model",
            "trim",
            "vin",
            "asking_price",
            "currency",
            "mileage",
            "mileage_unit",
            "stock_number",
            "color",
            "interior_color",
            "sale_status",
        ):
            if getattr(prev.v, f) is None and getattr(v, f) is not None:
                setattr(prev.v, f, getattr(v, f))
        if len(v.image_urls) > len(prev.v.image_urls):
            prev.v.image_urls = v.image_urls
        prev.ids |= c.ids
        prev.sold_price = prev.sold_price or c.sold_price
    return merged


def _words(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower()) + " "


def page_state_vehicle(page: Page, title: str | None) -> tuple[VehicleData | None, Decimal | None]:
    """This page's own vehicle from its embedded state (and a sold price when the state
    has one), or (None, None)."""
    candidates = state_vehicles(page)
    if not candidates:
        return None, None
    url = page.url.lower()
    url_words = _words(url)
    heads = _words(" ".join(x for x in (title, page.title_tag, *page.h1s[:2]) if x))
    scored: list[tuple[int, int, _Candidate]] = []
    for c in candidates:
        v = c.v
        score = 0
        if v.vin and (v.vin.lower() in url or v.vin.lower() in heads):
            score += 6
        if any(
            len(x) >= 5 and (f"/{x}" in url or f"-{x}" in url or f"={x}" in url or f"_{x}" in url)
            for x in c.ids
        ):
            score += 5
        if (
            v.model
            and _words(v.model).strip()
            and _words(v.model) in heads
            or v.model
            and _words(v.model) in url_words
        ):
            score += 2
        if v.make and (_words(v.make) in heads or _words(v.make) in url_words):
            score += 1
        if v.year and (f" {v.year} " in heads or f" {v.year} " in url_words):
            score += 1
        scored.append((score, c.n, c))
    scored.sort(key=lambda t: (-t[0], -t[1]))
    best_score, _, best = scored[0]
    # among many vehicles (a results page, a "similar vehicles" strip) only a VIN or an id
    # in the URL or title says which is the page's own
    if best_score < (5 if len(candidates) >= 3 else 3):
        return None, None
    if len(scored) > 1 and scored[1][0] == best_score and scored[1][2].v.vin != best.v.vin:
        return None, None  # two vehicles match the page alike: not sure which is its own
    return best.v, best.sold_price
