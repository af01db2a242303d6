"""``extract_page`` and ``discover_inventory_links``: the orchestration.

Order of trust for a detail page's fields: structured data (JSON-LD, microdata,
RDFa) > site adapter > per-organization selectors > generic heuristics. Each later
source only fills what the earlier ones left empty; nothing is invented.
"""

from __future__ import annotations

import re
from dataclasses import fields
from urllib.parse import urlsplit

from lxml.html import HtmlElement

from nuke_crawl.extraction.adapters import Adapter, adapters_for
from nuke_crawl.extraction.heuristics import (
    apply_label_values,
    best_title,
    card_vehicle,
    detect_sale_status,
    label_values,
    price_from_dom,
    title_candidates,
    vin_from_text,
)
from nuke_crawl.extraction.images import clean_image_urls, image_candidates
from nuke_crawl.extraction.model import PageExtraction, VehicleData
from nuke_crawl.extraction.page import MAX_PAGE_LINKS, Page, text_content
from nuke_crawl.extraction.selectors import select, vehicle_from_selectors
from nuke_crawl.extraction.state import card_state, page_state_vehicle
from nuke_crawl.extraction.text import host_currency, parse_mileage, parse_price, parse_title
from nuke_crawl.extraction.urls import (
    absolutize,
    canonical_listing_url,
    dedupe,
    is_next_label,
    looks_like_vehicle_url,
    page_number,
    same_site,
    sibling_vehicle_urls,
)
from nuke_crawl.extraction.vin import vin_make, vin_years

#: Vehicle links (``PageExtraction.vehicle_links``) one page yields at most, page order.
MAX_VEHICLE_LINKS = 2_000
#: Pagination links (``PageExtraction.next_pages``) one page yields at most, page order
#: (``rel=next`` first). The org spider follows fewer still
#: (``nuke_crawl.spiders.bounds.MAX_NEXT_PAGES_PER_PAGE``).
MAX_NEXT_PAGES = 100

_SCALAR_FIELDS = tuple(
    f.name for f in fields(VehicleData) if f.name not in ("image_urls", "sources", "url")
)
_JS_MARKERS = re.compile(
    r"algolia|__NEXT_DATA__|data-reactroot|ng-app|id=\"(root|app|__nuxt|__next)\"|"
    r"window\.__INITIAL_STATE__|enable javascript|requires javascript|data-v-app",
    re.I,
)
_INVENTORY_HINT = re.compile(
    r"inventory|vehicles|for[-_ ]sale|cars|trucks|search|used|new|stock|showroom|listings", re.I
)


