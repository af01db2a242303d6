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

Remote providers expose ``async analyze(image, mime_type, *, context)`` and
``async check() -> (ok, message)`` (a preflight to run before a batch).
"""

from __future__ import annotations

from .local import DUPLICATE_MAX_DISTANCE, analyze_local, hamming, parse_hash
from .openai_provider import ANALYSIS_SCHEMA, PRICES_PER_MILLION, OpenAIProvider, estimate_cost
from .rekognition import LABEL_TAG_TYPES, RekognitionProvider, labels_to_tags
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

PROVIDERS = ("local", "openai", "rekognition")
"""Names of the providers, as used in ``ProviderResult.provider`` and settings."""

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
    "TAG_TYPES",
    "VIEWS",
    "ComponentCondition",
    "DocumentInfo",
    "ImageTag",
    "OpenAIProvider",
    "PaintAssessment",
    "ProviderResult",
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
