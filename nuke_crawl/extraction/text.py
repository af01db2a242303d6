"""Text parsing: makes, "YEAR MAKE MODEL TRIM" titles, prices, mileages, labels."""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources

from price_parser import Price

# Canonical make names. Multi-word makes are matched before single words.
_MAKES: tuple[str, ...] = (
    "Acura",
    "Alfa Romeo",
    "AMC",
    "Aston Martin",
    "Audi",
    "Austin",
    "Austin-Healey",
    "Bentley",
    "BMW",
    "Bugatti",
    "Buick",
    "BYD",
    "Cadillac",
    "Chevrolet",
    "Chrysler",
    "Citroen",
    "Cupra",
    "Dacia",
    "Daewoo",
    "Daihatsu",
    "Datsun",
    "DeLorean",
    "DeSoto",
    "Dodge",
    "DS",
    "Eagle",
    "Ferrari",
    "Fiat",
    "Fisker",
    "Ford",
    "Genesis",
    "Geo",
    "GMC",
    "Holden",
    "Honda",
    "Hudson",
    "Hummer",
    "Hyundai",
    "Infiniti",
    "International",
    "Isuzu",
    "Iveco",
    "Jaguar",
    "Jeep",
    "Jensen",
    "Kia",
    "Koenigsegg",
    "Lada",
    "Lamborghini",
    "Lancia",
    "Land Rover",
    "Lexus",
    "Lincoln",
    "Lotus",
    "Lucid",
    "Maserati",
    "Maybach",
    "Mazda",
    "McLaren",
    "Mercedes-Benz",
    "Mercury",
    "MG",
    "Mini",
    "Mitsubishi",
    "Morgan",
    "Nash",
    "Nissan",
    "Oldsmobile",
    "Opel",
    "Packard",
    "Peugeot",
    "Plymouth",
    "Polestar",
    "Pontiac",
    "Porsche",
    "Ram",
    "Renault",
    "Rivian",
    "Rolls-Royce",
    "Rover",
    "Saab",
    "Saturn",
    "Scion",
    "Seat",
    "Shelby",
    "Skoda",
    "Smart",
    "Studebaker",
    "Subaru",
    "Sunbeam",
    "Suzuki",
    "Tesla",
    "Toyota",
    "Triumph",
    "TVR",
    "Vauxhall",
    "Volkswagen",
    "Volvo",
    "Willys",
    "Harley-Davidson",
    "Ducati",
    "Kawasaki",
    "Yamaha",
    "KTM",
    "Indian",
    "Freightliner",
    "Kenworth",
    "Peterbilt",
    "Mack",
    "Winnebago",
    "Airstream",
    "Bailey",
    "Elddis",
    "Swift",
    "Hymer",
    "Karma",
    "VinFast",
)
_ALIASES: dict[str, str] = {
    "chevy": "Chevrolet",
    "vw": "Volkswagen",
    "mercedes": "Mercedes-Benz",
    "mercedes benz": "Mercedes-Benz",
    "merc": "Mercedes-Benz",
    "benz": "Mercedes-Benz",
    "landrover": "Land Rover",
    "land-rover": "Land Rover",
    "range rover": "Land Rover",
    "alfa": "Alfa Romeo",
    "alfa-romeo": "Alfa Romeo",
    "aston": "Aston Martin",
    "aston-martin": "Aston Martin",
    "rolls royce": "Rolls-Royce",
    "rolls": "Rolls-Royce",
    "austin healey": "Austin-Healey",
    "harley davidson": "Harley-Davidson",
    "harley": "Harley-Davidson",
    "citroën": "Citroen",
    "škoda": "Skoda",
    "vauxhall": "Vauxhall",
    "dodge ram": "Ram",
    "mini cooper": "Mini",
    "infinity": "Infiniti",
    "mclaren": "McLaren",
    "delorean": "DeLorean",
}
_MAKE_INDEX: dict[str, str] = {m.lower(): m for m in _MAKES}
_MAKE_INDEX.update({m.lower().replace("-", " "): m for m in _MAKES if "-" in m})
_MAKE_INDEX.update(_ALIASES)
_MAX_MAKE_WORDS = max(len(k.split()) for k in _MAKE_INDEX)
# lowercase single words usable to spot a make in a URL slug
MAKE_SLUGS: frozenset[str] = frozenset(
    k
    for k in _MAKE_INDEX
    if " " not in k
    and "-" not in k
    and k
    not in {
        "geo",
        "ds",
        "mini",
        "smart",
        "seat",
        "swift",
        "indian",
        "international",
        "eagle",
        "rover",
        "mack",
        "genesis",
    }
)

MIN_YEAR = 1886