def extract_page(
    html: str | bytes,
    url: str,
    *,
    selectors: dict[str, str] | None = None,
    max_images: int = 50,
    cards: bool = True,
) -> PageExtraction:
    """Extract one page.

    Returns the page's own vehicle when it is a detail page; otherwise ``vehicle`` is
    None and ``skip_reason`` is ``inventory_page`` (cards in ``listings``),
    ``missing_year_make``, ``js_shell`` (``needs_js=True``) or ``not_a_listing``.
    ``vehicle_links`` (same-site detail pages, de-duplicated, page order) and
    ``next_pages`` (pagination) are always filled. ``selectors`` are the
    organization's CSS selectors (see ``nuke_crawl.extraction.selectors``).
    ``cards=False``: inventory cards found only through the DOM (no structured data,
    adapter or selectors) carry their URL but no fields, for a crawler that fetches
    every detail page anyway (reading 50 cards is most of an inventory page's cost).
    """
    page = Page(html, url)
    selectors = selectors or {}
    adapters = adapters_for(page)
    result = PageExtraction(url=url, canonical_url=page.canonical_url)
    # bounded (MAX_PAGE_LINKS, MAX_VEHICLE_LINKS, MAX_NEXT_PAGES): a page flooded with
    # links costs the worker, and the crawler it answers, no more than a large real one
    result.vehicle_links = _vehicle_links(page, adapters, selectors)[:MAX_VEHICLE_LINKS]
    result.next_pages = _next_pages(page, selectors, set(result.vehicle_links))[:MAX_NEXT_PAGES]

    sd = page.structured
    own = _own_structured(page, sd.vehicles)
    adapter_detail = _first_opinion(a.is_detail_page(page) for a in adapters)

    vehicle = VehicleData(url=url)
    if own is not None:
        _merge(vehicle, own)
    for a in adapters:
        av = a.vehicle(page)
        if av is not None:
            _merge(vehicle, av)
    selector_title = False
    if selectors:
        sv = vehicle_from_selectors(page, selectors)
        if sv is not None:
            selector_title = bool(sv.year and sv.make)
            _merge(vehicle, sv)
    state_ok = False
    if own is None or not (vehicle.year and vehicle.make and vehicle.vin and vehicle.asking_price):
        state, sold_price = page_state_vehicle(page, vehicle.title)
        if state is not None:
            state_ok = bool(state.year and state.make)
            _merge(vehicle, state)
            if sold_price is not None and vehicle.sold_price is None:
                vehicle.sold_price = sold_price
    evidence = _heuristics(page, vehicle)
    evidence["title"] = evidence["title"] or selector_title or state_ok

    is_detail: bool
    if adapter_detail is not None:
        is_detail = adapter_detail
    elif own is not None:
        is_detail = True
    else:
        many_vehicles = len(sd.vehicles) >= 2 or len(sd.item_list_vehicles) >= 2
        title_ok = evidence["title"]
        specifics = evidence["vin"] or evidence["price"] or evidence["mileage"]
        if many_vehicles and not (title_ok and evidence["vin"]):
            is_detail = False
        elif title_ok and specifics:
            is_detail = True
        else:
            is_detail = False

    if is_detail:
        if vehicle.year is None or vehicle.make is None:
            result.skip_reason = "missing_year_make"
            return result
        vehicle.url = url
        vehicle.image_urls = _images(page, vehicle.image_urls, adapters, max_images)
        vehicle.sources = dedupe(vehicle.sources)
        if vehicle.mileage is None:
            vehicle.mileage_unit = None
        result.vehicle = vehicle
        return result

    result.listings = _listings(page, adapters, selectors, max_images, cards)
    if cards and result.listings:
        _cards_from_state(page, result.listings)
    if result.listings or len(result.vehicle_links) >= 2:
        result.skip_reason = "inventory_page"
        return result
    if _looks_js_shell(page, adapters):
        result.skip_reason = "js_shell"
        result.needs_js = True
        return result
    if (
        evidence["title"]
        and (evidence["vin"] or evidence["price"] or evidence["mileage"])
        or (evidence["vin"] or evidence["mileage"])
        and evidence["price"]
    ):
        result.skip_reason = "missing_year_make"
    else:
        result.skip_reason = "not_a_listing"
    return result


# --- merging ------------------------------------------------------------------------


def _merge(dst: VehicleData, src: VehicleData) -> None:
    """Fill dst's empty fields from src; images and sources are appended."""
    for name in _SCALAR_FIELDS:
        if getattr(dst, name) is None:
            value = getattr(src, name)
            if value is not None and value != "":
                setattr(dst, name, value)
    if dst.mileage is not None and dst.mileage_unit is None and src.mileage == dst.mileage:
        dst.mileage_unit = src.mileage_unit
    dst.image_urls.extend(src.image_urls)
    dst.sources.extend(src.sources)


def _first_opinion(values: object) -> bool | None:
    for v in values:  # type: ignore[attr-defined]
        if v is not None:
            return bool(v)
    return None


def _own_structured(page: Page, vehicles: list[VehicleData]) -> VehicleData | None:
    """The structured vehicle describing this page: the only one, or the one whose URL
    is this page."""
    if not vehicles:
        return None
    if len(vehicles) == 1:
        v = vehicles[0]
        if v.url and page.url:
            other = absolutize(v.url, page.url)
            if (
                other
                and canonical_listing_url(other) != page.canonical_url
                and looks_like_vehicle_url(other)
                and not looks_like_vehicle_url(page.url)
            ):
                return None  # a results page describing one of its cards
        return v
    for v in vehicles:
        if v.url and page.url:
            other = absolutize(v.url, page.url)
            if other and canonical_listing_url(other) == page.canonical_url:
                return v
    return None


