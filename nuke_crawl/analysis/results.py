"""Typed results of image analysis, shaped after the tables the database layer writes.

Every provider (:mod:`.local`, :mod:`.openai_provider`, :mod:`.rekognition`) returns one
:class:`ProviderResult` per image. Nothing here knows about Scrapy or the database; the
mapping onto the platform's tables is:

=============================  =====================================================
dataclass                      table (one row per instance)
=============================  =====================================================
:class:`ImageTag`              ``image_tags``
:class:`ComponentCondition`    ``component_conditions``
:class:`PaintAssessment`       ``paint_quality_assessments``
:class:`SpidData`              ``vehicle_spid_data``
:meth:`ProviderResult.to_metadata`   ``vehicle_images.ai_scan_metadata[provider]``
=============================  =====================================================

Conventions: every ``confidence`` is a float from 0 to 100; every 1-10 rating is an
``int``; bounding boxes are percentages (0-100) of the image's width and height, ``x``/``y``
being the top-left corner.

A provider never raises for a failure that is expected in the wild: it returns
``ok=False`` with an ``error_reason`` from :data:`ERROR_REASONS` and a human-readable
``error_detail`` (never containing an API key).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

TAG_TYPES = ("part", "tool", "brand", "process", "issue", "custom")
"""Allowed ``image_tags.tag_type`` values."""

VIEWS = ("exterior", "interior", "engine", "undercarriage", "document", "detail")
"""Allowed image-level ``view`` values."""

DOCUMENT_CATEGORIES = (
    "spid_sheet",
    "window_sticker",
    "title",
    "registration",
    "service_record",
    "build_sheet",
    "other",
)
"""Allowed ``document_category`` values (only when ``is_document``)."""

DAMAGE_TYPES = (
    "rust",
    "corrosion",
    "dent",
    "scratch",
    "crack",
    "chip",
    "tear",
    "wear",
    "fading",
    "leak",
    "broken",
    "missing",
    "dirt",
    "modified",
    "other",
)
"""Vocabulary of ``component_conditions.damage_types`` entries."""

PAINT_DEFECTS = (
    "orange_peel",
    "runs",
    "overspray",
    "color_mismatch",
    "fading",
    "oxidation",
    "clear_coat_failure",
    "chips",
    "scratches",
    "swirl_marks",
    "dents",
    "rust",
    "bubbling",
    "fisheyes",
    "dust_nibs",
    "other",
)
"""Vocabulary of ``paint_quality_assessments.defects`` entries."""

ERROR_REASONS = (
    "not_configured",  # no API key / no AWS credentials
    "auth_failed",  # 401, bad key or signature
    "permission_denied",  # 403 / AccessDenied
    "model_not_found",  # 404 for the model
    "unreachable",  # connection refused, DNS failure... after retries
    "timeout",  # no answer within the timeout, after retries
    "rate_limited",  # 429 / throttling, after retries
    "server_error",  # 5xx, after retries
    "bad_request",  # 400/422: the request itself was rejected
    "invalid_image",  # bytes the provider cannot decode or accept
    "malformed_output",  # answer is not the JSON we asked for (or was truncated)
    "refused",  # the model refused (message.refusal / content filter)
    "error",  # anything else (detail says what)
)
"""Machine-readable failure reasons a :class:`ProviderResult` may carry."""


def clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]``."""
    return max(low, min(high, value))


