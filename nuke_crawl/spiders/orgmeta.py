"""An organization's crawl configuration, validated from ``businesses.metadata``.

The metadata is JSON that other writers on the platform edit too, so the org spider never
reads it raw: :func:`parse_org_config` turns it into an :class:`OrgConfig` or raises
:class:`InvalidOrgConfig` naming the field. A bad organization is recorded as such (its
``metadata.last_error``) and not crawled; the run goes on with the others.

Keys read (all optional): ``inventory_url`` (an http(s) URL, or a URL relative to the
website), ``render_js`` (a boolean; the strings ``"true"``/``"false"``, ``"1"``/``"0"``,
``"yes"``/``"no"`` are read as booleans), ``selectors`` (an object of CSS selectors, see
:mod:`nuke_crawl.extraction.selectors`). Other keys are the crawl's own bookkeeping or
someone else's, and are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from cssselect import SelectorError
from lxml.cssselect import CSSSelector

from nuke_crawl.extraction.selectors import SELECTOR_KEYS
from nuke_crawl.params import ArgumentError, to_bool, to_url


class InvalidOrgConfig(ValueError):
    """The organization's metadata cannot be used; ``field`` names the culprit."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"invalid metadata: {field_name}: {problem}")
        self.field = field_name


class InvalidWebsite(ValueError):
    """The organization's website is not an http(s) URL."""


@dataclass(frozen=True)
class OrgConfig:
    """What the org spider reads of one organization."""

    website: str
    inventory_url: str | None = None
    render_js: bool = False
    selectors: dict[str, str] = field(default_factory=dict)


def website_url(website: str | None) -> str:
    """The organization's website as an http(s) URL; :class:`InvalidWebsite` when it is
    not one (``N/A``, ``call us 555-1234``, an empty string)."""
    try:
        return to_url("website", website or "")
    except ArgumentError:
        raise InvalidWebsite(f"website {website!r} is not an http(s) URL") from None


def _inventory_url(website: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidOrgConfig("inventory_url", f"expected a URL, got {value!r}")
    text = value.strip()
    if "://" not in text:
        return urljoin(website, text)  # a path on the website
    try:
        return to_url("inventory_url", text)
    except ArgumentError:
        raise InvalidOrgConfig("inventory_url", f"{value!r} is not an http(s) URL") from None


def _render_js(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (bool, str)) or value in (0, 1):
        try:
            return to_bool("render_js", value)
        except ArgumentError:
            pass
    raise InvalidOrgConfig("render_js", f"expected a boolean, got {value!r}")


def _selectors(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidOrgConfig("selectors", f"expected an object of CSS selectors, got {value!r}")
    out: dict[str, str] = {}
    for key, css in value.items():
        name = f"selectors.{key}"
        if key not in SELECTOR_KEYS:
            raise InvalidOrgConfig(name, f"unknown key (known: {', '.join(SELECTOR_KEYS)})")
        if css is None or css == "":
            continue
        if not isinstance(css, str):
            raise InvalidOrgConfig(name, f"expected a CSS selector, got {css!r}")
        try:
            CSSSelector(css, translator="html")
        except (SelectorError, SyntaxError, ValueError) as exc:
            raise InvalidOrgConfig(name, f"invalid CSS {css!r} ({exc})") from None
        out[key] = css
    return out


def parse_org_config(website: str | None, metadata: Any) -> OrgConfig:
    """The organization's :class:`OrgConfig`; :class:`InvalidWebsite` or
    :class:`InvalidOrgConfig` (naming the field) when it cannot be crawled as given."""
    url = website_url(website)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidOrgConfig("metadata", f"expected an object, got {metadata!r}")
    return OrgConfig(
        website=url,
        inventory_url=_inventory_url(url, metadata.get("inventory_url")),
        render_js=_render_js(metadata.get("render_js")),
        selectors=_selectors(metadata.get("selectors")),
    )