def _heuristics(page: Page, v: VehicleData) -> dict[str, bool]:
    """Fill v from titles, label/value pairs, DOM prices, VINs in text and sold markers.
    Returns which kinds of detail-page evidence the page itself shows."""
    title, tp = best_title(title_candidates(page))
    title_ok = bool(tp.year and tp.make)  # type: ignore[attr-defined]
    if title:
        if v.title is None:
            v.title = title
        if v.year is None:
            v.year = tp.year  # type: ignore[attr-defined]
        if v.make is None:
            v.make = tp.make  # type: ignore[attr-defined]
        if v.model is None:
            v.model = tp.model  # type: ignore[attr-defined]
        if v.trim is None and tp.trim and (tp.model or "").lower() == (v.model or "").lower():  # type: ignore[attr-defined]
            v.trim = tp.trim  # type: ignore[attr-defined]
    if v.title is None and v.year and v.make:
        v.title = " ".join(str(x) for x in (v.year, v.make, v.model, v.trim) if x)
    pairs = label_values(page.lines, page.heading_lines)
    before = (v.vin, v.asking_price, v.mileage)
    apply_label_values(v, pairs, page)
    if pairs:
        v.sources.append("heuristics")
    if v.asking_price is None:
        amount, cur = price_from_dom(page)
        if amount is not None and amount != v.sold_price:
            v.asking_price, v.currency = amount, cur or v.currency
    if v.vin is None:
        v.vin = vin_from_text(page)
    if v.sale_status is None or v.sale_status == "for_sale":
        status = detect_sale_status(page)
        if status:
            v.sale_status = status
    if v.sold_price is None and "sold for" in page.raw_lower:
        m = _SOLD_FOR.search(" ".join(title_candidates(page)[:3]))
        if m:
            v.sold_price = parse_price(m.group(1), host=page.host)[0]
            if v.sold_price is not None:
                v.sale_status = "sold"
    if v.sale_status == "sold" and v.sold_price is None:
        # a sold auction's last bid is what it went for, not an asking price
        for s in pairs.get("bid", []):
            v.sold_price = parse_price(s, host=page.host)[0]
            if v.sold_price is not None:
                break
    if v.sold_price is not None and v.asking_price == v.sold_price:
        v.asking_price = None
    if v.mileage is None:
        for t in title_candidates(page)[:3]:
            m = _TITLE_MILEAGE.search(t)
            if m:
                v.mileage, v.mileage_unit = parse_mileage(
                    m.group(0), default_unit=page.default_unit
                )
                break
    _vin_checks(v)
    if v.asking_price is not None and v.currency is None:
        # a price from state or a label without its symbol: the page's shown currency
        v.currency = price_from_dom(page)[1] or host_currency(page.host)
    _tidy_model(v)
    return {
        "title": title_ok,
        "vin": v.vin is not None or bool(pairs.get("vin")),
        "price": v.asking_price is not None or before[1] is not None,
        "mileage": v.mileage is not None or bool(pairs.get("mileage")),
    }


_SOLD_FOR = re.compile(r"\bsold for\s+((?:[A-Z]{3}\s?|[$£€]\s?|R\$?\s?)[\d.,\s]{3,15})", re.I)
# "31k-Mile", "6k Miles", "42,000 miles", "12.500 km" in a title
_TITLE_MILEAGE = re.compile(
    r"(?<![\w.,$£€])(\d{1,3}(?:[,.]\d{3})+|\d{1,3}(?:\.\d)?\s?k|\d{1,6})[- ]?"
    r"(miles?|mi\b|kms?\b|kilomet(?:er|re)s?)",
    re.I,
)


def _vin_checks(v: VehicleData) -> None:
    """A VIN's manufacturer code and year character fill a missing make or year (never
    overrule what the page says)."""
    if not v.vin or (v.make and v.year):
        return
    if v.make is None:
        v.make = vin_make(v.vin)
    if v.year is None:
        years = vin_years(v.vin)
        if len(years) == 1:
            v.year = years[0]


def _tidy_model(v: VehicleData) -> None:
    """A model that repeats the title ("2018 Chevrolet Malibu LT", "Chevrolet Malibu"):
    re-split into model and trim."""
    if not v.model or not v.make:
        return
    low = v.model.lower()
    if not (low.startswith(v.make.lower() + " ") or re.match(r"(19|20)\d\d ", low)):
        return
    tp = parse_title(v.model if re.match(r"(19|20)\d\d ", low) else f"{v.year or ''} {v.model}")
    if tp.make == v.make and tp.model:
        v.model = tp.model
        if v.trim is None:
            v.trim = tp.trim


# --- images ---------------------------------------------------------------------------


