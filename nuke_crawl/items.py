"""Items: typed dataclasses, read by pipelines through ItemAdapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