def max_year() -> int:
    """The latest plausible model year (next year + 1)."""
    return _dt.date.today().year + 2


def canonical_make(text: str | None) -> str | None:
    """The canonical make for ``text`` ("chevy" -> "Chevrolet", "MERCEDES" ->
    "Mercedes-Benz"), or None if it is not a known make."""
    if not text:
        return None
    key = re.sub(r"\s+", " ", text.strip().lower().replace("_", " "))
    if key in _MAKE_INDEX:
        return _MAKE_INDEX[key]
    if key.replace("-", " ") in _MAKE_INDEX:
        return _MAKE_INDEX[key.replace("-", " ")]
    return None


def parse_year(text: str | int | None) -> int | None:
    """A plausible model year from ``2019``, ``"2019"``, ``"08/2022"``, ``"2022-08-01"``."""
    if text is None:
        return None
    if isinstance(text, int):
        return text if MIN_YEAR <= text <= max_year() else None
    m = re.search(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)", str(text))
    if not m:
        return None
    y = int(m.group(1))
    return y if MIN_YEAR <= y <= max_year() else None


@dataclass
class TitleParts:
    """What a vehicle title says."""

    year: int | None = None
    make: str | None = None
    model: str | None = None
    trim: str | None = None
    condition: str | None = None  # "new", "used", "certified"


_TOKEN = re.compile(r"[^\s,|/]+(?:/[^\s,|/]+)?")
_TITLE_CUT = re.compile(
    r"\s(?:[-|–—•]\s|for sale\b|in stock\b|\$|£|€|\(call\b|near\b)|\s[|]|\s-\s", re.I
)
_CONDITION = {
    "new": "new",
    "used": "used",
    "pre-owned": "used",
    "preowned": "used",
    "certified": "certified",
    "cpo": "certified",
    "demo": "used",
}
_MULTI_MODELS = {
    "grand cherokee",
    "grand caravan",
    "grand marquis",
    "grand prix",
    "grand am",
    "grand wagoneer",
    "range rover",
    "town & country",
    "santa fe",
    "santa cruz",
    "monte carlo",
    "el camino",
    "land cruiser",
    "model 3",
    "model s",
    "model x",
    "model y",
    "genesis coupe",
    "bronco sport",
    "transit connect",
    "crown victoria",
    "park avenue",
    "de ville",
    "rav 4",
    "cr v",
    "hr v",
    "e pace",
    "f pace",
    "f type",
    "i pace",
    "new beetle",
    "super duty",
    "sierra 1500",
    "silverado 1500",
    "niro ev",
    "ioniq 5",
    "ioniq 6",
    "model t",
    "model a",
}


