"""Generic heuristics: label/value pairs, prices, mileage, VINs, sold markers, titles,
and inventory cards. Used last, to fill what structured data, adapters and selectors
left empty."""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal

from lxml.html import HtmlElement

from nuke_crawl.extraction.images import image_candidates
from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page, render_lines, text_content
from nuke_crawl.extraction.text import (
    MONTHLY,
    NO_PRICE,
    PRICE_MARK,
    canonical_make,
    clean_space,
    parse_mileage,
    parse_price,
    parse_title,
    parse_year,
)
from nuke_crawl.extraction.vin import find_vins, normalize_serial, normalize_vin

# label (lowercase, without trailing ":" "#" ".") -> field
LABELS: dict[str, str] = {}
# the same fields in German, Dutch, French, Spanish, Italian and Portuguese
_MORE_LABELS: dict[str, tuple[str, ...]] = {
    "vin": (
        "fahrzeug-identifizierungsnummer",
        "fin",
        "chassisnummer",
        "chassisnr",
        "numéro de série",
        "numero de serie",
        "número de bastidor",
        "bastidor",
        "numero di telaio",
        "telaio",
        "número do chassi",
        "chassi",
    ),
    "mileage": (
        "laufleistung",
        "km-stand",
        "km stand",
        "tachostand",
        "tellerstand",
        "kilométrage",
        "kilometrage",
        "kilometraje",
        "kilómetros",
        "kilometros",
        "chilometraggio",
        "chilometri",
        "km percorsi",
        "quilometragem",
        "quilómetros",
        "odómetro",
        "odometro",
        "mileage (km)",
        "odometer (km)",
    ),
    "year": (
        "baujahr",
        "modelljahr",
        "bouwjaar",
        "jaar",
        "année",
        "annee",
        "année modèle",
        "mise en circulation",
        "1ère mise en circulation",
        "première mise en circulation",
        "año",
        "ano",
        "año modelo",
        "ano modelo",
        "anno",
        "immatricolazione",
        "prima immatricolazione",
        "matriculación",
        "fecha de matriculación",
        "eerste toelating",
        "datum eerste toelating",
        "first registered",
        "registration year",
        "year of manufacture",
        "reg year",
        "model year/first reg",
    ),
    "make": ("hersteller", "merk", "marque", "marca", "fabricante", "brand name"),
    "model": ("modèle", "modele", "modelo", "modello"),
    "color": (
        "außenfarbe",
        "aussenfarbe",
        "kleur",
        "couleur",
        "couleur extérieure",
        "colore",
        "cor",
        "color exterior",
        "colore esterno",
    ),
    "interior_color": (
        "innenausstattung",
        "interieurkleur",
        "couleur intérieure",
        "color interior",
    ),
    "fuel_type": (
        "brandstof",
        "carburant",
        "énergie",
        "energie",
        "combustible",
        "carburante",
        "alimentazione",
        "combustível",
        "kraftstoffart",
    ),
    "transmission": (
        "getriebeart",
        "transmissie",
        "versnellingsbak",
        "boîte de vitesses",
        "boite de vitesses",
        "boîte",
        "transmisión",
        "cambio",
        "câmbio",
        "caixa",
    ),
    "body_style": (
        "karosserieform",
        "carrosserie",
        "carrocería",
        "carroceria",
        "carrozzeria",
        "tipo de veículo",
        "categorie",
        "catégorie",
    ),
    "price": (
        "kaufpreis",
        "vraagprijs",
        "prijs",
        "precio",
        "prezzo",
        "preço",
        "prix de vente",
        "listed price",
        "sale price (usd)",
    ),
    "location": (
        "standort",
        "locatie",
        "localisation",
        "ubicación",
        "ubicazione",
        "localização",
        "município",
        "municipio",
    ),
    "stock_number": ("interne nummer", "referenz", "référence", "referencia", "riferimento"),
    "drivetrain": ("aandrijving", "transmission intégrale", "tracción", "trazione"),
}
for _field, _names in {
    "vin": (
        "vin",
        "vin number",
        "vin no",
        "vehicle identification number",
        "chassis",
        "chassis no",
        "chassis number",
        "serial",
        "serial number",
        "serial no",
        "s/n",
        "fahrgestellnummer",
        "frame number",
    ),
    "mileage": (
        "mileage",
        "odometer",
        "miles",
        "kilometers",
        "kilometres",
        "km",
        "kms",
        "kilometerstand",
        "odometer reading",
        "mileage (miles)",
        "current mileage",
    ),
    "stock_number": (
        "stock",
        "stock number",
        "stock no",
        "stock num",
        "stk",
        "stock id",
        "ref",
        "reference",
    ),
    "year": ("year", "model year", "erstzulassung", "first registration"),
    "make": ("make", "manufacturer", "marke", "brand"),
    "model": ("model", "modell"),
    "trim": ("trim", "trim level", "variant", "version", "series"),
    "color": (
        "exterior",
        "exterior color",
        "exterior colour",
        "color",
        "colour",
        "ext color",
        "ext. color",
        "paint",
        "paint color",
        "body color",
        "farbe",
        "ext colour",
    ),
    "interior_color": (
        "interior",
        "interior color",
        "interior colour",
        "int color",
        "int. color",
        "upholstery",
        "interior trim",
    ),
    "transmission": ("transmission", "trans", "gearbox", "getriebe", "transmission type"),
    "drivetrain": (
        "drivetrain",
        "drive",
        "drive train",
        "drive type",
        "driveline",
        "drive wheels",
        "antrieb",
    ),
    "engine": ("engine", "engine size", "motor", "engine description"),
    "body_style": ("body style", "body", "body type", "bodystyle", "karosserie", "vehicle type"),
    "fuel_type": ("fuel", "fuel type", "kraftstoff"),
    "registration": (
        "registration",
        "reg",
        "registration number",
        "reg number",
        "number plate",
        "kennzeichen",
        "reg no",
    ),
    "price": (
        "price",
        "our price",
        "sale price",
        "asking price",
        "internet price",
        "selling price",
        "cash price",
        "buy now",
        "buy it now",
        "special price",
        "your price",
        "final price",
        "e-price",
        "now",
        "retail price",
        "list price",
        "asking",
        "preis",
        "prix",
        "price (usd)",
    ),
    "bid": (
        "current bid",
        "high bid",
        "highest bid",
        "top bid",
        "bid",
        "höchstgebot",
        "aktuelles gebot",
        "enchère actuelle",
        "puja actual",
        "offerta attuale",
    ),
    "sold_price": (
        "sold for",
        "sold price",
        "winning bid",
        "final bid",
        "hammer price",
        "sale result",
        "verkauft für",
        "zuschlag",
        "adjudication",
        "vendu pour",
        "vendido por",
        "venduto per",
    ),
    "location": ("location", "located in", "vehicle location"),
    "status": ("status", "availability", "sale status"),
}.items():
    for _n in _names:
        LABELS[_n] = _field
