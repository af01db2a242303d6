"""How a failed download is named: one classifier for both image phases."""

from __future__ import annotations

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
)
from twisted.internet import error as twisted_error

from nuke_crawl.exceptions import ReasonError


def download_failure_reason(
    exc: BaseException | None, *, fallback: str = "connection"
) -> tuple[str, str]:
    """A download failure's ``(reason, detail)``: ``refused`` (the private-network
    guard, an offsite or other dropped request), ``timeout``, ``too_large``
    (``DOWNLOAD_MAXSIZE``), ``dns``, ``connection``, ``bad_url``; anything else is
    ``fallback`` with the exception's type in the detail. A :class:`ReasonError`
    keeps its own reason."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, ReasonError):
        return exc.reason, exc.detail
    if isinstance(exc, IgnoreRequest):
        return "refused", detail
    if isinstance(exc, (DownloadTimeoutError, twisted_error.TimeoutError, TimeoutError)):
        return "timeout", detail
    if isinstance(exc, DownloadCancelledError) or "maxsize" in detail.lower():
        return "too_large", detail
    if isinstance(exc, (CannotResolveHostError, twisted_error.DNSLookupError)):
        return "dns", detail
    if isinstance(
        exc,
        (
            DownloadConnectionRefusedError,
            twisted_error.ConnectError,
            ConnectionError,
            twisted_error.ConnectionLost,
        ),
    ):
        return "connection", detail
    if isinstance(exc, ValueError) and "url" in detail.lower():
        return "bad_url", detail
    return fallback, f"{type(exc).__name__}: {detail}"
