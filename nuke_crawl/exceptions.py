"""Exceptions shared by the image phases (kept free of Scrapy: image worker processes
import :mod:`nuke_crawl.imaging`, which builds on this)."""

from __future__ import annotations

from typing import Any


class ReasonError(Exception):
    """A failure expected in the wild, carrying a short ``reason`` (a stats and
    database key such as ``http_404`` or ``missing_file``) and a human ``detail``.

    Counted and recorded, never shown as a traceback. Picklable, so that it crosses
    process boundaries (image worker processes raise subclasses of it).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.detail))
