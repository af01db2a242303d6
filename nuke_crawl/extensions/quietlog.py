"""Expected failures in the wild are logged as one line, never a traceback."""

from __future__ import annotations

import logging

from scrapy.crawler import Crawler


class _RobotsDownloadFilter(logging.Filter):
    """Scrapy's RobotsTxtMiddleware logs a robots.txt that cannot be fetched
    (a dead host, a DNS failure) at ERROR with a traceback; for a crawler of
    third-party sites that is an expected event: one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Error downloading"):
            exc = record.exc_info[1]
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "robots.txt unavailable for %(request)s (%(reason)s)"
            request = record.args.get("request") if isinstance(record.args, dict) else None
            record.args = {"request": request, "reason": f"{type(exc).__name__}: {exc}"}
        return True


class QuietExpectedErrors:
    """Installs the log filters above for the crawl. No settings."""

    _filter = _RobotsDownloadFilter()

    def __init__(self, crawler: Crawler) -> None:
        logging.getLogger("scrapy.downloadermiddlewares.robotstxt").addFilter(self._filter)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> QuietExpectedErrors:
        return cls(crawler)
