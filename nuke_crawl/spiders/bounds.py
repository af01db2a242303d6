"""Bounds on one organization's crawl: a hostile or broken site cannot keep it going.

A site can page forever (``?page=N`` whose ``rel=next`` always points to N+1), flood a
page with tens of thousands of links, or publish a sitemap index that lists itself. The
org spider keeps one :class:`OrgBudget` per organization and asks it before following
a link:

- pagination goes on only while it finds vehicles: a page reached through pagination
  that adds no vehicle link not seen before ends its chain (:meth:`OrgBudget.follow_pages`);
- at most :data:`MAX_NEXT_PAGES_PER_PAGE` new pagination links are taken from one page,
  and at most ``NUKE_ORG_MAX_PAGES`` listing pages (home, inventory, pagination, probed
  paths) are requested for an organization in one run;
- sitemaps are de-duplicated, followed at most ``NUKE_SITEMAP_MAX_DEPTH`` index levels
  below the ones robots.txt names, at most ``NUKE_ORG_MAX_SITEMAPS`` of them, and at most
  ``NUKE_ORG_MAX_SITEMAP_ENTRIES`` URLs are read from them in all;
- detail pages are requested with :data:`DETAIL_PRIORITY`, so the scheduler fetches the
  vehicles a page links to before more pagination.

Each cap reached is logged once, counted in stats (``nuke/caps/<name>``) and kept in
:attr:`OrgBudget.caps_hit` (``{name: limit}``), which goes into the organization's
``metadata.last_crawl`` as ``caps_hit``. Settings (defaults): ``NUKE_ORG_MAX_PAGES``
(1000), ``NUKE_ORG_MAX_SITEMAPS`` (50), ``NUKE_ORG_MAX_SITEMAP_ENTRIES`` (50000),
``NUKE_SITEMAP_MAX_DEPTH`` (2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from nuke_crawl import settings as defaults

logger = logging.getLogger(__name__)

#: Scrapy's priority for vehicle detail requests (others have 0): higher goes first.
DETAIL_PRIORITY = 10
#: New pagination links followed from one page at most; a site listing every page
#: number on each page is still covered, a few at a time, by the pages that follow.
MAX_NEXT_PAGES_PER_PAGE = 20


@dataclass(frozen=True)
class CrawlBounds:
    """The caps of every organization's crawl in one run, from the settings."""

    max_pages: int = defaults.NUKE_ORG_MAX_PAGES
    max_sitemaps: int = defaults.NUKE_ORG_MAX_SITEMAPS
    max_sitemap_entries: int = defaults.NUKE_ORG_MAX_SITEMAP_ENTRIES
    sitemap_max_depth: int = defaults.NUKE_SITEMAP_MAX_DEPTH

    @classmethod
    def from_settings(cls, settings: Any) -> CrawlBounds:
        """Read ``NUKE_ORG_MAX_PAGES``, ``NUKE_ORG_MAX_SITEMAPS``,
        ``NUKE_ORG_MAX_SITEMAP_ENTRIES`` and ``NUKE_SITEMAP_MAX_DEPTH``; a negative
        value is refused with a message naming the setting."""
        values = {
            "max_pages": ("NUKE_ORG_MAX_PAGES", 1),
            "max_sitemaps": ("NUKE_ORG_MAX_SITEMAPS", 0),
            "max_sitemap_entries": ("NUKE_ORG_MAX_SITEMAP_ENTRIES", 0),
            "sitemap_max_depth": ("NUKE_SITEMAP_MAX_DEPTH", 0),
        }
        out: dict[str, int] = {}
        for attr, (name, minimum) in values.items():
            try:
                value = settings.getint(name, getattr(defaults, name))
            except (TypeError, ValueError):
                raise ValueError(
                    f"setting {name}={settings.get(name)!r}: expected a whole number"
                ) from None
            if value < minimum:
                raise ValueError(f"setting {name}={value}: must be at least {minimum}")
            out[attr] = value
        return cls(**out)


