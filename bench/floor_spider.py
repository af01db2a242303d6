"""The Scrapy floor: the org crawl's requests and items, without its work.

Follows the same link structure as ``scrapy crawl org`` on the benchmark site
(home, robots.txt, inventory pages, pagination, detail pages), from a map made
beforehand, and yields one ready-made item per detail page, with no extraction,
no database and no item pipeline. What it costs over the bare fetch is Scrapy's
own price for a callback that yields requests and items.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import scrapy


class FloorSpider(scrapy.Spider):
    name = "floor"
    custom_settings = {"ITEM_PIPELINES": {}, "EXTENSIONS": {}, "CONCURRENT_ITEMS": 1}

    def __init__(self, map_file: str, start_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.site: dict[str, dict[str, Any]] = json.loads(Path(map_file).read_text())
        self.start_url = start_url
        self.seen: set[str] = set()  # the org spider de-duplicates its own requests too

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(self.start_url, callback=self.parse, dont_filter=True)

    def parse(self, response: scrapy.http.Response) -> list[Any]:
        # a list, as the org spider returns: for a generator callback Scrapy reads the
        # callback's source again for every response (to warn about a return value),
        # which would put a cost in the floor that the org crawl does not have
        page = self.site.get(response.url, {})
        out: list[Any] = [page["item"]] if page.get("item") else []
        for url in page.get("links", []):
            if url not in self.seen:
                self.seen.add(url)
                out.append(scrapy.Request(url, callback=self.parse, dont_filter=True))
        return out
