"""Realistic, deterministic demo vehicles and ISO 3779 / FMVSS 115 VINs.

:func:`generate_vehicles` draws vehicles from a catalog of real makes and
models (each with the years it was built, 1965-2025), prices them (classics by
collector value, newer cars by depreciation from list price), and gives each a
17-character VIN whose 9th character is the check digit computed by
:func:`vin_check_digit`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CATALOG",
    "VIN_ALPHABET",
    "CatalogEntry",
    "corrupt_vin",
    "generate_vehicles",
    "is_valid_vin",
    "make_vin",
    "slugify",
    "vin_check_digit",
]

#: Characters a VIN may hold (I, O and Q are never used).
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
_TRANSLITERATION = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# Position 10 (model year) cycles every 30 years from 1980 ("A"); 1950-1979
# reuse the cycle, which keeps the check digit rule meaningful for classics.
_YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"
_VIN_RE = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")


def vin_check_digit(vin: str) -> str:
    """The check digit (``0``-``9`` or ``X``) for a 17-character VIN; the
    character at position 9 is ignored (its weight is 0)."""
    vin = vin.upper()
    if len(vin) != 17:
        raise ValueError(f"a VIN has 17 characters, got {len(vin)}")
    try:
        total = sum(_TRANSLITERATION[ch] * w for ch, w in zip(vin, _WEIGHTS, strict=True))
    except KeyError as exc:
        raise ValueError(f"invalid VIN character {exc.args[0]!r}") from None
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def is_valid_vin(vin: str | None) -> bool:
    """True for a 17-character VIN with legal characters and a correct check digit."""
    if not vin or not _VIN_RE.match(vin.upper()):
        return False
    return vin[8].upper() == vin_check_digit(vin)


def make_vin(rng: random.Random, wmi: str, year: int) -> str:
    """A valid VIN: manufacturer prefix, random descriptor, check digit,
    model-year code, plant letter, 6-digit serial."""
    descriptor = "".join(rng.choice(VIN_ALPHABET) for _ in range(5))
    year_code = _YEAR_CODES[(year - 1980) % 30]
    plant = rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")
    serial = f"{rng.randrange(10**6):06d}"
    draft = f"{wmi}{descriptor}0{year_code}{plant}{serial}"
    return draft[:8] + vin_check_digit(draft) + draft[9:]


def corrupt_vin(vin: str) -> str:
    """``vin`` with a wrong (but well-formed) check digit."""
    good = vin[8]
    wrong = "0123456789X"[("0123456789X".index(good) + 3) % 11]
    return vin[:8] + wrong + vin[9:]


def slugify(text: str) -> str:
    """Lowercase words joined by hyphens: ``Mercedes-Benz SL`` -> ``mercedes-benz-sl``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class CatalogEntry:
    """One real model line: years built, body, drivetrain and value.

    ``value`` is the list price of a new one (years >= 1990) or the typical
    price of a good one today (classics before 1990).
    """

    make: str
    model: str
    first_year: int
    last_year: int
    body_style: str
    trims: tuple[str, ...]
    engines: tuple[str, ...]
    value: int
    fuel_type: str = "Gasoline"
    drivetrain: str = "RWD"
    wmi: str = "1FA"


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        "Ford",
        "Mustang",
        1965,
        1973,
        "Coupe",
        ("Fastback", "GT", "Mach 1", "Coupe"),
        ("289 V8", "302 V8", "390 V8"),
        48000,
        wmi="5F0",
    ),
    CatalogEntry(
        "Ford",
        "Mustang",
        2005,
        2025,
        "Coupe",
        ("EcoBoost", "GT", "GT Premium", "Mach 1", "Shelby GT350"),
        ("5.0L V8", "2.3L EcoBoost I4"),
        42000,
        wmi="1FA",
    ),
    CatalogEntry(
        "Ford",
        "F-150",
        1980,
        2025,
        "Pickup Truck",
        ("XL", "XLT", "Lariat", "King Ranch", "Raptor"),
        ("5.0L V8", "3.5L EcoBoost V6"),
        52000,
        "Gasoline",
        "4WD",
        "1FT",
    ),
    CatalogEntry(
        "Ford",
        "Bronco",
        1966,
        1977,
        "SUV",
        ("Sport", "Ranger", "Base"),
        ("302 V8", "170 I6"),
        85000,
        drivetrain="4WD",
        wmi="U15",
    ),
    CatalogEntry(
        "Ford",
        "Bronco",
        2021,
        2025,
        "SUV",
        ("Big Bend", "Badlands", "Wildtrak", "Raptor"),
        ("2.7L EcoBoost V6", "2.3L EcoBoost I4"),
        48000,
        drivetrain="4WD",
        wmi="1FM",
    ),
    CatalogEntry(
        "Chevrolet",
        "Corvette",
        1965,
        1982,
        "Coupe",
        ("Sting Ray", "Stingray", "Convertible"),
        ("327 V8", "350 V8", "427 V8"),
        52000,
        wmi="194",
    ),
    CatalogEntry(
        "Chevrolet",
        "Corvette",
        1997,
        2025,
        "Coupe",
        ("Stingray 1LT", "Stingray 2LT", "Grand Sport", "Z06"),
        ("6.2L V8", "5.7L V8"),
        72000,
        wmi="1G1",
    ),
    CatalogEntry(
        "Chevrolet",
        "Camaro",
        1967,
        1981,
        "Coupe",
        ("SS", "RS", "Z28"),
        ("350 V8", "396 V8"),
        45000,
        wmi="124",
    ),
    CatalogEntry(
        "Chevrolet",
        "Camaro",
        2010,
        2024,
        "Coupe",
        ("1LT", "2SS", "ZL1"),
        ("6.2L V8", "3.6L V6"),
        38000,
        wmi="2G1",
    ),
    CatalogEntry(
        "Chevrolet",
        "Chevelle",
        1965,
        1977,
        "Coupe",
        ("Malibu", "SS 396", "SS 454"),
        ("350 V8", "396 V8", "454 V8"),
        55000,
        wmi="136",
    ),
    CatalogEntry(
        "Chevrolet",
        "Silverado 1500",
        1999,
        2025,
        "Pickup Truck",
        ("WT", "LT", "RST", "LTZ", "High Country"),
        ("5.3L V8", "6.2L V8"),
        50000,
        drivetrain="4WD",
        wmi="1GC",
    ),
    CatalogEntry(
        "Chevrolet",
        "C10",
        1965,
        1987,
        "Pickup Truck",
        ("Custom Deluxe", "Cheyenne", "Silverado"),
        ("350 V8", "250 I6"),
        32000,
        wmi="CE1",
    ),
    CatalogEntry(
        "Toyota",
        "Camry",
        1990,
        2025,
        "Sedan",
        ("LE", "SE", "XLE", "XSE"),
        ("2.5L I4", "3.5L V6"),
        29000,
        "Gasoline",
        "FWD",
        "4T1",
    ),
    CatalogEntry(
        "Toyota",
        "Tacoma",
        1995,
        2025,
        "Pickup Truck",
        ("SR", "SR5", "TRD Sport", "TRD Off-Road", "Limited"),
        ("3.5L V6", "2.7L I4"),
        36000,
        drivetrain="4WD",
        wmi="3TM",
    ),
    CatalogEntry(
        "Toyota",
        "4Runner",
        1990,
        2024,
        "SUV",
        ("SR5", "TRD Off-Road", "Limited", "TRD Pro"),
        ("4.0L V6",),
        42000,
        drivetrain="4WD",
        wmi="JTE",
    ),
    CatalogEntry(
        "Toyota",
        "Land Cruiser",
        1965,
        1989,
        "SUV",
        ("FJ40", "FJ60", "FJ62"),
        ("4.2L I6",),
        60000,
        drivetrain="4WD",
        wmi="JT3",
    ),
    CatalogEntry(
        "Toyota",
        "Prius",
        2001,
        2025,
        "Hatchback",
        ("L Eco", "LE", "XLE", "Limited"),
        ("1.8L I4 Hybrid",),
        28000,
        "Hybrid",
        "FWD",
        "JTD",
    ),
    CatalogEntry(
        "Honda",
        "Civic",
        1990,
        2025,
        "Sedan",
        ("LX", "EX", "Sport", "Si", "Type R"),
        ("2.0L I4", "1.5L Turbo I4"),
        26000,
        "Gasoline",
        "FWD",
        "2HG",
    ),
    CatalogEntry(
        "Honda",
        "Accord",
        1990,
        2025,
        "Sedan",
        ("LX", "EX-L", "Sport", "Touring"),
        ("1.5L Turbo I4", "2.0L Turbo I4"),
        30000,
        "Gasoline",
        "FWD",
        "1HG",
    ),
    CatalogEntry(
        "Honda",
        "CR-V",
        1997,
        2025,
        "SUV",
        ("LX", "EX", "EX-L", "Touring"),
        ("1.5L Turbo I4",),
        32000,
        "Gasoline",
        "AWD",
        "2HK",
    ),
    CatalogEntry(
        "Jeep",
        "Wrangler",
        1990,
        2025,
        "SUV",
        ("Sport", "Sahara", "Rubicon", "Willys"),
        ("3.6L V6", "2.0L Turbo I4"),
        40000,
        drivetrain="4WD",
        wmi="1C4",
    ),
    CatalogEntry(
        "Jeep",
        "Grand Cherokee",
        1993,
        2025,
        "SUV",
        ("Laredo", "Limited", "Overland", "Summit"),
        ("3.6L V6", "5.7L V8"),
        45000,
        drivetrain="4WD",
        wmi="1C4",
    ),
    CatalogEntry(
        "Porsche",
        "911",
        1965,
        1989,
        "Coupe",
        ("S", "T", "Targa", "Carrera"),
        ("2.0L Flat-6", "2.7L Flat-6", "3.2L Flat-6"),
        110000,
        wmi="WP0",
    ),
    CatalogEntry(
        "Porsche",
        "911",
        1999,
        2025,
        "Coupe",
        ("Carrera", "Carrera S", "Targa 4", "Turbo", "GT3"),
        ("3.0L Twin-Turbo Flat-6", "4.0L Flat-6"),
        120000,
        wmi="WP0",
    ),
    CatalogEntry(
        "BMW",
        "3 Series",
        1990,
        2025,
        "Sedan",
        ("328i", "330i", "330i xDrive", "M340i"),
        ("2.0L Turbo I4", "3.0L Turbo I6"),
        46000,
        wmi="WBA",
    ),
    CatalogEntry(
        "BMW",
        "M3",
        1988,
        2025,
        "Sedan",
        ("Base", "Competition", "CS"),
        ("3.0L Twin-Turbo I6", "4.0L V8"),
        76000,
        wmi="WBS",
    ),
    CatalogEntry(
        "Mercedes-Benz",
        "SL-Class",
        1965,
        1989,
        "Convertible",
        ("230 SL", "280 SL", "450 SL", "560 SL"),
        ("2.8L I6", "4.5L V8", "5.6L V8"),
        65000,
        wmi="WDB",
    ),
    CatalogEntry(
        "Mercedes-Benz",
        "C-Class",
        1994,
        2025,
        "Sedan",
        ("C 300", "C 300 4MATIC", "AMG C 43"),
        ("2.0L Turbo I4",),
        47000,
        wmi="W1K",
    ),
    CatalogEntry(
        "Tesla",
        "Model 3",
        2017,
        2025,
        "Sedan",
        ("Standard Range", "Long Range", "Performance"),
        ("Dual Motor Electric", "Single Motor Electric"),
        45000,
        "Electric",
        "AWD",
        "5YJ",
    ),
    CatalogEntry(
        "Tesla",
        "Model Y",
        2020,
        2025,
        "SUV",
        ("Long Range", "Performance"),
        ("Dual Motor Electric",),
        50000,
        "Electric",
        "AWD",
        "7SA",
    ),
    CatalogEntry(
        "Subaru",
        "Outback",
        1995,
        2025,
        "Wagon",
        ("Base", "Premium", "Limited", "Wilderness"),
        ("2.5L Flat-4", "2.4L Turbo Flat-4"),
        33000,
        "Gasoline",
        "AWD",
        "4S4",
    ),
    CatalogEntry(
        "Mazda",
        "MX-5 Miata",
        1990,
        2025,
        "Convertible",
        ("Sport", "Club", "Grand Touring"),
        ("2.0L I4", "1.8L I4"),
        30000,
        wmi="JM1",
    ),
    CatalogEntry(
        "Volkswagen",
        "Beetle",
        1965,
        1979,
        "Coupe",
        ("Deluxe", "Super Beetle", "Convertible"),
        ("1.6L Flat-4",),
        18000,
        wmi="118",
    ),
    CatalogEntry(
        "Volkswagen",
        "Golf GTI",
        1990,
        2024,
        "Hatchback",
        ("S", "SE", "Autobahn"),
        ("2.0L Turbo I4",),
        32000,
        "Gasoline",
        "FWD",
        "3VW",
    ),
    CatalogEntry(
        "Dodge",
        "Charger",
        1966,
        1974,
        "Coupe",
        ("R/T", "500", "SE"),
        ("383 V8", "440 V8"),
        70000,
        wmi="XS2",
    ),
    CatalogEntry(
        "Dodge",
        "Challenger",
        2008,
        2023,
        "Coupe",
        ("SXT", "R/T", "Scat Pack", "SRT Hellcat"),
        ("5.7L V8", "6.4L V8", "3.6L V6"),
        40000,
        wmi="2C3",
    ),
    CatalogEntry(
        "Ram",
        "1500",
        2011,
        2025,
        "Pickup Truck",
        ("Tradesman", "Big Horn", "Laramie", "Limited"),
        ("5.7L V8", "3.6L V6"),
        48000,
        drivetrain="4WD",
        wmi="1C6",
    ),
    CatalogEntry(
        "Nissan",
        "Altima",
        1993,
        2025,
        "Sedan",
        ("S", "SV", "SR", "SL"),
        ("2.5L I4",),
        27000,
        "Gasoline",
        "FWD",
        "1N4",
    ),
    CatalogEntry(
        "Audi",
        "Q5",
        2009,
        2025,
        "SUV",
        ("Premium", "Premium Plus", "Prestige"),
        ("2.0L Turbo I4",),
        47000,
        "Gasoline",
        "AWD",
        "WA1",
    ),
    CatalogEntry(
        "Lexus",
        "RX",
        1999,
        2025,
        "SUV",
        ("RX 350", "RX 350 F Sport", "RX 450h"),
        ("3.5L V6", "2.4L Turbo I4"),
        52000,
        "Gasoline",
        "AWD",
        "2T2",
    ),
    CatalogEntry(
        "Hyundai",
        "Tucson",
        2005,
        2025,
        "SUV",
        ("SE", "SEL", "N Line", "Limited"),
        ("2.5L I4",),
        30000,
        "Gasoline",
        "FWD",
        "KM8",
    ),
    CatalogEntry(
        "Kia",
        "Telluride",
        2020,
        2025,
        "SUV",
        ("LX", "S", "EX", "SX"),
        ("3.8L V6",),
        40000,
        "Gasoline",
        "AWD",
        "5XY",
    ),
    CatalogEntry(
        "Cadillac",
        "Escalade",
        1999,
        2025,
        "SUV",
        ("Luxury", "Premium Luxury", "Sport Platinum"),
        ("6.2L V8", "3.0L Turbo-Diesel I6"),
        85000,
        drivetrain="4WD",
        wmi="1GY",
    ),
    CatalogEntry(
        "Land Rover",
        "Defender",
        2020,
        2025,
        "SUV",
        ("90 S", "110 SE", "110 X"),
        ("3.0L Turbo I6", "2.0L Turbo I4"),
        62000,
        "Gasoline",
        "4WD",
        "SAL",
    ),
    CatalogEntry(
        "Plymouth",
        "Barracuda",
        1965,
        1974,
        "Coupe",
        ("Formula S", "'Cuda", "Gran Coupe"),
        ("340 V8", "383 V8"),
        60000,
        wmi="BS2",
    ),
    CatalogEntry(
        "Pontiac",
        "GTO",
        1965,
        1974,
        "Coupe",
        ("Base", "Judge", "Convertible"),
        ("389 V8", "400 V8"),
        55000,
        wmi="242",
    ),
    CatalogEntry("Datsun", "240Z", 1970, 1973, "Coupe", ("Base",), ("2.4L I6",), 40000, wmi="HLS"),
    CatalogEntry(
        "Jaguar",
        "E-Type",
        1965,
        1974,
        "Convertible",
        ("Series 1", "Series 2", "Series 3 V12"),
        ("4.2L I6", "5.3L V12"),
        120000,
        wmi="1E1",
    ),
)

