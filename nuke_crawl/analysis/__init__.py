"""Image analysis providers, pure of Scrapy and of the database.

Each provider takes one downloaded, verified image's bytes and returns a
:class:`~nuke_crawl.analysis.results.ProviderResult` whose parts map onto the tables
``image_tags``, ``component_conditions``, ``paint_quality_assessments``,
``vehicle_spid_data`` and ``vehicle_images.ai_scan_metadata``:

``local``
    :func:`analyze_local` - sharpness, exposure, colours, perceptual hash and issue
    flags (blurry, too dark/bright, placeholder, near-duplicate). Always available.
``openai``
    :class:`OpenAIProvider` - a vision model's structured judgement (view, components,
    paint, documents, GM SPID sheets). Needs ``OPENAI_API_KEY``.
``rekognition``
    :class:`RekognitionProvider` - Amazon Rekognition labels as tags. Needs AWS
    credentials.

Every provider satisfies :class:`~nuke_crawl.analysis.registry.Provider`
(``async analyze(image, mime_type, *, context)``, ``async check() -> (ok, message)``,
``configured()``, ``from_settings``) and is registered by name in
:data:`~nuke_crawl.analysis.registry.PROVIDER_CLASSES`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .registry import PROVIDER_CLASSES, Provider, Providers
from .results import (
    DAMAGE_TYPES,
    DOCUMENT_CATEGORIES,
    ERROR_REASONS,
    PAINT_DEFECTS,
    TAG_TYPES,
    VIEWS,
    ComponentCondition,
    DocumentInfo,
    ImageTag,
    PaintAssessment,
    ProviderResult,
    SpidData,
    TokenUsage,
    scan_metadata,
)

PROVIDERS = tuple(PROVIDER_CLASSES)
"""Names of the providers, as used in ``ProviderResult.provider`` and settings (a new
provider is registered in :data:`~nuke_crawl.analysis.registry.PROVIDER_CLASSES`)."""

# The providers pull in numpy, the openai client and boto3 (about 60 MB and a second
# of start-up): they are imported on first use, so that a process which only names
# them (every `scrapy` command loads every spider and command module) does not pay.
_LAZY = {
    "DUPLICATE_MAX_DISTANCE": ".local",
    "analyze_local": ".local",
    "LocalProvider": ".local",
    "hamming": ".local",
    "parse_hash": ".local",
    "ANALYSIS_SCHEMA": ".openai_provider",
    "PRICES_PER_MILLION": ".openai_provider",
    "OpenAIProvider": ".openai_provider",
    "estimate_cost": ".openai_provider",
    "LABEL_TAG_TYPES": ".rekognition",
    "RekognitionProvider": ".rekognition",
    "labels_to_tags": ".rekognition",
}

if TYPE_CHECKING:
    from .local import (
        DUPLICATE_MAX_DISTANCE,
        LocalProvider,
        analyze_local,
        hamming,
        parse_hash,
    )
    from .openai_provider import ANALYSIS_SCHEMA, PRICES_PER_MILLION, OpenAIProvider, estimate_cost
    from .rekognition import LABEL_TAG_TYPES, RekognitionProvider, labels_to_tags


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ANALYSIS_SCHEMA",
    "DAMAGE_TYPES",
    "DOCUMENT_CATEGORIES",
    "DUPLICATE_MAX_DISTANCE",
    "ERROR_REASONS",
    "LABEL_TAG_TYPES",
    "PAINT_DEFECTS",
    "PRICES_PER_MILLION",
    "PROVIDERS",
    "PROVIDER_CLASSES",
    "TAG_TYPES",
    "VIEWS",
    "ComponentCondition",
    "DocumentInfo",
    "ImageTag",
    "LocalProvider",
    "OpenAIProvider",
    "PaintAssessment",
    "Provider",
    "ProviderResult",
    "Providers",
    "RekognitionProvider",
    "SpidData",
    "TokenUsage",
    "analyze_local",
    "estimate_cost",
    "hamming",
    "labels_to_tags",
    "parse_hash",
    "scan_metadata",
]