for _field, _names in _MORE_LABELS.items():
    for _n in _names:
        LABELS.setdefault(_n, _field)

_MAX_LEN = {
    "bid": 60,
    "sold_price": 60,
    "color": 40,
    "interior_color": 60,
    "transmission": 60,
    "drivetrain": 40,
    "engine": 90,
    "body_style": 40,
    "fuel_type": 30,
    "registration": 12,
    "stock_number": 24,
    "make": 30,
    "model": 40,
    "trim": 80,
    "location": 80,
    "status": 40,
    "year": 20,
    "mileage": 40,
    "price": 60,
    "vin": 24,
}
_SOLD_RE = re.compile(
    r"^\s*(sold|sold out|vendu|verkauft|this vehicle (has been|is) sold|sold!|sale pending"
    r"|pending sale|sale pending!|deposit taken|reserved|under offer|under contract)\s*$",
    re.I,
)
_SOLD_ATTR = re.compile(r"(^|[-_ ])(sold|sale-pending|pending)($|[-_ ])", re.I)
# Latin letters with accents ("Kilométrage :", "Año:"): ranges, as fast as ASCII ones
_LABEL_COLON = re.compile(r"^([A-Za-zÀ-ÖØ-öø-ÿ][A-Za-zÀ-ÖØ-öø-ÿ .#/()'-]{0,34}?)\s*[:#]\s*(.+)$")


