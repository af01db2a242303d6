"""The function image worker processes run: kept apart from the pipeline's module so
that a spawned worker imports Pillow and numpy only, not Scrapy and Twisted."""

from __future__ import annotations

from typing import Any

from nuke_crawl.imaging import ProcessedImage, process_image


def process_in_worker(body: bytes, options: dict[str, Any]) -> ProcessedImage:
    """:func:`~nuke_crawl.imaging.process_image`; the original bytes are not sent back
    when they are kept (``reencoded`` false): the caller still has them."""
    processed = process_image(body, **options)
    if not processed.reencoded:
        processed.data = b""
    return processed
