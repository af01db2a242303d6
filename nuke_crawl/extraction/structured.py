"""Structured data: JSON-LD (incl. ``@graph`` and ``ItemList``), microdata, OpenGraph
and, only when the page carries RDFa attributes, RDFa; mapped to VehicleData."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree
from lxml.html import HtmlElement

from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.text import (
    canonical_make,
    clean_space,
    currency_code,
    parse_mileage,
    parse_price,
    parse_title,
    parse_year,
)
from nuke_crawl.extraction.vin import normalize_serial

logger = logging.getLogger(__name__)

VEHICLE_TYPES = frozenset(
    {
        "vehicle",
        "car",
        "motorizedvehicle",
        "motorcycle",
        "busorcoach",
        "automobile",
        "usedcar",
        "newcar",
    }
)
_PAGE_TYPES = frozenset(
    {
        "webpage",
        "website",
        "organization",
        "autodealer",
        "automotivebusiness",
        "localbusiness",
        "breadcrumblist",
        "searchresultspage",
        "collectionpage",
        "itempage",
        "person",
        "imageobject",
        "videoobject",
        "place",
        "postaladdress",
        "offer",
        "aggregateoffer",
        "brand",
        "article",
        "blogposting",
        "faqpage",
        "searchaction",
        "sitenavigationelement",
        "readaction",
    }
)
_SOLD = ("soldout", "discontinued", "outofstock")
_JS_COMMENT = re.compile(r"^\s*(//.*|<!--.*-->)\s*$", re.M)


@dataclass
class StructuredData:
    """What a page's structured data says."""

    nodes: list[dict[str, Any]] = field(default_factory=list)  # every typed node, flattened
    vehicles: list[VehicleData] = field(default_factory=list)  # vehicle-like nodes, page order
    item_list_vehicles: list[VehicleData] = field(default_factory=list)
    og: dict[str, str] = field(default_factory=dict)
    types: set[str] = field(default_factory=set)


def extract_structured(
    tree: HtmlElement, url: str, *, host: str = "", source: str | None = None
) -> StructuredData:
    """Read JSON-LD, microdata, OpenGraph (and RDFa when present) from a parsed tree.

    ``source``: the page's HTML in lower case, when the caller has it. The tree is
    searched for microdata and RDFa attributes only when their names occur in it
    (attribute names are case-insensitive, and the parser lower-cases them): two scans
    of the whole tree spared on most pages."""
    sd = StructuredData()
    roots: list[Any] = []
    for script in tree.iter("script"):
        if (script.get("type") or "").strip().lower() != "application/ld+json":
            continue
        data = _load_json(script.text or "")
        if data is not None:
            roots.append(data)
    if source is None or "itemscope" in source:
        roots.extend(_microdata(tree, url))
    if (source is None or "typeof" in source or "vocab" in source) and _has_rdfa(tree):
        roots.extend(_rdfa(tree, url))
    sd.og = _opengraph(tree)
    list_items: list[dict[str, Any]] = []
    for root in roots:
        for node in _flatten(root, list_items):
            sd.nodes.append(node)
    ids_in_lists = {id(n) for n in list_items}
    for node in sd.nodes:
        types = _types(node)
        sd.types.update(types)
        if id(node) in ids_in_lists:
            continue
        if _is_vehicle_node(node, types):
            sd.vehicles.append(vehicle_from_node(node, host=host))
    for node in list_items:
        if _is_vehicle_node(node, _types(node)) or "product" in _types(node):
            sd.item_list_vehicles.append(vehicle_from_node(node, host=host))
    return sd


def _load_json(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text, strict=False)
    except ValueError:
        pass
    try:
        import jstyleson

        return jstyleson.loads(_JS_COMMENT.sub("", text), strict=False)
    except Exception:  # noqa: BLE001 - broken JSON-LD is common in the wild; ignore it
        logger.debug("unparseable JSON-LD skipped")
        return None


# compiled XPath runs in libxml2; ElementPath's find() walks the tree in Python
_HAS_MICRODATA = etree.XPath("boolean(//*[@itemscope])")
_HAS_RDFA = etree.XPath("boolean(//*[@typeof or @vocab])")


def _microdata(tree: HtmlElement, url: str) -> list[Any]:
    if not _HAS_MICRODATA(tree):
        return []
    try:
        from extruct.uniform import _umicrodata_microformat
        from extruct.w3cmicrodata import MicrodataExtractor

        raw = MicrodataExtractor().extract_items(tree, base_url=url)
        return list(_umicrodata_microformat(raw, "http://schema.org"))
    except Exception:
        logger.debug("microdata extraction failed", exc_info=True)
        return []


def _has_rdfa(tree: HtmlElement) -> bool:
    # OpenGraph's property="og:..." alone is not worth rdflib's cost
    return bool(_HAS_RDFA(tree))