_LABEL_TAIL = re.compile(r"[\s:#.*]+$")


def norm_label(text: str) -> str:
    """Lowercase a label and strip trailing ":" "#" "." and "No."."""
    t = text.strip().lower().replace("\xa0", " ")
    t = _LABEL_TAIL.sub("", t)
    return " ".join(t.split())


def label_values(lines: list[list[str]], headings: set[int] | None = None) -> dict[str, list[str]]:
    """Label -> values (document order) from rendered lines: ``["VIN:", "X"]`` cells,
    ``"VIN: X"`` cells, and a label alone on its line followed by a value line
    (unless that line is a heading: "Interior" over a feature list is no colour)."""
    headings = headings or set()
    out: dict[str, list[str]] = {}

    def add(label: str, value: str) -> None:
        field = LABELS.get(norm_label(label))
        value = value.strip(" :\t")
        if field and value and len(value) <= _MAX_LEN.get(field, 80):
            out.setdefault(field, []).append(value)

    n = len(lines)
    for i, cells in enumerate(lines):
        j = 0
        while j < len(cells):
            cell = cells[j]
            lab = norm_label(cell)
            if lab in LABELS and len(cell) <= 40:
                if j + 1 < len(cells):
                    add(cell, cells[j + 1])
                    j += 2
                    continue
                if len(cells) == 1 and i not in headings and i + 1 < n and len(lines[i + 1]) <= 3:
                    value = " ".join(lines[i + 1])
                    if norm_label(lines[i + 1][0]) not in LABELS:
                        add(cell, value)
                j += 1
                continue
            m = _LABEL_COLON.match(cell)
            if m and norm_label(m.group(1)) in LABELS:
                add(m.group(1), m.group(2))
            j += 1
    return out


def apply_label_values(v: VehicleData, pairs: dict[str, list[str]], page: Page) -> None:
    """Fill empty fields of ``v`` from label/value pairs (first valid value wins)."""
    if v.year is None:
        for s in pairs.get("year", []):
            v.year = parse_year(s)
            if v.year:
                break
    if v.make is None:
        for s in pairs.get("make", []):
            v.make = canonical_make(s) or clean_space(s)
            if v.make:
                break
    for field in (
        "model",
        "trim",
        "color",
        "interior_color",
        "transmission",
        "drivetrain",
        "engine",
        "body_style",
        "fuel_type",
        "location",
    ):
        if getattr(v, field) is None and pairs.get(field):
            setattr(v, field, clean_space(pairs[field][0]))
    if v.stock_number is None:
        for s in pairs.get("stock_number", []):
            tok = s.split()[0] if s.split() else ""
            if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_/-]{1,23}", tok):
                v.stock_number = tok
                break
    if v.registration is None:
        for s in pairs.get("registration", []):
            reg = re.sub(r"\s+", "", s).upper()
            if (
                re.fullmatch(r"[A-Z0-9]{2,10}", reg)
                and re.search(r"\d", reg)
                and re.search(r"[A-Z]", reg)
            ):
                v.registration = reg
                break
    if v.vin is None:
        for s in pairs.get("vin", []):
            v.vin = normalize_serial(s.split()[0] if s.split() else s, v.year)
            if v.vin:
                break
    if v.mileage is None:
        for s in pairs.get("mileage", []):
            value, unit = parse_mileage(s, default_unit=page.default_unit)
            if value is not None:
                v.mileage, v.mileage_unit = value, unit
                break
    if v.asking_price is None:
        for s in [*pairs.get("price", []), *pairs.get("bid", [])]:
            amount, cur = parse_price(s, host=page.host)
            if amount is not None:
                v.asking_price, v.currency = amount, cur
                break
    if v.sold_price is None:
        for s in pairs.get("sold_price", []):
            amount, cur = parse_price(s, host=page.host)
            if amount is not None:
                v.sold_price, v.sale_status = amount, "sold"
                v.currency = v.currency or cur
                break
    if v.sale_status is None:
        for s in pairs.get("status", []):
            st = sale_status_from_text(s)
            if st:
                v.sale_status = st
                break