def _images(
    page: Page, collected: list[str], adapters: list[Adapter], max_images: int
) -> list[str]:
    """Structured/adapter/selector images first, then the page's gallery (decoys and
    thumbnails linking to other vehicles left out); og:image only as a last resort."""
    candidates = list(collected)
    has_gallery_adapter = any(
        (adapter_vehicle := a.vehicle(page)) is not None and adapter_vehicle.image_urls
        for a in adapters
    )  # type: ignore[union-attr]
    if not has_gallery_adapter:
        skip = set(page.excluded)
        for a, url in page.anchors:
            if canonical_listing_url(url) != page.canonical_url and _is_vehicle_link(url, adapters):
                skip.update(a.iter())
        candidates.extend(image_candidates(page.body, skip))
    cleaned = clean_image_urls(candidates, page.url, max_images=max_images)
    if not cleaned and page.structured.og.get("og:image"):
        cleaned = clean_image_urls(
            [page.structured.og["og:image"]], page.url, max_images=max_images
        )
    return cleaned


# --- links ------------------------------------------------------------------------------


def _adapter_verdict(url: str, adapters: list[Adapter]) -> bool | None:
    """The first site adapter's opinion on ``url`` being a vehicle link, if any."""
    return _first_opinion(a.is_vehicle_link(url) for a in adapters)


def _is_vehicle_link(url: str, adapters: list[Adapter]) -> bool:
    verdict = _adapter_verdict(url, adapters)
    return looks_like_vehicle_url(url) if verdict is None else verdict


def _normalize(url: str, adapters: list[Adapter]) -> str:
    for a in adapters:
        url = a.normalize_link(url)
    return canonical_listing_url(url)


def _vehicle_links(page: Page, adapters: list[Adapter], selectors: dict[str, str]) -> list[str]:
    out: list[str] = []
    if selectors.get("vehicle_link"):
        for a in select(page.tree, selectors["vehicle_link"]):
            url = absolutize(a.get("href"), page.url)
            if url and same_site(url, page.url):
                out.append(_normalize(url, adapters))
                if len(out) >= MAX_PAGE_LINKS:
                    break
    else:
        verdicts = [(url, _adapter_verdict(url, adapters)) for _, url in page.anchors]
        found = {
            url
            for url, verdict in verdicts
            if (looks_like_vehicle_url(url) if verdict is None else verdict)
        }
        if len(found) < 2:
            found |= _named_vehicle_links(page, verdicts, found)
        # cards whose title names no make still link like their neighbours
        found |= sibling_vehicle_urls(
            found, [url for url, verdict in verdicts if verdict is None and url not in found]
        )
        page.vehicle_link_urls = found
        out = [_normalize(url, adapters) for url, _ in verdicts if url in found]
    own = _normalize(page.url, adapters) if page.url else ""
    return [u for u in dedupe(out) if u != own]


_LISTING_ID = re.compile(r"\d{5,}")


def _named_vehicle_links(
    page: Page, verdicts: list[tuple[str, bool | None]], found: set[str]
) -> set[str]:
    """Links to listings whose URL names no vehicle ("/voitures/839739086.htm") but whose
    anchor does (its title attribute or short text parses as a make and model), at least
    two of them under one path template; their siblings follow (``sibling_vehicle_urls``).
    Only looked for when the URLs gave fewer than two vehicle links."""
    named: set[str] = set()
    for (a, url), (_, verdict) in zip(page.anchors, verdicts, strict=True):
        if verdict is not None or url in found or a in page.excluded:
            continue
        path = urlsplit(url).path
        if not _LISTING_ID.search(path):
            continue
        label = a.get("title") or a.get("aria-label") or ""
        if not label:
            text = " ".join(text_content(a).split())
            label = text if len(text) <= 80 else ""
        tp = parse_title(label) if label else None
        if tp is not None and tp.make and tp.model:
            named.add(url)
    if len(named) < 2:
        return set()
    others = [
        url
        for url, verdict in verdicts
        if verdict is None and url not in named and url not in found
    ]
    return named | sibling_vehicle_urls(named, others)