def _json_safe(value: Any) -> Any:
    """``value`` with dataclasses/tuples turned into dicts/lists and NaN/inf into None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, 6)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    # numpy scalars and the like
    item = getattr(value, "item", None)
    if callable(item):
        return _json_safe(item())
    return str(value)


@dataclass(slots=True)
class ImageTag:
    """One ``image_tags`` row: something seen in the image (a part, a tool, an issue...).

    ``x``, ``y``, ``width`` and ``height`` are percentages of the image size (all None
    when the provider gives no box). ``ai_detection_data`` keeps the provider's raw
    evidence (label parents, instance confidence, measured values...).
    """

    tag_name: str
    tag_type: str = "custom"
    confidence: float = 100.0
    x: float | None = None
    y: float | None = None
    width: float | None = None
    height: float | None = None
    ai_detection_data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tag_type not in TAG_TYPES:
            raise ValueError(f"tag_type {self.tag_type!r} is not one of {TAG_TYPES}")
        self.confidence = clamp(float(self.confidence), 0.0, 100.0)

    @property
    def has_box(self) -> bool:
        """True when the tag carries a bounding box."""
        return None not in (self.x, self.y, self.width, self.height)


@dataclass(slots=True)
class ComponentCondition:
    """One ``component_conditions`` row: a vehicle component and its state.

    ``condition_rating`` runs from 1 (destroyed) to 10 (as new).
    """

    component_name: str
    condition_rating: int
    damage_types: list[str] = field(default_factory=list)
    needs_attention: bool = False
    confidence: float = 50.0
    detected_by_model: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.condition_rating <= 10:
            raise ValueError(f"condition_rating {self.condition_rating} is not within 1-10")
        self.confidence = clamp(float(self.confidence), 0.0, 100.0)


@dataclass(slots=True)
class PaintAssessment:
    """One ``paint_quality_assessments`` row: the paint of one panel.

    ``appears_original`` is None when the model cannot tell; ``paint_quality_score`` runs
    from 1 (failed) to 10 (flawless).
    """

    panel_name: str
    paint_quality_score: int
    appears_original: bool | None = None
    defects: list[str] = field(default_factory=list)
    confidence: float = 50.0
    assessed_by_model: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.paint_quality_score <= 10:
            raise ValueError(f"paint_quality_score {self.paint_quality_score} is not within 1-10")
        self.confidence = clamp(float(self.confidence), 0.0, 100.0)


@dataclass(slots=True)
class SpidData:
    """One ``vehicle_spid_data`` row: a GM Service Parts Identification sheet as read.

    Codes are upper-cased and stripped; ``raw`` keeps the model's answer unchanged.
    ``rpo_codes`` includes ``engine_code``/``transmission_code``/``axle_code`` when the
    sheet lists them among the options (it usually does).
    """

    vin: str | None = None
    model_code: str | None = None
    build_date: str | None = None
    paint_codes: list[str] = field(default_factory=list)
    rpo_codes: list[str] = field(default_factory=list)
    engine_code: str | None = None
    transmission_code: str | None = None
    axle_code: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DocumentInfo:
    """Whether the image shows a document, and which kind (:data:`DOCUMENT_CATEGORIES`)."""

    is_document: bool = False
    category: str | None = None

    def __post_init__(self) -> None:
        if self.category is not None and self.category not in DOCUMENT_CATEGORIES:
            raise ValueError(
                f"document category {self.category!r} is not one of {DOCUMENT_CATEGORIES}"
            )


@dataclass(slots=True)
class TokenUsage:
    """Tokens a remote model billed for one image (0 for local work)."""

    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        """``prompt + completion``."""
        return self.prompt + self.completion


@dataclass(slots=True)
class ProviderResult:
    """What one provider found in one image.

    ``data`` is the provider-specific part of ``vehicle_images.ai_scan_metadata`` (measured
    values, labels, the model's summary, validation warnings...). Image-level findings
    (``view``, ``document``, ``build_quality`` 1-10, ``modifications``, ``vin_from_plate``)
    are None/empty when the provider does not judge them. ``attempts`` counts the
    requests made (1 + retries; 0 for local work). ``cost_usd`` is an estimate, None when
    the model has no known price.
    """

    provider: str
    ok: bool
    model: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    tags: list[ImageTag] = field(default_factory=list)
    components: list[ComponentCondition] = field(default_factory=list)
    paint: list[PaintAssessment] = field(default_factory=list)
    spid: SpidData | None = None
    document: DocumentInfo | None = None
    view: str | None = None
    build_quality: int | None = None
    modifications: list[str] = field(default_factory=list)
    vin_from_plate: str | None = None
    tokens: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = 0.0
    attempts: int = 0
    elapsed_s: float = 0.0
    error_reason: str | None = None
    error_detail: str | None = None

    @classmethod
    def failure(cls, provider: str, reason: str, detail: str, **fields: Any) -> ProviderResult:
        """A failed result (``ok=False``) with ``reason`` from :data:`ERROR_REASONS`."""
        if reason not in ERROR_REASONS:
            raise ValueError(f"unknown error reason {reason!r}")
        return cls(provider=provider, ok=False, error_reason=reason, error_detail=detail, **fields)

    @property
    def is_document(self) -> bool:
        """True when the provider judged the image to be a document."""
        return self.document is not None and self.document.is_document

    @property
    def document_category(self) -> str | None:
        """The document kind, or None."""
        return self.document.category if self.document is not None else None

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-safe dict of everything, for ``vehicle_images.ai_scan_metadata``.

        Contains only str/int/float/bool/None, lists and dicts (``json.dumps`` works on it
        without a custom encoder); floats are rounded to 6 places and NaN becomes None.
        """
        out: dict[str, Any] = _json_safe(self)
        out["tokens"]["total"] = self.tokens.total
        out["is_document"] = self.is_document
        out["document_category"] = self.document_category
        return out


def scan_metadata(results: list[ProviderResult] | tuple[ProviderResult, ...]) -> dict[str, Any]:
    """``ai_scan_metadata`` for an image analysed by several providers: one key each."""
    return {r.provider: r.to_metadata() for r in results}
