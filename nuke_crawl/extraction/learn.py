"""Learned selectors: CSS selectors for a site the rules cannot read, asked of a language
model once per site and checked on other pages of the site before they are kept.

Pure functions, no Scrapy and no network: :func:`trim_page` (what the model is shown),
:func:`selector_messages` (the request), :func:`parse_selectors` (the answer, validated)
and :func:`verify_selectors` (the check). ``nuke_crawl.spiders.learning`` calls the model
and stores what passes on the organization.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from lxml import etree
from lxml.html import HtmlElement

from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.selectors import SELECTOR_KEYS, compile_selector, vehicle_from_selectors
from nuke_crawl.extraction.text import canonical_make

# what the model may answer: the detail-page keys of ``metadata.selectors`` (the listing
# keys and the fields a page rarely labels are left to the rules)
_NOT_LEARNED = frozenset(
    {"vehicle_link", "next_page", "card", "drivetrain", "body_style", "fuel_type", "description"}
)
LEARNED_KEYS = tuple(key for key in SELECTOR_KEYS if key not in _NOT_LEARNED)
MAX_TEXT_CHARS = 6000
MAX_OUTLINE_CHARS = 8000
MAX_SELECTOR_LEN = 200
_SKIP = frozenset(
    {"script", "style", "noscript", "svg", "template", "iframe", "head", "link", "meta"}
)

SYSTEM_PROMPT = (
    "You write CSS selectors for scraping vehicle detail pages. You are given one detail page "
    "of a website: its visible text and an outline of its DOM (tag#id.classes, with a sample "
    "of each element's own text). Answer with one JSON object whose keys are among: "
    + ", ".join(LEARNED_KEYS)
    + ". Each value is a CSS selector (lxml/cssselect syntax, no "
    ":contains, no XPath) selecting the element holding that field on any detail page of "
    "the site; prefer class and id selectors that name the field over positions. 'title' "
    "is the element whose text is 'YEAR MAKE MODEL TRIM'; 'images' selects the gallery's "
    "img elements. Leave out keys the page does not show. Answer with the JSON object only."
)


def _label(el: HtmlElement) -> str:
    tag = el.tag if isinstance(el.tag, str) else ""
    out = tag
    if el.get("id"):
        out += "#" + el.get("id", "")[:40]
    classes = (el.get("class") or "").split()
    if classes:
        out += "".join("." + c[:30] for c in classes[:4])
    for name in el.attrib:
        if name.startswith("data-") and len(out) < 120:
            out += f"[{name}]"
    return out


def trim_page(html: str | bytes, url: str) -> str:
    """The page as the model sees it: its visible text (first ``MAX_TEXT_CHARS``) and a
    compact outline of its DOM (``MAX_OUTLINE_CHARS``): one line per element that has an
    id, a class or text of its own, indented by depth, with a sample of that text."""
    page = Page(html, url)
    text_lines: list[str] = []
    size = 0
    for cells in page.lines:
        line = " | ".join(cells)
        size += len(line) + 1
        if size > MAX_TEXT_CHARS:
            break
        text_lines.append(line)
    outline: list[str] = []
    size = 0
    depth = 0
    walker = etree.iterwalk(page.body, events=("start", "end"))
    for event, el in walker:
        if event == "end":
            depth -= 1
            continue
        depth += 1
        if not isinstance(el.tag, str) or el.tag in _SKIP:
            walker.skip_subtree()
            depth -= 1
            continue
        own = " ".join((el.text or "").split())[:60]
        if not (
            own or el.get("id") or el.get("class") or el.tag in ("img", "h1", "h2", "dl", "table")
        ):
            continue
        line = "  " * min(depth, 12) + _label(el) + (f' "{own}"' if own else "")
        size += len(line) + 1
        if size > MAX_OUTLINE_CHARS:
            outline.append("...")
            break
        outline.append(line)
    return (
        f"URL: {url}\nTITLE: {page.title_tag or ''}\n\nVISIBLE TEXT:\n"
        + "\n".join(text_lines)
        + "\n\nDOM OUTLINE:\n"
        + "\n".join(outline)
    )


def selector_messages(trimmed: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": trimmed}]


def parse_selectors(content: str | None) -> dict[str, str]:
    """The selectors in a model's answer: a JSON object (possibly in a code fence) whose
    known keys hold valid CSS selectors; anything else is dropped. ``{}`` if none."""
    if not content:
        return {}
    text = content.strip()
    fence = re.search(r"```(?:json)?\s*(\{.*\})\s*```", text, re.DOTALL)
    if fence:
        text = fence.group(1)
    try:
        data: Any = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return {}
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            return {}
    if isinstance(data, dict) and isinstance(data.get("selectors"), dict):
        data = data["selectors"]
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in LEARNED_KEYS or key not in SELECTOR_KEYS or not isinstance(value, str):
            continue
        value = value.strip()
        if not value or len(value) > MAX_SELECTOR_LEN or compile_selector(value) is None:
            continue
        out[key] = value
    return out


def selectors_read(selectors: dict[str, str], html: str | bytes, url: str) -> bool:
    """Whether ``selectors`` give a year and a known make on this page."""
    v = vehicle_from_selectors(Page(html, url), selectors)
    return v is not None and v.year is not None and canonical_make(v.make) is not None


def verify_selectors(
    selectors: dict[str, str], pages: Sequence[tuple[str | bytes, str]], need: int = 2
) -> bool:
    """Selectors are kept only if they give year and make on at least ``need`` of the
    given detail pages (other pages than the one the model saw)."""
    if not selectors or not (("year" in selectors and "make" in selectors) or "title" in selectors):
        return False
    return sum(selectors_read(selectors, html, url) for html, url in pages) >= need


__all__ = [
    "LEARNED_KEYS",
    "parse_selectors",
    "selector_messages",
    "selectors_read",
    "trim_page",
    "verify_selectors",
]
