"""Per-site adapters. Adding a site = one small module defining an ``Adapter``
subclass decorated with ``@register``, imported at the bottom of this file.

An adapter matches a page by domain (``domains``) and/or page markers (``detect``),
and may contribute: the page's own vehicle (partial data, merged under structured
data), whether the page is a detail page, inventory cards, and link rules.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from lxml.html import HtmlElement

from nuke_crawl.extraction.model import VehicleData
from nuke_crawl.extraction.page import Page, text_content
from nuke_crawl.extraction.selectors import select


class Adapter:
    """Base class: every hook returns None for "no opinion"."""

    name = "base"
    #: registrable domains (suffix match on the page host)
    domains: tuple[str, ...] = ()

    def matches(self, page: Page) -> bool:
        """Domain match or page markers."""
        host = page.host
        if any(host == d or host.endswith("." + d) for d in self.domains):
            return True
        return self.detect(page)

    def detect(self, page: Page) -> bool:
        """Recognise the platform from page markers (override)."""
        return False

    def is_detail_page(self, page: Page) -> bool | None:
        """True for a vehicle detail page, False for a results page, None if unsure."""
        return None

    def vehicle(self, page: Page) -> VehicleData | None:
        """The page's own vehicle (partial), for detail pages."""
        return None

    def listings(self, page: Page) -> list[VehicleData] | None:
        """Inventory cards, for results pages."""
        return None

    def is_vehicle_link(self, url: str) -> bool | None:
        """Whether ``url`` is a vehicle detail page on this platform."""
        return None

    def normalize_link(self, url: str) -> str:
        """A stable form of a detail-page URL (e.g. drop search-context parameters)."""
        return url

    def is_js_shell(self, page: Page) -> bool | None:
        """True when the platform renders vehicles client-side only."""
        return None


_REGISTRY: list[Adapter] = []
A = TypeVar("A", bound=type[Adapter])


def register(cls: A) -> A:
    """Class decorator: add an adapter instance to the registry."""
    _REGISTRY.append(cls())
    return cls


def adapters_for(page: Page) -> list[Adapter]:
    """The registered adapters matching ``page``, in registration order."""
    return [a for a in _REGISTRY if a.matches(page)]


def registered() -> list[Adapter]:
    """All registered adapters."""
    return list(_REGISTRY)


# --- small helpers shared by adapters ---------------------------------------------------


def text_of(el: HtmlElement | None) -> str | None:
    """Whitespace-collapsed text of an element, None if empty."""
    if el is None:
        return None
    t = " ".join(text_content(el).split())
    return t or None


def first(page_or_el: Page | HtmlElement, css: str) -> HtmlElement | None:
    """First element matching a CSS selector."""
    root = page_or_el.tree if isinstance(page_or_el, Page) else page_or_el
    found = select(root, css)
    return found[0] if found else None


def first_of(page_or_el: Page | HtmlElement, *css: str) -> HtmlElement | None:
    """First element matching the first selector that matches anything."""
    for c in css:
        el = first(page_or_el, c)
        if el is not None:
            return el
    return None


def script_json(page: Page, pattern: str) -> Any:
    """JSON assigned in an inline script: ``pattern`` is a regex whose match ends right
    before the JSON value (e.g. ``r"window\\.CLICK_DATA\\s*="``)."""
    rx = re.compile(pattern)
    for s in page.tree.iter("script"):
        text = s.text or ""
        m = rx.search(text)
        if not m:
            continue
        try:
            value, _ = json.JSONDecoder(strict=False).raw_decode(text[m.end() :].lstrip())
            return value
        except ValueError:
            continue
    return None


from nuke_crawl.extraction.adapters import (  # noqa: E402,F401  (registration side effects)
    autorevo,
    autoscout24,
    autotrader,
    carsandbids,
    clickdealer,
    craigslist,
    dealercenter,
    dealercom,
    dealerinspire,
)