def sale_status_from_text(text: str) -> str | None:
    """ "sold" / "pending" from short status texts ("SOLD", "Sale pending"), else None."""
    t = text.strip().lower()
    if not t or len(t) > 40:
        return None
    if (
        "pending" in t
        or "under contract" in t
        or "under offer" in t
        or "reserved" in t
        or "deposit taken" in t
    ):
        return "pending"
    if (
        re.search(r"(^|\W)(sold|vendu|verkauft)(\W|$)", t)
        and "unsold" not in t
        and "not sold" not in t
    ):
        return "sold"
    return None


def detect_sale_status(page: Page, root: HtmlElement | None = None) -> str | None:
    """Sold markers: a short "SOLD" / "Sale pending" text or a ``sold`` class in the
    main content (decoys excluded)."""
    lines = page.lines if root is None else render_lines(root, page.excluded)
    for cells in lines[:400]:
        for c in cells:
            if len(c) <= 40 and _SOLD_RE.match(c):
                return sale_status_from_text(c)
    # a class naming a sale state is in the page's source (its words are ASCII, matched
    # case-blind): a page without them is spared reading every element's class
    if "sold" not in page.raw_lower and "pending" not in page.raw_lower:
        return None
    scope = page.body if root is None else root
    for el in scope.iter("div", "span", "p", "section", "article", "main", "li", "img"):
        if el in page.excluded:
            continue
        cls = el.get("class") or ""
        if cls and _SOLD_ATTR.search(cls):
            st = "pending" if "pending" in cls.lower() else "sold"
            return st
    return None


def vin_from_text(page: Page) -> str | None:
    """The only valid VIN in the main content, if exactly one distinct VIN appears."""
    found: list[str] = []
    for cells in page.lines:
        for c in cells:
            if len(c) >= 17:
                for vin in find_vins(c):
                    if vin not in found:
                        found.append(vin)
    return found[0] if len(found) == 1 else None


_PRICE_CLASS = re.compile(r"price|amount|cost|bid-value", re.I)
_NOT_PRICE_CLASS = re.compile(
    r"payment|monthly|finance|lease|msrp|was|old|strike|savings|discount|rebate|fee|estimate|calculator|range|similar|tax",
    re.I,
)


def price_from_dom(
    page: Page, root: HtmlElement | None = None
) -> tuple[Decimal | None, str | None]:
    """The first plausible price in an element whose class/id says "price" (not
    finance/payment/MSRP/savings...), decoys excluded."""
    scope = page.body if root is None else root
    for el in scope.iter():
        if not isinstance(el.tag, str) or el in page.excluded:
            continue
        attrs = (
            (el.get("class") or "") + " " + (el.get("id") or "") + " " + (el.get("itemprop") or "")
        )
        if not _PRICE_CLASS.search(attrs) or _NOT_PRICE_CLASS.search(attrs):
            continue
        content = el.get("content")
        text = " ".join((content or text_content(el)).split())
        if not text or len(text) > 120 or NO_PRICE.search(text):
            continue
        if MONTHLY.search(text):
            continue
        if not PRICE_MARK.search(text) and not el.get("itemprop"):
            continue
        amount, cur = parse_price(text, host=page.host)
        if amount is not None:
            if cur is None and el.get("itemprop") == "price":
                cur = None
            return amount, cur
    return None, None


