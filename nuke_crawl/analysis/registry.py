"""The analysis providers behind one :class:`Provider` protocol, found by name.

A new provider is one module with a class satisfying :class:`Provider` (with a
``from_settings`` class method) and one line in :data:`PROVIDER_CLASSES`; the spider's
``providers`` argument, the preflight, ``scrapy analyze-check`` and the analysis
pipeline all go through this registry. Classes are imported on first use: they pull in
numpy, the openai client or boto3.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, ClassVar, Protocol, runtime_checkable

from .results import ProviderResult

PROVIDER_CLASSES: dict[str, str] = {
    "local": "nuke_crawl.analysis.local.LocalProvider",
    "openai": "nuke_crawl.analysis.openai_provider.OpenAIProvider",
    "rekognition": "nuke_crawl.analysis.rekognition.RekognitionProvider",
}
"""Provider name -> its class; the order is the order results are listed in."""


@runtime_checkable
class Provider(Protocol):
    """One way of analysing an image.

    ``remote`` False: runs first, in a thread, and its failure fails the image before
    any remote call. ``optional`` True: its failure does not fail an image another
    provider analysed. ``in_progress_factor``: images a run keeps in progress per
    concurrent call (2 for a provider whose retries wait without holding a call slot).
    ``missing``: what a provider that is not :meth:`configured` lacks.
    """

    name: ClassVar[str]
    remote: ClassVar[bool]
    optional: ClassVar[bool]
    in_progress_factor: ClassVar[int]
    missing: ClassVar[str]

    @classmethod
    def from_settings(cls, settings: Any) -> Provider:
        """Built from Scrapy settings (and, for secrets, the environment)."""
        ...

    def configured(self) -> bool:
        """True when it has what it needs to run (not that it works: see check)."""
        ...

    async def check(self) -> tuple[bool, str]:
        """A preflight: ``(True, "ok: ...")`` or ``(False, "<reason>: <detail>")``."""
        ...

    async def analyze(
        self, image: bytes, mime_type: str, *, context: Mapping[str, Any] | None = None
    ) -> ProviderResult:
        """Analyse one verified image; never raises for expected failures. ``context``
        holds the listing's fields and ``other_hashes`` (the vehicle's other images'
        perceptual hashes)."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections."""
        ...


def provider_names() -> tuple[str, ...]:
    return tuple(PROVIDER_CLASSES)


def provider_class(name: str) -> type[Provider]:
    """The class registered as ``name``; ``KeyError`` for an unknown name."""
    module, _, attr = PROVIDER_CLASSES[name].rpartition(".")
    cls: type[Provider] = getattr(import_module(module), attr)
    return cls


def build_provider(name: str, settings: Any) -> Provider:
    return provider_class(name).from_settings(settings)


@dataclass
class Providers:
    """The providers of a run, in registry order."""

    items: dict[str, Provider] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.items)

    @property
    def remote(self) -> dict[str, Provider]:
        return {n: p for n, p in self.items.items() if p.remote}

    @property
    def in_progress_factor(self) -> int:
        return max((p.in_progress_factor for p in self.items.values()), default=1)

    async def aclose(self) -> None:
        for provider in self.items.values():
            await provider.aclose()


def select_providers(settings: Any, requested: Sequence[str] | None) -> tuple[Providers, list[str]]:
    """The providers to use and, for explicitly requested ones, why they cannot be.

    Without ``requested``: every registered provider that is configured.
    """
    problems: list[str] = []
    chosen: dict[str, Provider] = {}
    for name in requested or PROVIDER_CLASSES:
        provider = build_provider(name, settings)
        if provider.configured():
            chosen[name] = provider
        elif requested:
            problems.append(f"{name}: not_configured: {provider.missing}")
    return Providers(chosen), problems


def probe_image() -> bytes:
    """A small generated JPEG for preflights."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), (90, 120, 160))
    ImageDraw.Draw(image).rectangle((20, 20, 70, 50), fill=(200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


async def check_providers(
    settings: Any, requested: Sequence[str] | None
) -> list[tuple[str, bool, str]]:
    """Each provider's preflight: ``(name, ok, "ok: ..." or "<reason>: <detail>")``.

    Without ``requested``, every provider is listed: unconfigured ones as
    ``skipped (not configured)`` but not counted as failures, so a key that is set but
    wrong is the only thing that fails.
    """
    out: list[tuple[str, bool, str]] = []
    for name in requested or PROVIDER_CLASSES:
        provider = build_provider(name, settings)
        try:
            configured = provider.configured()
            ok, message = await provider.check()
        finally:
            await provider.aclose()
        if not configured:
            out.append(
                (
                    name,
                    not requested,
                    ("skipped (not configured): " + message) if not requested else message,
                )
            )
        else:
            out.append((name, ok, message))
    return out
