"""VIN validation (ISO 3779 with the North-American check digit) and VIN search.

Rule for short serials: vehicles built before 1981 carry manufacturer serials of
varying length (e.g. ``P6FH233347`` on a 1956 Thunderbird). Extractors keep such a
value as ``vin`` only when **all** of these hold: it comes from an explicit VIN /
serial / chassis label (a label/value pair, a ``s/n`` prefix, or schema.org
``vehicleIdentificationNumber``), the vehicle's year is known and before 1981,
and the value is 5 to 16 letters/digits with at least one digit. A 17-character
value whose check digit fails is never stored as ``vin``, whatever its source.
"""

from __future__ import annotations

import re

_TRANSLIT = {
    **{str(d): d for d in range(10)},
    "A": 1,
    "B": 2,
    "C": 3,
    "D": 4,
    "E": 5,
    "F": 6,
    "G": 7,
    "H": 8,
    "J": 1,
    "K": 2,
    "L": 3,
    "M": 4,
    "N": 5,
    "P": 7,
    "R": 9,
    "S": 2,
    "T": 3,
    "U": 4,
    "V": 5,
    "W": 6,
    "X": 7,
    "Y": 8,
    "Z": 9,
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# ISO 3779: the last four characters (the end of the serial number) are numeric
_VIN_SHAPE = re.compile(r"^[A-HJ-NPR-Z0-9]{13}[0-9]{4}$")
# candidates in free text: 17 VIN characters not glued to other letters/digits
_VIN_IN_TEXT = re.compile(r"(?<![A-Za-z0-9])([A-HJ-NPR-Za-hj-npr-z0-9]{17})(?![A-Za-z0-9])")
_SHORT_SERIAL = re.compile(r"^(?=.*\d)[A-Z0-9]{5,16}$")
SHORT_SERIAL_MAX_YEAR = 1980


def is_valid_vin(vin: str) -> bool:
    """True if ``vin`` is a 17-character VIN whose check digit (position 9) is right.

    Case-insensitive; surrounding whitespace is ignored. I, O and Q never occur in a
    VIN, so a value containing them is invalid.
    """
    if not isinstance(vin, str):
        return False
    v = vin.strip().upper()
    if not _VIN_SHAPE.match(v):
        return False
    total = sum(_TRANSLIT[c] * w for c, w in zip(v, _WEIGHTS, strict=True))
    check = total % 11
    return v[8] == ("X" if check == 10 else str(check))


def normalize_vin(text: str | None) -> str | None:
    """Uppercase and strip ``text`` (also inner spaces/dashes) and return it if it is a
    valid 17-character VIN, else None."""
    if not text:
        return None
    v = re.sub(r"[\s\-]", "", str(text)).upper()
    return v if is_valid_vin(v) else None


def normalize_serial(text: str | None, year: int | None) -> str | None:
    """A labelled VIN value: a valid VIN, or a pre-1981 short serial (see module doc)."""
    if not text:
        return None
    vin = normalize_vin(text)
    if vin:
        return vin
    v = re.sub(r"[\s\-]", "", str(text)).upper()
    if len(v) == 17 or year is None or year > SHORT_SERIAL_MAX_YEAR:
        return None
    return v if _SHORT_SERIAL.match(v) else None


def find_vins(text: str) -> list[str]:
    """All distinct valid VINs in ``text``, in order of appearance."""
    out: list[str] = []
    for m in _VIN_IN_TEXT.finditer(text):
        v = m.group(1).upper()
        if v not in out and is_valid_vin(v):
            out.append(v)
    return out


# --- decoding: make and model year (vininfo's WMI table and year codes) ---------------

_MANUFACTURER_MAKES = {  # vininfo manufacturer names that are groups, not makes
    "daimlerchrysler ag/daimler ag": "Mercedes-Benz",
    "mercedes-benz (suv)": "Mercedes-Benz",
    "bmw m": "BMW",
    "general motors": None,
    "ford motor company": "Ford",
}


_WMI_MAKES = {"KMH": "Hyundai"}  # vininfo 1.11 names Genesis for Hyundai's own KMH


def vin_make(vin: str) -> str | None:
    """The make a valid 17-character VIN's manufacturer code (WMI) names, when it names
    exactly one known make (vininfo's WMI table), else None."""
    from vininfo import Vin

    from nuke_crawl.extraction.text import canonical_make

    if not is_valid_vin(vin):
        return None
    if vin[:3] in _WMI_MAKES:
        return _WMI_MAKES[vin[:3]]
    try:
        name = Vin(vin).manufacturer
    except Exception:  # noqa: BLE001 (vininfo's own validation errors)
        return None
    if not name:
        return None
    key = name.strip().lower()
    if key in _MANUFACTURER_MAKES:
        return _MANUFACTURER_MAKES[key]
    return canonical_make(name) or canonical_make(name.split()[0])


def vin_years(vin: str) -> list[int]:
    """The model years a valid 17-character VIN's tenth character allows (1981 on). For
    North-American VINs (WMI 1-5) the seventh character narrows the 30-year cycle: a
    letter means 2010 or later, a digit 1980-2009."""
    from nuke_crawl.extraction.text import max_year

    if not is_valid_vin(vin):
        return []
    letters = "ABCDEFGHJKLMNPRSTVWXY123456789"
    code = vin[9]
    if code not in letters:
        return []
    years = [y for y in range(1980 + letters.index(code), max_year() + 1, 30)]
    if vin[0] in "12345":
        years = [y for y in years if (y >= 2010) == vin[6].isalpha()]
    return years