_COLORS = (
    "Black",
    "White",
    "Silver",
    "Gray",
    "Red",
    "Blue",
    "Dark Green",
    "Yellow",
    "Orange",
    "Burgundy",
    "Pearl White",
    "Midnight Blue",
    "Candy Apple Red",
    "Champagne",
)
_INTERIORS = (
    "Black Leather",
    "Tan Leather",
    "Gray Cloth",
    "Black Cloth",
    "Red Leather",
    "Parchment Vinyl",
)
_CLASSIC_TRANSMISSIONS = ("4-Speed Manual", "3-Speed Automatic", "3-Speed Manual")
_MODERN_TRANSMISSIONS = (
    "Automatic",
    "8-Speed Automatic",
    "10-Speed Automatic",
    "6-Speed Manual",
    "CVT",
)


def _price(entry: CatalogEntry, trim: str, year: int, mileage: int, rng: random.Random) -> int:
    """Classics by collector value; newer cars depreciated from list price,
    with higher trims (later in ``entry.trims``) worth more."""
    premium = 1 + 0.1 * entry.trims.index(trim)
    if year < 1990:
        price = entry.value * premium * rng.uniform(0.55, 1.5)
        # Classics sell at round thousands.
        return int(round(price, -3))
    age = max(0, 2025 - year)
    price = entry.value * premium * max(0.22, 0.85 * 0.91**age) * rng.uniform(0.9, 1.1)
    price -= min(mileage * 0.02, price * 0.3)
    price = max(price, rng.uniform(3500, 6500))
    # Dealer pricing: 24,995 / 24,900 / 24,495.
    return int(price // 1000) * 1000 + rng.choice((495, 900, 995))


def _mileage(year: int, rng: random.Random) -> int:
    age = 2025 - year
    if age <= 0:
        return rng.randrange(3, 2500)
    if year < 1990:
        return rng.randrange(8_000, 120_000)
    # Old daily drivers top out in the 200,000s, not at 15,000 a year forever.
    miles = min(age * rng.uniform(5_000, 15_000), rng.uniform(150_000, 280_000))
    return int(miles) // 10 * 10 + rng.randrange(10)


def _description(v: dict[str, Any], rng: random.Random) -> str:
    openers = (
        "Clean Carfax, one owner.",
        "Freshly serviced and detailed.",
        "Garage kept and well maintained.",
        "Local trade-in with service records.",
        "Numbers-matching and thoroughly documented.",
    )
    return (
        f"{rng.choice(openers)} This {v['year']} {v['make']} {v['model']} {v['trim']} in "
        f"{v['color']} has {v['mileage']:,} miles, a {v['engine']} and a "
        f"{v['transmission'].lower()} transmission. Financing available."
    )


def generate_vehicles(n: int, seed: int = 0, *, first_id: int = 10001) -> list[dict[str, Any]]:
    """``n`` deterministic vehicles (dicts of ground truth, without paths or
    images): id, title, year, make, model, trim, vin, stock_number, price,
    currency, mileage, mileage_unit, color, interior_color, transmission,
    drivetrain, body_style, fuel_type, engine, description, sale_status."""
    rng = random.Random(f"nuke-demo-vehicles:{seed}")
    vehicles = []
    for i in range(n):
        entry = rng.choice(CATALOG)
        year = rng.randint(entry.first_year, entry.last_year)
        mileage = _mileage(year, rng)
        classic = year < 1990
        if entry.fuel_type == "Electric":
            transmission = "Single-Speed Automatic"
        else:
            transmission = rng.choice(_CLASSIC_TRANSMISSIONS if classic else _MODERN_TRANSMISSIONS)
        vid = first_id + i
        trim = rng.choice(entry.trims)
        vehicle: dict[str, Any] = {
            "id": vid,
            "year": year,
            "make": entry.make,
            "model": entry.model,
            "trim": trim,
            "vin": make_vin(rng, entry.wmi, year),
            "stock_number": f"{entry.make[0]}{vid}",
            "price": _price(entry, trim, year, mileage, rng),
            "currency": "USD",
            "mileage": mileage,
            "mileage_unit": "mi",
            "color": rng.choice(_COLORS),
            "interior_color": rng.choice(_INTERIORS),
            "transmission": transmission,
            "drivetrain": entry.drivetrain,
            "body_style": entry.body_style,
            "fuel_type": entry.fuel_type,
            "engine": rng.choice(entry.engines),
            "sale_status": "for_sale",
        }
        vehicle["title"] = f"{year} {entry.make} {entry.model} {vehicle['trim']}"
        vehicle["description"] = _description(vehicle, rng)
        vehicles.append(vehicle)
    return vehicles
