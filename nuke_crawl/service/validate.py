"""Request bodies checked field by field: a bad one is a 422 naming the field, and
nothing starts. The spider arguments built from them are then checked by the spider's
own declarations (each spider's ``Arguments``, a :class:`~nuke_crawl.params.SpiderArgs`),
the same check ``scrapy crawl`` makes."""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from nuke_crawl.analysis import PROVIDERS
from nuke_crawl.params import ArgumentError, SpiderArgs

SPIDER_MODULES = {
    "image_backfill": "nuke_crawl.spiders.image_backfill",
    "image_analysis": "nuke_crawl.spiders.image_analysis",
    "org": "nuke_crawl.spiders.org",
}


class Invalid(ValueError):
    """A request field is invalid: :attr:`field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _int(body: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise Invalid(name, f"expected a whole number from {lo} to {hi}")
    if not lo <= value <= hi:
        raise Invalid(name, f"must be from {lo} to {hi} (got {value})")
    return value


def uuid_text(name: str, value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise Invalid(name, f"expected a UUID (got {str(value)[:60]!r})") from None


def _uuid(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    return None if value is None else uuid_text(name, value)


def _uuids(body: Mapping[str, Any], name: str, most: int) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise Invalid(name, "expected a non-empty list of UUIDs")
    if len(value) > most:
        raise Invalid(name, f"at most {most} ids")
    return [uuid_text(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise Invalid(name, "expected true or false")
    return value


def _known(body: Mapping[str, Any], names: set[str]) -> None:
    if not isinstance(body, Mapping):
        raise Invalid("body", "expected a JSON object")
    unknown = sorted(set(body) - names - {"allowConcurrent"})
    if unknown:
        raise Invalid(
            unknown[0], f"unknown field; known: {', '.join(sorted(names))}, allowConcurrent"
        )


def spider_arguments(spider: str) -> type[SpiderArgs]:
    """The spider's typed arguments (its ``Arguments``, a SpiderArgs subclass)."""
    if spider not in SPIDER_MODULES:
        raise Invalid("spider", f"unknown spider {spider!r}; known: {', '.join(SPIDER_MODULES)}")
    module = importlib.import_module(SPIDER_MODULES[spider])
    for obj in vars(module).values():
        if isinstance(obj, type) and getattr(obj, "name", None) == spider:
            arguments: type[SpiderArgs] = getattr(obj, "Arguments")  # noqa: B009
            return arguments
    raise Invalid("spider", f"spider {spider!r} not found in {SPIDER_MODULES[spider]}")


def check_spider_args(spider: str, args: Mapping[str, Any], field: str = "args") -> dict[str, str]:
    """``args`` as ``-a`` strings, checked by the spider's own declarations."""
    arguments = spider_arguments(spider)
    if not isinstance(args, Mapping):
        raise Invalid(field, "expected an object of spider arguments")
    text = {
        str(k): (
            ",".join(map(str, v))
            if isinstance(v, list)
            else str(v).lower()
            if isinstance(v, bool)
            else str(v)
        )
        for k, v in args.items()
        if v is not None
    }
    try:
        arguments.parse(text, spider)
    except ArgumentError as exc:
        message = str(exc)
        # "argument vehicle_id" is in "argument vehicle_ids...": match the name whole
        bad = next((k for k in text if re.search(rf"\b{re.escape(k)}\b(?=[=:])", message)), None)
        raise Invalid(f"{field}.{bad}" if bad else field, message) from None
    return text


def allow_concurrent(body: Mapping[str, Any]) -> bool:
    return _bool(body, "allowConcurrent")


def process_images(body: Mapping[str, Any]) -> dict[str, str]:
    """``POST /api/process-images``: ``batchSize`` (1-1000, default 10: the run's
    ``limit``), ``organizationId``, ``vehicleIds`` (up to 1000 ids: only those vehicles,
    ``batchSize`` of them at most; ``image_backfill``'s ``vehicle_ids``), ``maxImages``
    (1-500)."""
    _known(body, {"batchSize", "organizationId", "vehicleIds", "maxImages"})
    batch = _int(body, "batchSize", 10, 1, 1000)
    org = _uuid(body, "organizationId")
    vehicles = _uuids(body, "vehicleIds", 1000)
    max_images = _int(body, "maxImages", None, 1, 500)
    args: dict[str, Any] = {"limit": batch, "batch_size": min(int(batch or 10), 10)}
    if org:
        args["organization_id"] = org
    if vehicles:
        args["vehicle_ids"] = vehicles
    if max_images:
        args["max_images"] = max_images
    return check_spider_args("image_backfill", args)


def analyze_images(body: Mapping[str, Any]) -> dict[str, str]:
    """``POST /api/analyze-images``: ``limit`` (1-10000, default 100), ``providers``
    (a list of local, openai, rekognition), ``organizationId``, ``vehicleIds``."""
    _known(body, {"limit", "providers", "organizationId", "vehicleIds"})
    limit = _int(body, "limit", 100, 1, 10_000)
    args: dict[str, Any] = {"limit": limit}
    providers = body.get("providers")
    if providers is not None:
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        if not isinstance(providers, list) or not providers:
            raise Invalid("providers", f"expected a list of {', '.join(PROVIDERS)}")
        unknown = [p for p in providers if p not in PROVIDERS]
        if unknown:
            raise Invalid(
                "providers", f"unknown provider {unknown[0]!r}; known: {', '.join(PROVIDERS)}"
            )
        args["providers"] = providers
    org = _uuid(body, "organizationId")
    if org:
        args["organization_id"] = org
    vehicles = _uuids(body, "vehicleIds", 1000)
    if vehicles:
        args["vehicle_ids"] = vehicles
    return check_spider_args("image_analysis", args)


def crawl_organizations(body: Mapping[str, Any]) -> dict[str, str]:
    """``POST /api/crawl-organizations``: ``threshold`` (>= 1), ``limit`` (1-1000),
    ``offset`` (>= 0), ``organizationId``."""
    _known(body, {"threshold", "limit", "offset", "organizationId"})
    args: dict[str, Any] = {
        "threshold": _int(body, "threshold", None, 1, 1_000_000),
        "limit": _int(body, "limit", None, 1, 1000),
        "offset": _int(body, "offset", None, 0, 10_000_000),
        "organization_id": _uuid(body, "organizationId"),
    }
    return check_spider_args("org", {k: v for k, v in args.items() if v is not None})


def new_job(body: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """``POST /api/jobs``: ``{"spider", "args"}`` for any of the project's spiders."""
    _known(body, {"spider", "args"})
    spider = body.get("spider")
    if not isinstance(spider, str):
        raise Invalid("spider", f"required; one of {', '.join(SPIDER_MODULES)}")
    return spider, check_spider_args(spider, body.get("args") or {})


def query_int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    got = _int({name: value}, name, default, lo, hi)
    assert got is not None
    return got