def _model_key(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").strip(",;:()").split())


def _load_models() -> dict[str, frozenset[str]]:
    """data/models.json: make -> model names of several words (see its ``_about``)."""
    # importlib.resources, not a path: under scrapyd the package runs from a zipped egg
    data = resources.files("nuke_crawl.extraction").joinpath("data", "models.json")
    raw = json.loads(data.read_text(encoding="utf-8"))
    return {
        make: frozenset(_model_key(m) for m in models)
        for make, models in raw.items()
        if not make.startswith("_")
    }


MODELS_BY_MAKE: dict[str, frozenset[str]] = _load_models()
# multi-word names of any make, for titles whose make is not in the table
_ANY_MULTI: frozenset[str] = frozenset(
    {m for names in MODELS_BY_MAKE.values() for m in names if " " in m}
    | {_model_key(m) for m in _MULTI_MODELS}
)


def parse_title(title: str | None) -> TitleParts:
    """Split a title such as "Used 2019 Chevy Silverado 1500 LT | Dealer" into year,
    make (canonical), model and trim. Handles "MAKE MODEL YEAR TRIM" (UK style), UK
    plate-age codes after the year ("2013 63 SKODA CITIGO"), multi-word makes and
    aliases. Unknown makes give ``make=None``."""
    out = TitleParts()
    if not title:
        return out
    text = re.sub(r"\s+", " ", title).strip()
    cut = _TITLE_CUT.search(text)
    if cut and cut.start() > 6:
        text = text[: cut.start()].strip()
    tokens = [t for t in text.split(" ") if t]
    if not tokens:
        return out
    lowered = [t.lower().strip(".,:;()") for t in tokens]
    year_idx = None
    for i, t in enumerate(lowered[:8]):
        y = parse_year(t) if re.fullmatch(r"(1[89]|20)\d\d", t) else None
        if y:
            year_idx, out.year = i, y
            break
    make_idx, make_len = None, 0
    joined = " ".join(lowered)
    if "range rover" in joined and "land rover" not in joined:
        i = lowered.index("range")
        out.make = "Land Rover"
        rest = [
            t for j, t in enumerate(tokens[i:]) if not (year_idx is not None and j + i == year_idx)
        ]
        out.model, out.trim = _split_model_trim(rest)
        return out
    for i in range(min(len(tokens), 10)):
        for n in range(_MAX_MAKE_WORDS, 0, -1):
            chunk = " ".join(lowered[i : i + n])
            if len(lowered[i : i + n]) < n:
                continue
            if chunk in _MAKE_INDEX:
                make_idx, make_len = i, n
                break
        if make_idx is not None:
            break
    for t in lowered[: (year_idx if year_idx is not None else 1)]:
        if t in _CONDITION:
            out.condition = _CONDITION[t]
    if make_idx is None:
        return out
    out.make = _MAKE_INDEX[" ".join(lowered[make_idx : make_idx + make_len])]
    after = tokens[make_idx + make_len :]
    if year_idx is not None and year_idx > make_idx:
        # MAKE MODEL YEAR TRIM: the model is what lies between make and year
        between = tokens[make_idx + make_len : year_idx]
        if between:
            out.model = " ".join(between)
            trim = " ".join(tokens[year_idx + 1 :]).strip()
            out.trim = trim or None
            return out
        after = tokens[year_idx + 1 :]
    out.model, out.trim = _split_model_trim(after, out.make)
    return out


def _split_model_trim(tokens: list[str], make: str | None = None) -> tuple[str | None, str | None]:
    if not tokens:
        return None, None
    known = MODELS_BY_MAKE.get(make or "", frozenset())
    for n in range(min(4, len(tokens)), 0, -1):
        key = _model_key(" ".join(tokens[:n]))
        if key in known or (" " in key and key in _ANY_MULTI):
            model = " ".join(tokens[:n]).strip(",;:")
            return model or None, " ".join(tokens[n:]).strip(" ,;:-") or None
    low = [t.lower() for t in tokens]
    n = 1
    if len(tokens) >= 2:
        pair = " ".join(low[:2]).replace("-", " ")
        if pair in _MULTI_MODELS or low[1] in ("series", "class", "klasse") or low[0] in ("model",):
            n = 2
        if len(tokens) >= 3 and " ".join(low[:3]) in _MULTI_MODELS:
            n = 3
    model = " ".join(tokens[:n]).strip(",;:")
    trim = " ".join(tokens[n:]).strip(" ,;:-") or None
    return model or None, trim


# --- prices -------------------------------------------------------------------------------

_CURRENCY_SYMBOLS = {
    "$": "USD",
    "US$": "USD",
    "£": "GBP",
    "€": "EUR",
    "¥": "JPY",
    "C$": "CAD",
    "CA$": "CAD",
    "A$": "AUD",
    "AU$": "AUD",
    "CHF": "CHF",
    "Fr.": "CHF",
    "kr": "SEK",
    "zł": "PLN",
    "R$": "BRL",
}
# the currency of a country-code host, for amounts shown without a symbol
TLD_CURRENCY = {
    "uk": "GBP",
    "za": "ZAR",
    "br": "BRL",
    "ca": "CAD",
    "au": "AUD",
    "nz": "NZD",
    "ch": "CHF",
    "se": "SEK",
    "no": "NOK",
    "dk": "DKK",
    "pl": "PLN",
    "cz": "CZK",
    "mx": "MXN",
    "jp": "JPY",
    "in": "INR",
    "de": "EUR",
    "fr": "EUR",
    "it": "EUR",
    "es": "EUR",
    "nl": "EUR",
    "be": "EUR",
    "at": "EUR",
    "ie": "EUR",
    "fi": "EUR",
    "pt": "EUR",
    "lu": "EUR",
    "gr": "EUR",
    "sk": "EUR",
}
_CODES = r"USD|EUR|GBP|CAD|AUD|CHF|ZAR|BRL|SEK|NOK|DKK|PLN|NZD|JPY|MXN|CZK|INR"
# a price's currency mark: a symbol, an ISO code, or "R"/"kr" before digits
PRICE_MARK = re.compile(
    r"[$£€]|\b(?:" + _CODES + r")\b|(?<![A-Za-z])R\s?\d|\bkr\.?\s?\d|\d\s?kr\b|zł"
)
_TLD_DOLLAR = {"ca": "CAD", "au": "AUD", "nz": "NZD", "mx": "MXN", "sg": "SGD", "hk": "HKD"}
MONTHLY = re.compile(
    r"(/\s?mo\b|/\s?month|per\s+month|p/?m\b|monthly|a month|/\s?wk|per\s+week|weekly"
    r"|bi-?weekly|apr\b|down\b|deposit|\bfee\b|save\b|savings|discount|rebate|incentive)",
    re.I,
)
NO_PRICE = re.compile(
    r"call\s+for\s+price|price\s+on\s+request|poa\b|contact\s+(us\s+)?for\s+price|request\s+a?\s*price",
    re.I,
)
MIN_PRICE = Decimal(100)
MAX_PRICE = Decimal(50_000_000)


def parse_price(text: str | None, *, host: str = "") -> tuple[Decimal | None, str | None]:
    """(amount, ISO currency) from a price text ("€ 34.990", "£4,995", "$24,998").

    "Call For Price", monthly/finance figures and amounts outside 100..50M give
    ``(None, None)``. ``$`` means USD unless the host's country suggests another dollar.
    """
    if not text:
        return None, None
    text = text.strip()
    if not text or NO_PRICE.search(text) or len(text) > 80 and not re.search(r"[$£€]", text[:20]):
        return None, None
    m = re.search(r"([$£€]|\b(?:" + _CODES + r")\b)", text)
    if m:
        tail = text[m.end() : m.end() + 40]
        if MONTHLY.search(tail):
            return None, None
    p = Price.fromstring(text)
    if p.amount is None:
        return None, None
    symbol = p.currency
    if symbol is None and re.search(r"(?<![A-Za-z$])R\s?\d", text):
        symbol = "ZAR"  # "R 139 900": the rand (R$ is the real, found by price_parser)
    amount = Decimal(p.amount)
    if amount < MIN_PRICE or amount > MAX_PRICE:
        return None, None
    if amount == amount.to_integral_value():
        amount = amount.quantize(Decimal(1))
    return amount, currency_code(symbol, host)


def currency_code(symbol: str | None, host: str = "") -> str | None:
    """ISO 4217 code for a symbol or code found in a price."""
    if not symbol:
        return None
    s = symbol.strip()
    if s == "$":
        tld = host.rsplit(".", 1)[-1].lower() if host else ""
        return _TLD_DOLLAR.get(tld, "USD")
    if s in _CURRENCY_SYMBOLS:
        return _CURRENCY_SYMBOLS[s]
    if re.fullmatch(r"[A-Z]{3}", s):
        return s
    if s.lower() in ("kr", "kr."):
        return {"no": "NOK", "dk": "DKK"}.get(
            host.rsplit(".", 1)[-1].lower() if host else "", "SEK"
        )
    return None


def host_currency(host: str) -> str | None:
    """The currency of a country-code host ("autotrader.co.za" -> "ZAR"), else None."""
    return TLD_CURRENCY.get(host.rsplit(".", 1)[-1].lower()) if host else None


# --- mileage --------------------------------------------------------------------------------

_MILEAGE = re.compile(
    r"(?<![\d.,])(\d{1,3}(?:[,.\s]\d{3})+|\d{1,7})(?:\.\d+)?\s*(k\b)?\s*(miles?|mi\b|mls\b|kms?\b|kilomet(?:er|re)s?|km)?",
    re.I,
)
_METRIC_TLDS = frozenset(
    {
        "de",
        "fr",
        "it",
        "es",
        "nl",
        "be",
        "at",
        "ch",
        "pl",
        "se",
        "no",
        "dk",
        "fi",
        "pt",
        "cz",
        "ca",
        "au",
        "nz",
        "jp",
        "br",
        "mx",
        "za",
        "ie",
    }
)


def parse_mileage(
    text: str | None, *, default_unit: str | None = None
) -> tuple[int | None, str | None]:
    """(value, "mi"|"km") from "78,143", "81321 Miles", "790 km", "55k miles".

    The unit comes from the text; when the text names none, ``default_unit``.
    Values over 2,000,000 are rejected.
    """
    if text is None:
        return None, None
    m = _MILEAGE.search(str(text))
    if not m:
        return None, None
    digits = re.sub(r"[,.\s]", "", m.group(1))
    if not digits.isdigit():
        return None, None
    value = int(digits)
    if m.group(2):
        value *= 1000
    if value > 2_000_000:
        return None, None
    unit_text = (m.group(3) or "").lower()
    unit = "km" if unit_text.startswith("k") else "mi" if unit_text else default_unit
    return value, unit


def default_mileage_unit(host: str) -> str | None:
    """ "km" for hosts in metric countries, "mi" for .com/.us/.uk and others."""
    tld = host.rsplit(".", 1)[-1].lower() if host else ""
    if not tld:
        return None
    return "km" if tld in _METRIC_TLDS else "mi"


def clean_space(text: str | None) -> str | None:
    """Collapse whitespace; None for empty."""
    if text is None:
        return None
    t = " ".join(str(text).split())  # str.split() splits on every Unicode whitespace, as \s
    return t or None