def title_candidates(page: Page) -> list[str]:
    """Titles to parse, best first: h1s, og:title, structured names, <title>."""
    out = list(page.h1s)
    og = page.structured.og.get("og:title")
    if og:
        out.append(og)
    if page.title_tag:
        out.append(page.title_tag)
    return out


def best_title(candidates: Iterable[str]) -> tuple[str | None, object]:
    """The first candidate that parses to year + make (else the first with a make)."""
    first_make = None
    for t in candidates:
        tp = parse_title(t)
        if tp.year and tp.make:
            return t, tp
        if tp.make and first_make is None:
            first_make = (t, tp)
    return first_make if first_make else (None, parse_title(None))


# --- inventory cards --------------------------------------------------------------------


def card_vehicle(page: Page, card: HtmlElement, url: str | None) -> VehicleData:
    """Partial VehicleData from one inventory card element."""
    v = VehicleData(url=url, sources=["card"])
    headings: set[int] = set()
    lines = render_lines(card, None, headings)
    titles: list[str] = []
    for h in card.iter("h1", "h2", "h3", "h4", "h5", "h6"):
        for a in h.iter("a"):
            titles.append(" ".join(text_content(a).split()))
        titles.append(" ".join(text_content(h).split()))
    for a in card.iter("a"):
        titles.append(" ".join(text_content(a).split()))
        for attr in ("title", "aria-label"):
            if a.get(attr):
                titles.append(a.get(attr) or "")
    for el in card.iter():
        if isinstance(el.tag, str):
            for attr in ("data-dws-title", "data-title", "data-name", "alt"):
                if el.get(attr):
                    titles.append(el.get(attr) or "")
    titles.extend(" ".join(c) for c in lines[:6])
    title, tp = best_title(t for t in titles if t and len(t) < 160)
    if title:
        v.title = title
        v.year, v.make, v.model, v.trim = tp.year, tp.make, tp.model, tp.trim  # type: ignore[attr-defined]
    else:  # a title naming no make ("Santa Fé", "Vendo"): the card's heading or link text
        v.title = next((t for t in titles if t and len(t) < 160), None)
    pairs = label_values(lines, headings)
    apply_label_values(v, pairs, page)
    for el in card.iter():
        if not isinstance(el.tag, str):
            continue
        for name, value in el.attrib.items():
            if "vin" in name.lower() and v.vin is None:
                v.vin = normalize_vin(value)
            if (
                "stock" in name.lower()
                and v.stock_number is None
                and re.fullmatch(r"[A-Za-z0-9-]{2,24}", value or "")
            ):
                v.stock_number = value
    if v.vin is None:
        vins = [x for c in lines for cell in c for x in find_vins(cell)]
        if len(set(vins)) == 1:
            v.vin = vins[0]
    if v.asking_price is None:
        v.asking_price, v.currency = price_from_dom(page, card)
    if v.asking_price is None:
        for cells in lines:
            for c in cells:
                if re.search(r"[$£€]", c) and not MONTHLY.search(c):
                    amount, cur = parse_price(c, host=page.host)
                    if amount is not None:
                        v.asking_price, v.currency = amount, cur
                        break
            if v.asking_price is not None:
                break
    if v.mileage is None:
        for cells in lines:
            for c in cells:
                m = re.search(
                    r"(?<![\d,.])(\d{1,3}(?:[,.\s]\d{3})+|\d+)\s*(miles|mi\.?|kms?|kilomet\w+)\b",
                    c,
                    re.I,
                )
                if m:
                    v.mileage, v.mileage_unit = parse_mileage(
                        m.group(0), default_unit=page.default_unit
                    )
                    break
            if v.mileage is not None:
                break
    for cells in lines:
        for c in cells:
            m = re.match(r"^(.{2,40}?)\s+(Exterior|Interior)( Color| Colour)?$", c)
            if m:
                field = "color" if m.group(2) == "Exterior" else "interior_color"
                if getattr(v, field) is None:
                    setattr(v, field, m.group(1))
    if not v.image_urls:
        v.image_urls = image_candidates(card)
    return v