def _rdfa(tree: HtmlElement, url: str) -> list[Any]:
    try:
        import lxml.html
        from extruct.rdfa import RDFaExtractor
        from extruct.xmldom import XmlDomHTMLParser

        doc = lxml.html.fromstring(
            lxml.html.tostring(tree), parser=XmlDomHTMLParser(encoding="utf-8")
        )
        expanded = RDFaExtractor().extract_items(doc, base_url=url)
    except Exception:
        logger.debug("RDFa extraction failed", exc_info=True)
        return []
    return [_from_expanded(n) for n in expanded if isinstance(n, dict)]


def _from_expanded(node: dict[str, Any]) -> dict[str, Any]:
    """Expanded JSON-LD (RDFa output) -> compact schema.org-like dict."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "@type":
            out["@type"] = [t.rsplit("/", 1)[-1] for t in v] if isinstance(v, list) else v
            continue
        if k.startswith("@"):
            continue
        key = k.rsplit("/", 1)[-1].rsplit("#", 1)[-1]
        vals = []
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, dict) and "@value" in item:
                vals.append(item["@value"])
            elif isinstance(item, dict) and "@id" in item and len(item) == 1:
                vals.append(item["@id"])
            elif isinstance(item, dict):
                vals.append(_from_expanded(item))
            else:
                vals.append(item)
        out[key] = vals[0] if len(vals) == 1 else vals
    return out


def _opengraph(tree: HtmlElement) -> dict[str, str]:
    og: dict[str, str] = {}
    head = tree.find("head")
    scope = head if head is not None else tree
    for meta in scope.iter("meta"):
        prop = meta.get("property") or meta.get("name") or ""
        if prop.startswith(("og:", "product:", "twitter:")) and prop not in og:
            content = meta.get("content")
            if content:
                og[prop] = content
    return og


def _flatten(root: Any, list_items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every typed dict in ``root`` (``@graph`` expanded); ItemList elements collected
    into ``list_items``. Nested vehicles (Offer.itemOffered) are included."""
    out: list[dict[str, Any]] = []
    stack: list[Any] = [root]
    while stack:
        node = stack.pop(0)
        if isinstance(node, list):
            stack[:0] = node
            continue
        if not isinstance(node, dict):
            continue
        if "@graph" in node:
            stack[:0] = node["@graph"] if isinstance(node["@graph"], list) else [node["@graph"]]
        types = _types(node)
        if types:
            out.append(node)
        if "itemlist" in types or "offercatalog" in types:
            for el in _as_list(node.get("itemListElement")):
                item = el.get("item", el) if isinstance(el, dict) and "item" in el else el
                if isinstance(item, dict):
                    if isinstance(el, dict) and el.get("url") and not item.get("url"):
                        item = {**item, "url": el["url"]}
                    list_items.append(item)
            continue
        for key in ("itemOffered", "mainEntity", "about"):
            child = node.get(key)
            if isinstance(child, (dict, list)):
                stack.extend(_as_list(child))
        offers = node.get("offers")
        for off in _as_list(offers):
            if isinstance(off, dict) and isinstance(off.get("itemOffered"), (dict, list)):
                stack.extend(_as_list(off["itemOffered"]))
    return out


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("@type")
    return {str(x).rsplit("/", 1)[-1].lower() for x in _as_list(t) if x}


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _is_vehicle_node(node: dict[str, Any], types: set[str]) -> bool:
    if types & VEHICLE_TYPES:
        return True
    if "product" in types or "individualproduct" in types:
        # a Product is a vehicle only with vehicle evidence (not a dealer's service page)
        if any(
            k in node
            for k in (
                "vehicleIdentificationNumber",
                "mileageFromOdometer",
                "vehicleModelDate",
                "modelDate",
                "vehicleEngine",
            )
        ):
            return True
        offered = [
            o.get("itemOffered") for o in _as_list(node.get("offers")) if isinstance(o, dict)
        ]
        if any(isinstance(x, dict) and _types(x) & VEHICLE_TYPES for x in offered):
            return False  # the Car inside is taken on its own
        name = _text(node.get("name"))
        tp = parse_title(name)
        return bool(tp.year and tp.make)
    return False


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, list):
        for x in v:
            t = _text(x)
            if t:
                return t
        return None
    if isinstance(v, dict):
        return _text(v.get("name") or v.get("@value") or v.get("value"))
    return clean_space(str(v))


def _images(v: Any) -> list[str]:
    out: list[str] = []
    for x in _as_list(v):
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            u = x.get("contentUrl") or x.get("url") or x.get("@id")
            if isinstance(u, str):
                out.append(u)
    return out