@dataclass
class OrgBudget:
    """What one organization's crawl has used of its :class:`CrawlBounds`."""

    bounds: CrawlBounds
    name: str = ""  # the organization, for log lines
    pages: int = 0  # listing pages requested
    sitemaps: set[str] = field(default_factory=set)  # sitemap URLs requested or read
    sitemap_entries: int = 0
    chains_stopped: int = 0  # pagination chains ended by a page that added no vehicle
    caps_hit: dict[str, int] = field(default_factory=dict)

    def hit(self, cap: str, limit: int, stats: Any = None) -> None:
        """Record that ``cap`` (of ``limit``) stopped something; logged once."""
        if cap in self.caps_hit:
            return
        self.caps_hit[cap] = limit
        if stats is not None:
            stats.inc_value(f"nuke/caps/{cap}")
        logger.info(
            "Organization %s: cap reached: %s (%d); the rest is left out of this crawl",
            self.name,
            cap,
            limit,
        )

    # -- listing pages -------------------------------------------------------------

    def allow_page(self, stats: Any = None) -> bool:
        """One more listing page, unless ``NUKE_ORG_MAX_PAGES`` are requested already."""
        if self.pages >= self.bounds.max_pages:
            self.hit("pages", self.bounds.max_pages, stats)
            return False
        self.pages += 1
        return True

    def follow_pages(self, paged: bool, added: int, at_vehicle_cap: bool) -> bool:
        """Whether to follow a page's pagination links. ``paged``: the page was reached
        through pagination; ``added``: vehicle links it added that were not seen
        before; ``at_vehicle_cap``: no more vehicles will be requested."""
        if at_vehicle_cap:
            return False
        if paged and not added:
            self.chains_stopped += 1
            return False
        return True

    # -- sitemaps --------------------------------------------------------------------

    def allow_sitemap(self, url: str, depth: int, stats: Any = None) -> bool:
        """Whether to request the sitemap at ``url``, ``depth`` index levels below the
        sitemaps robots.txt names: not twice, not deeper than ``NUKE_SITEMAP_MAX_DEPTH``,
        not more than ``NUKE_ORG_MAX_SITEMAPS``."""
        key = url.split("#", 1)[0]
        if key in self.sitemaps:
            return False
        if depth > self.bounds.sitemap_max_depth:
            self.hit("sitemap_depth", self.bounds.sitemap_max_depth, stats)
            return False
        if len(self.sitemaps) >= self.bounds.max_sitemaps:
            self.hit("sitemaps", self.bounds.max_sitemaps, stats)
            return False
        self.sitemaps.add(key)
        return True

    def seen_sitemap(self, url: str) -> None:
        """A sitemap read at ``url`` (after redirects): never requested again."""
        self.sitemaps.add(url.split("#", 1)[0])

    def sitemap_urls(self, entries: Iterable[dict[str, Any]], stats: Any = None) -> list[str]:
        """The ``loc`` of a sitemap's ``entries``, read lazily and only as many as
        ``NUKE_ORG_MAX_SITEMAP_ENTRIES`` leaves for the organization."""
        left = max(0, self.bounds.max_sitemap_entries - self.sitemap_entries)
        it = iter(entries)
        urls = [entry.get("loc", "") for entry in islice(it, left)]
        self.sitemap_entries += len(urls)
        if len(urls) == left and next(it, None) is not None:
            self.hit("sitemap_entries", self.bounds.max_sitemap_entries, stats)
        return urls

    def summary(self) -> dict[str, Any]:
        """What goes into ``metadata.last_crawl``: ``caps_hit`` and, when any,
        ``pagination_stopped`` (chains ended by a page that added no vehicle)."""
        out: dict[str, Any] = {"caps_hit": dict(self.caps_hit)}
        if self.chains_stopped:
            out["pagination_stopped"] = self.chains_stopped
        return out