def _next_pages(page: Page, selectors: dict[str, str], vehicle_links: set[str]) -> list[str]:
    out: list[str] = []
    current = page_number(page.url) or 1
    for link in page.tree.iter("link"):
        if (link.get("rel") or "").lower() == "next":
            url = absolutize(link.get("href"), page.url)
            if url and same_site(url, page.url):
                out.append(url)
    if selectors.get("next_page"):
        for a in select(page.tree, selectors["next_page"]):
            url = absolutize(a.get("href"), page.url)
            if url and same_site(url, page.url):
                out.append(url)
                if len(out) >= MAX_PAGE_LINKS:
                    break
    for a, url in page.anchors:
        if url.split("#")[0] == page.url.split("#")[0]:
            continue
        rel = (a.get("rel") or "").lower().split()
        label = " ".join(text_content(a).split()) or a.get("aria-label") or a.get("title") or ""
        cls = a.get("class") or ""
        n = page_number(url)
        if (
            "next" in rel
            or is_next_label(label)
            or is_next_label(a.get("aria-label") or "")
            or re.search(r"(^|[-_ ])next($|[-_ ])", cls, re.I)
        ):
            if n is None or n > current:
                out.append(url)
        elif n is not None and n > current and _same_listing_path(url, page.url):
            out.append(url)
    return [
        u
        for u in dedupe(out)
        if canonical_listing_url(u) not in vehicle_links
        and canonical_listing_url(u) != page.canonical_url
    ]


def _same_listing_path(url: str, page_url: str) -> bool:
    """Pagination links stay on the same path (or its /page/N/ variant)."""
    a, b = urlsplit(url).path.rstrip("/"), urlsplit(page_url).path.rstrip("/")
    a = re.sub(r"/(page|p|seite|pagina)/\d+$", "", a)
    b = re.sub(r"/(page|p|seite|pagina)/\d+$", "", b)
    return a == b


# --- inventory cards ---------------------------------------------------------------------


def _listings(
    page: Page,
    adapters: list[Adapter],
    selectors: dict[str, str],
    max_images: int,
    fill: bool = True,
) -> list[VehicleData]:
    for a in adapters:
        cards = a.listings(page)
        if cards:
            return [_finish_card(page, v, max_images) for v in cards]
    sd = page.structured
    structured = sd.item_list_vehicles or (sd.vehicles if len(sd.vehicles) >= 2 else [])
    if structured:
        out = []
        for v in structured:
            if v.url:
                v.url = _normalize(absolutize(v.url, page.url) or v.url, adapters)
            out.append(_finish_card(page, v, max_images))
        return out
    if selectors.get("card"):
        out = []
        for card in select(page.tree, selectors["card"]):
            link = next((a for a in card.iter("a") if a.get("href")), None)
            url = absolutize(link.get("href"), page.url) if link is not None else None
            v = card_vehicle(page, card, _normalize(url, adapters) if url else None)
            sv = vehicle_from_selectors(page, selectors, card)
            if sv is not None:
                sv.url = v.url
                _merge(sv, v)
                v = sv
            out.append(_finish_card(page, v, max_images))
        return out
    return [_finish_card(page, v, max_images) for v in _dom_cards(page, adapters, fill)]


_URL_ID = re.compile(r"[a-z0-9]{5,}")


def _cards_from_state(page: Page, cards: list[VehicleData]) -> None:
    """Fill cards from the page's embedded state: the state vehicle whose id is in the
    card's URL (a results page's state lists every card with its listing id)."""
    by_id = card_state(page)
    if not by_id:
        return
    for card in cards:
        if not card.url:
            continue
        for token in _URL_ID.findall(urlsplit(card.url).path.lower()):
            sv = by_id.get(token)
            if sv is not None:
                images = card.image_urls
                _merge(card, sv)
                card.image_urls = images or clean_image_urls(sv.image_urls, page.url)
                if card.asking_price is None:
                    card.currency = None
                elif card.currency is None:
                    card.currency = host_currency(page.host)
                break


def _finish_card(page: Page, v: VehicleData, max_images: int) -> VehicleData:
    v.image_urls = clean_image_urls(v.image_urls, page.url, max_images=max_images)
    if v.mileage is None:
        v.mileage_unit = None
    if v.asking_price is None:
        v.currency = None
    return v