def vehicle_from_node(node: dict[str, Any], *, host: str = "") -> VehicleData:
    """Map one schema.org Vehicle / Car / Product node to VehicleData.

    Reads name, vehicleIdentificationNumber, mileageFromOdometer (QuantitativeValue
    with unitCode SMI/KMT or unitText), vehicleModelDate / modelDate / productionDate /
    releaseDate, brand / manufacturer, model, vehicleConfiguration, color,
    vehicleInteriorColor, vehicleTransmission, driveWheelConfiguration, bodyType,
    fuelType, vehicleEngine, sku, image, description and offers (price, priceCurrency,
    availability: SoldOut -> "sold", url). Offers that wrap the car are merged too.
    """
    v = VehicleData(url=None, sources=["structured"])
    name = _text(node.get("name"))
    v.title = name
    tp = parse_title(name)
    v.year = (
        parse_year(_text(node.get("vehicleModelDate")))
        or parse_year(_text(node.get("modelDate")))
        or parse_year(_text(node.get("productionDate")))
        or parse_year(_text(node.get("releaseDate")))
        or tp.year
    )
    v.make = (
        canonical_make(_text(node.get("brand")))
        or canonical_make(_text(node.get("manufacturer")))
        or tp.make
    )
    if v.make is None:
        v.make = _text(node.get("brand")) or _text(node.get("manufacturer"))
    model = _text(node.get("model"))
    v.model = model or tp.model
    # a trim read from a free-text name is trusted only when the node's own model
    # property confirms where the model ends
    v.trim = _text(node.get("vehicleConfiguration")) or (
        tp.trim if model and (tp.model or "").lower() == model.lower() else None
    )
    v.color = _text(node.get("color"))
    v.interior_color = _text(node.get("vehicleInteriorColor"))
    v.transmission = _text(node.get("vehicleTransmission"))
    v.drivetrain = _text(node.get("driveWheelConfiguration"))
    v.body_style = _text(node.get("bodyType"))
    engine = node.get("vehicleEngine")
    fuel = _text(node.get("fuelType"))
    if isinstance(engine, (dict, list)):
        for e in _as_list(engine):
            if isinstance(e, dict):
                fuel = fuel or _text(e.get("fuelType"))
                v.engine = v.engine or _text(e.get("name")) or _text(e.get("engineType"))
    else:
        v.engine = _text(engine)
    v.fuel_type = fuel
    v.description = _text(node.get("description"))
    raw_vin = _text(node.get("vehicleIdentificationNumber"))
    v.vin = normalize_serial(raw_vin, v.year) if raw_vin else None
    v.stock_number = (
        _text(node.get("sku")) if node.get("sku") and not str(node.get("sku")).isdigit() else None
    )
    _mileage(v, node.get("mileageFromOdometer"))
    v.url = _text(node.get("url"))
    v.image_urls = _images(node.get("image"))
    for off in _as_list(node.get("offers")):
        if not isinstance(off, dict):
            continue
        _offer(v, off, host)
        if not v.url and isinstance(off.get("url"), str):
            v.url = off["url"]
    if v.url is not None and not isinstance(v.url, str):
        v.url = None
    return v


def _mileage(v: VehicleData, m: Any) -> None:
    if m is None or m == "":
        return
    unit = None
    if isinstance(m, dict):
        code = str(m.get("unitCode") or m.get("unitText") or "").upper()
        unit = (
            "km"
            if code in ("KMT", "KM", "KILOMETERS", "KILOMETRES")
            else "mi"
            if code in ("SMI", "MI", "MILES", "MILE")
            else None
        )
        value = m.get("value")
    else:
        value = m
    if value in (None, ""):
        return
    if isinstance(value, (int, float)):
        v.mileage = int(value) if 0 <= value < 2_000_000 else None
    else:
        v.mileage, text_unit = parse_mileage(str(value))
        unit = unit or text_unit
    if v.mileage is not None:
        v.mileage_unit = unit


def _offer(v: VehicleData, off: dict[str, Any], host: str) -> None:
    if "offers" in off and not off.get("price"):
        for sub in _as_list(off["offers"]):
            if isinstance(sub, dict):
                _offer(v, sub, host)
    price = off.get("price", off.get("lowPrice"))
    if price is None:
        spec = off.get("priceSpecification")
        if isinstance(spec, dict):
            price = spec.get("price")
            off = {**off, "priceCurrency": off.get("priceCurrency") or spec.get("priceCurrency")}
    if price not in (None, "") and v.asking_price is None:
        amount: Decimal | None
        if isinstance(price, (int, float)):
            amount = Decimal(str(price))
        else:
            try:
                amount = Decimal(str(price).replace(",", "").strip())
            except InvalidOperation:
                amount, _ = parse_price(str(price), host=host)
        if amount is not None and amount >= 100:
            v.asking_price = (
                amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount
            )
            cur = off.get("priceCurrency")
            v.currency = currency_code(str(cur), host) if cur else None
    place = off.get("availableAtOrFrom")
    if isinstance(place, dict) and v.location is None:
        addr = place.get("address")
        if isinstance(addr, dict):
            parts = [_text(addr.get("addressLocality")), _text(addr.get("addressRegion"))]
            v.location = ", ".join(p for p in parts if p) or None
    avail = str(off.get("availability") or "").rsplit("/", 1)[-1].lower()
    if avail in _SOLD:
        v.sale_status = "sold"
    elif avail in (
        "instock",
        "limitedavailability",
        "onlineonly",
        "instoreonly",
        "presale",
        "preorder",
    ):
        v.sale_status = v.sale_status or "for_sale"
