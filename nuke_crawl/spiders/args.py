"""Typed spider arguments, declared once and validated before any request."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class ArgumentError(ValueError):
    """A spider argument is invalid; the message names it."""


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


def to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ArgumentError(f"argument {name}={value!r}: expected a boolean (1/0, true/false)")


def to_int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ArgumentError(f"argument {name}={value!r}: expected a whole number") from None
    if number < minimum:
        raise ArgumentError(f"argument {name}={value!r}: must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise ArgumentError(f"argument {name}={value!r}: must be at most {maximum}")
    return number


def to_uuid(name: str, value: Any) -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise ArgumentError(f"argument {name}={value!r}: expected a UUID") from None


_HOST = re.compile(r"[\w.:-]+")


def to_url(name: str, value: Any) -> str:
    text = str(value).strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(host) or (
        "." not in host and ":" not in host and host != "localhost"
    ):
        raise ArgumentError(f"argument {name}={value!r}: expected an http(s) URL")
    return text


def to_str(name: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ArgumentError(f"argument {name}: must not be empty")
    return text


@dataclass(frozen=True)
class Param:
    """One argument: how to parse it, its default and what it means."""

    parse: Callable[[str, Any], Any]
    default: Any
    help: str


def parse_args(
    spec: Mapping[str, Param], given: Mapping[str, Any], spider_name: str
) -> dict[str, Any]:
    """Parse ``-a`` arguments against ``spec``; unknown names are refused."""
    unknown = sorted(set(given) - set(spec) - {"_job"})
    if unknown:
        raise ArgumentError(
            f"unknown argument(s) for spider {spider_name!r}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(spec))}"
        )
    out: dict[str, Any] = {}
    for name, param in spec.items():
        if name in given and given[name] is not None:
            out[name] = param.parse(name, given[name])
        else:
            out[name] = param.default
    return out


def apply_user_agent(settings: Any) -> None:
    """Make ``NUKE_USER_AGENT`` the User-Agent (also for robots.txt rules)
    when it was given with a higher priority than ``USER_AGENT``; call it
    from a spider's ``update_settings``."""
    priority = settings.getpriority("NUKE_USER_AGENT")  # None: not set
    if priority is not None and priority > (settings.getpriority("USER_AGENT") or 0):
        settings.set("USER_AGENT", settings.get("NUKE_USER_AGENT"), priority=priority)