def _dom_cards(page: Page, adapters: list[Adapter], fill: bool = True) -> list[VehicleData]:
    """One card per distinct vehicle link: the largest ancestor of its anchor that
    contains no link to another vehicle (``fill=False``: the link's URL only)."""
    keys_under: dict[HtmlElement, set[str]] = {}
    anchors: list[tuple[HtmlElement, str]] = []
    found = page.vehicle_link_urls  # siblings and named links too (_vehicle_links)
    for a, url in page.anchors:
        if a in page.excluded or not (url in found or _is_vehicle_link(url, adapters)):
            continue
        key = _normalize(url, adapters)
        if key == page.canonical_url:
            continue
        anchors.append((a, key))
        if not fill:
            continue
        node: HtmlElement | None = a
        while node is not None:
            s = keys_under.setdefault(node, set())
            if key in s:
                break
            s.add(key)
            node = node.getparent()
    out: list[VehicleData] = []
    seen: set[str] = set()
    for a, key in anchors:
        if key in seen:
            continue
        seen.add(key)
        if not fill:
            out.append(VehicleData(url=key))
            continue
        card = a
        node = a.getparent()
        while node is not None and len(keys_under.get(node, ())) == 1:
            card = node
            node = node.getparent()
        v = card_vehicle(page, card, key)
        v.image_urls = image_candidates(card)
        out.append(v)
    return out


def _looks_js_shell(page: Page, adapters: list[Adapter]) -> bool:
    verdict = _first_opinion(a.is_js_shell(page) for a in adapters)
    if verdict is not None:
        return verdict
    hint = page.url + " " + (page.title_tag or "")
    if _INVENTORY_HINT.search(hint) and _JS_MARKERS.search(page.raw_text):
        return True
    return _app_shell(page)


_MOUNT_TAGS = ("div", "main", "section", "app-root", "body")
_SHELL_MAX_TEXT = 400


def _app_shell(page: Page) -> bool:
    """An application shell by its structure, whatever the framework or quote style: little
    visible text, at least one script, and an empty mount element (an element with an id
    or a framework attribute and nothing inside) for the script to fill."""
    text = sum(len(c) for line in page.lines for c in line)
    if text > _SHELL_MAX_TEXT or page.tree.find(".//script") is None:
        return False
    for el in page.body.iter(*_MOUNT_TAGS):
        if len(el) or (el.text or "").strip():
            continue
        attrs = " ".join(el.attrib.keys()).lower()
        if el.get("id") or "data-reactroot" in attrs or "ng-app" in attrs or "data-v-app" in attrs:
            return True
    return False


# --- home pages -----------------------------------------------------------------------------

_INV_PATH = re.compile(
    r"(/inventory|/used-vehicles|/new-vehicles|/new-inventory|/used-inventory|/all-inventory|"
    r"/cars-for-sale|/used-cars|/new-cars|/vehicles|/search|/searchused|/searchnew|/stock|"
    r"/showroom|/pre-owned|/preowned|/certified|/our-cars|/cars/?$|/trucks|/for-sale|/listings|"
    r"/gebrauchtwagen|/fahrzeuge|/occasions|/voitures)",
    re.I,
)
_INV_TEXT = re.compile(
    r"^(view |see |shop |browse |search )?(all |our )?(new |used |pre-owned |certified |current )?"
    r"(inventory|vehicles|cars|trucks|suvs|stock|cars for sale|vehicles for sale|showroom|listings)"
    r"( for sale| in stock| inventory)?$|^shop( now| all)?$|^browse$|^search( inventory| cars)?$",
    re.I,
)
_INV_EXCLUDE = re.compile(
    r"/(blog|news|finance|financing|apply|credit|service|parts|specials|about|contact|reviews|careers|privacy|terms|trade|value|sell)",
    re.I,
)


def discover_inventory_links(html: str | bytes, url: str) -> list[str]:
    """Links on a dealer home page that look like inventory / search pages, best
    first, same site, de-duplicated (canonical form). Detail pages are left out."""
    page = Page(html, url)
    adapters = adapters_for(page)
    scored: list[tuple[int, int, str]] = []
    for i, (a, link) in enumerate(page.anchors):
        path = urlsplit(link).path
        if _INV_EXCLUDE.search(path) or _is_vehicle_link(link, adapters):
            continue
        text = " ".join(text_content(a).split()) or a.get("title") or a.get("aria-label") or ""
        score = 0
        if _INV_PATH.search(path):
            score += 2
            if re.search(r"inventory|used|vehicles|cars-for-sale", path, re.I):
                score += 1
        if text and len(text) <= 40 and _INV_TEXT.search(text.strip()):
            score += 2
        if score == 0:
            continue
        if urlsplit(link).query:
            score -= 1  # filtered searches after the plain listing
        scored.append((-score, i, canonical_listing_url(link)))
    scored.sort()
    home = canonical_listing_url(url)
    return [u for u in dedupe(s[2] for s in scored) if u != home]
