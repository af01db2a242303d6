"""Typed spider arguments, declared once and validated before any request.

This module is neutral ground (no Scrapy, no spider): spiders declare their arguments
with it, and commands (``scrapy crawl``, ``org-add``, ``analyze-check``...) use its parsers.

A spider declares its arguments as a frozen :class:`SpiderArgs` dataclass, each field
made with :func:`arg` (its default, what it means, how its ``-a`` text is parsed), and
reads them as attributes (``self.args.limit``)::

    @dataclass(frozen=True)
    class OrgArgs(SpiderArgs):
        limit: int = arg(10, "organizations per page", positive_int)

    class OrgSpider(scrapy.Spider):
        Arguments = OrgArgs

        def __init__(self, *args, **kwargs):
            self.args = OrgArgs.from_kwargs(kwargs, self.name)

``scrapy crawl`` (:mod:`nuke_crawl.commands.crawl`) parses them before anything starts
(a bad one exits with a message naming it) and hands the parsed object to the spider
under :data:`PARSED`, so they are parsed once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self
from urllib.parse import urlsplit

from nuke_crawl.analysis import PROVIDERS as PROVIDER_NAMES


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


def to_uuid_list(name: str, value: Any, *, most: int | None = None) -> tuple[str, ...]:
    """A comma list of UUIDs (at most ``most`` of them, when given), in their order."""
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ArgumentError(f"argument {name}: expected a comma list of UUIDs")
    if most is not None and len(items) > most:
        raise ArgumentError(f"argument {name}: at most {most} UUIDs (got {len(items)})")
    return tuple(to_uuid(name, v) for v in items)


_HOST = re.compile(r"[\w.:-]+")


def to_url(name: str, value: Any) -> str:
    text = str(value).strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    host = parts.hostname or ""
    if (
        parts.scheme not in ("http", "https")
        or not _HOST.fullmatch(host)
        or ("." not in host and ":" not in host and host != "localhost")
    ):
        raise ArgumentError(f"argument {name}={value!r}: expected an http(s) URL")
    return text


def to_str(name: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ArgumentError(f"argument {name}: must not be empty")
    return text


#: The spider keyword argument under which ``scrapy crawl`` hands over parsed arguments.
PARSED = "_nuke_parsed_args"


def arg(default: Any, help: str, parse: Callable[[str, Any], Any]) -> Any:
    """A :class:`SpiderArgs` field: its ``default``, what it means (``help``) and how its
    ``-a`` text is parsed (``parse(name, value)``, raising :class:`ArgumentError`)."""
    return field(default=default, metadata={"parse": parse, "help": help})


def positive_int(name: str, value: Any) -> int:
    return to_int(name, value, minimum=1)


def non_negative_int(name: str, value: Any) -> int:
    return to_int(name, value, minimum=0)


@dataclass(frozen=True)
class SpiderArgs:
    """Base of a spider's typed arguments (subclass it as a frozen dataclass whose fields
    are made with :func:`arg`)."""

    @classmethod
    def parse(cls, given: Mapping[str, Any], spider_name: str) -> Self:
        """Parse ``-a`` arguments (their text); unknown names are refused (scrapyd's
        ``_job`` is not the spider's and is ignored)."""
        spec = {f.name: f for f in fields(cls)}
        unknown = sorted(set(given) - set(spec) - {"_job"})
        if unknown:
            raise ArgumentError(
                f"unknown argument(s) for spider {spider_name!r}: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(spec))}"
            )
        values = {
            name: f.metadata["parse"](name, given[name])
            for name, f in spec.items()
            if given.get(name) is not None
        }
        return cls(**values)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], spider_name: str) -> Self:
        """The spider's arguments from its ``__init__`` keyword arguments: those
        ``scrapy crawl`` parsed already (:data:`PARSED`), else parsed here (arguments
        starting with ``_``, such as scrapyd's ``_job``, are not the spider's)."""
        parsed = kwargs.get(PARSED)
        if isinstance(parsed, cls):
            return parsed
        return cls.parse({k: v for k, v in kwargs.items() if not k.startswith("_")}, spider_name)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def describe(cls) -> list[str]:
        """One line per argument: ``name (default): help``."""
        return [f"{f.name} ({f.default!r}): {f.metadata['help']}" for f in fields(cls)]


@dataclass(frozen=True)
class OrgSelection(SpiderArgs):
    """Which organizations an org crawl takes: the first arguments of the ``org`` spider's
    ``OrgArgs``, and all of ``scrapy org-enqueue``'s (commands do not import spiders)."""

    threshold: int = arg(
        10,
        "only organizations with fewer than this many active vehicles (1: never extracted)",
        positive_int,
    )
    limit: int = arg(10, "organizations per page", positive_int)
    offset: int = arg(0, "organizations to skip", non_negative_int)
    business_type: str | None = arg(None, "only organizations of this business_type", to_str)
    organization_id: str | None = arg(None, "only this organization", to_uuid)


def apply_user_agent(settings: Any) -> None:
    """Make ``NUKE_USER_AGENT`` the User-Agent (also for robots.txt rules)
    when it was given with a higher priority than ``USER_AGENT``; call it
    from a spider's ``update_settings``."""
    priority = settings.getpriority("NUKE_USER_AGENT")  # None: not set
    if priority is not None and priority > (settings.getpriority("USER_AGENT") or 0):
        settings.set("USER_AGENT", settings.get("NUKE_USER_AGENT"), priority=priority)


def to_providers(name: str, value: Any) -> tuple[str, ...]:
    """A comma list of provider names (``local``, ``openai``, ``rekognition``)."""
    names = tuple(dict.fromkeys(p.strip().lower() for p in str(value).split(",") if p.strip()))
    if not names:
        raise ArgumentError(f"argument {name}: give at least one of {', '.join(PROVIDER_NAMES)}")
    unknown = [p for p in names if p not in PROVIDER_NAMES]
    if unknown:
        raise ArgumentError(
            f"argument {name}={value!r}: unknown provider(s) "
            f"{', '.join(unknown)}; known: {', '.join(PROVIDER_NAMES)}"
        )
    return names
