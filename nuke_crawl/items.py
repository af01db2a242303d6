"""Items: typed dataclasses, read by pipelines through ItemAdapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nuke_crawl.analysis.results import ProviderResult
    from nuke_crawl.db import analysis, backfill


@dataclass
class VehicleItem:
    """One vehicle listing extracted from an organization's website."""

    organization_id: str
    discovery_url: str  # canonical listing URL (tracking parameters stripped)
    listing_url: str  # the URL as fetched
    fields: dict[str, Any] = field(default_factory=dict)  # vehicles columns
    image_urls: list[str] = field(default_factory=list)
    extracted_at: str = ""
    sources: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # kept in origin_metadata


@dataclass
class VehicleImagesItem:
    """A claimed vehicle whose images the backfill pipeline downloads (phase two).

    The pipeline fills ``results`` (one dict per image, in ``work.images`` order) and
    ``outcome`` (the vehicle settled: complete, or waiting for retries).
    """

    work: backfill.VehicleWork
    owner: str
    results: list[dict[str, Any]] = field(default_factory=list, repr=False)
    outcome: backfill.VehicleOutcome | None = None
    abandoned: bool = False
    """True when the crawl stopped before the vehicle was settled (left for the next run)."""


@dataclass
class ImageAnalysisItem:
    """One image to analyse (phase three), then its analysis.

    The spider yields it with ``work`` and ``owner``; the analysis pipeline reads the
    image, runs the providers and fills ``ok`` and ``results``. ``ok`` False carries
    ``error_reason`` (a provider's reason such as ``rate_limited``, or a fetch reason
    such as ``http_404``, ``missing_file``, ``invalid_image``) and ``error_detail``.
    """

    work: analysis.AnalysisWork
    ok: bool = False
    results: list[ProviderResult] = field(default_factory=list)
    error_reason: str | None = None
    error_detail: str | None = None
    owner: str | None = None
    abandoned: bool = False
    """True when the crawl stopped before the image was analysed (nothing recorded)."""
