"""DealerInspire: results are rendered client-side from Algolia; the HTML is a shell."""

from __future__ import annotations

from nuke_crawl.extraction.adapters import Adapter, register
from nuke_crawl.extraction.page import Page
from nuke_crawl.extraction.selectors import select


@register
class DealerInspire(Adapter):
    name = "dealerinspire"

    def detect(self, page: Page) -> bool:
        return "dealerinspire" in page.raw_lower and "algolia" in page.raw_lower

    def is_js_shell(self, page: Page) -> bool | None:
        return (
            True
            if select(page.tree, "#lvrp-results-wrapper, #results-page, .lvrp-results")
            else None
        )
