"""HTTP helpers that need no Scrapy (the analysis providers use them too)."""

from __future__ import annotations

import email.utils
import time


def parse_retry_after(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None.

    Delta-seconds may carry a fraction (some APIs send ``0.5``); a negative or
    unreadable value gives None, a date in the past gives 0, a date without a time
    zone (RFC 9110 dates are GMT) gives None.
    """
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        return None
    if text[0].isdigit():
        try:
            return float(text)
        except ValueError:
            pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
