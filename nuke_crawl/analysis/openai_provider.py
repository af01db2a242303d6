"""Vehicle-image analysis with an OpenAI vision model (or any OpenAI-compatible server).

One chat-completions call per image: the image goes as a base64 ``data:`` URL, and the
answer is constrained by a strict JSON schema (:data:`ANALYSIS_SCHEMA`, sent as
``response_format={"type": "json_schema", ...}``). The answer is then validated again
here (enums, 1-10 ranges, VIN and RPO shapes), because a compatible server or an older
model may not enforce the schema.

Failures never raise: :meth:`OpenAIProvider.analyze` returns ``ok=False`` with one of

``not_configured``   no API key
``auth_failed``      401 (wrong or revoked key)
``permission_denied`` 403 (key without access to the model, region blocks...)
``model_not_found``  404 (unknown model, or one the key cannot see)
``bad_request``      400/413/422 (image too large or unsupported, schema rejected...)
``refused``          ``message.refusal`` set, or ``finish_reason == "content_filter"``
``malformed_output`` not JSON (the answer's content, or the whole body: an HTML page
                     served as ``application/json``), not the schema's shape, or cut
                     off (``finish_reason == "length"``)
``rate_limited``     429 on every attempt
``server_error``     5xx (or 408/409) on every attempt
``timeout``          no answer within ``timeout`` seconds on every attempt
``unreachable``      connection refused / DNS failure on every attempt
``error``            anything else the client raised

Retries are ours, not the client's (it is built with ``max_retries=0``): 429, 5xx, 408,
409, timeouts and connection errors are retried up to ``max_retries`` times after
``backoff_base * 2**n`` seconds (n = 0, 1, ...), or after the server's ``Retry-After``
(seconds or HTTP date; ``retry-after-ms`` too) when it asks for longer, capped at
:data:`MAX_BACKOFF`. ``ProviderResult.attempts`` counts the requests made.

Cost is an *estimate*: ``usage.prompt_tokens``/``completion_tokens`` times the list
prices in :data:`PRICES_PER_MILLION` (USD per 1M tokens, as published by OpenAI when this
was written; image tokens are billed as input tokens and already counted in
``prompt_tokens``). Unknown models get ``cost_usd=None``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Self

import openai
from openai import AsyncOpenAI

from nuke_crawl import settings as defaults

from ..exceptions import ReasonError
from ..extraction.vin import is_valid_vin
from ..utils.http import parse_retry_after
from .results import (
    DAMAGE_TYPES,
    DOCUMENT_CATEGORIES,
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
    clamp,
)

logger = logging.getLogger(__name__)

PROVIDER = "openai"
DEFAULT_MODEL = defaults.NUKE_OPENAI_MODEL
DEFAULT_TIMEOUT = defaults.NUKE_OPENAI_TIMEOUT
DEFAULT_MAX_RETRIES = defaults.NUKE_OPENAI_MAX_RETRIES
DEFAULT_BACKOFF_BASE = defaults.NUKE_OPENAI_BACKOFF_BASE
MAX_BACKOFF = 60.0
"""Longest wait (s) between two attempts, whatever ``Retry-After`` says."""
MAX_COMPLETION_TOKENS = 1500
"""Upper bound on the answer's length (keeps a runaway answer's cost bounded)."""

PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    # model prefix: (USD per 1M input tokens, USD per 1M output tokens), list prices
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
}
"""Estimated prices; the longest matching prefix of the model name wins
(``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``)."""

_TAG_TYPES_FOR_MODEL = tuple(t for t in TAG_TYPES if t != "issue")
_RPO_RE = re.compile(r"^[A-Z0-9]{3}$")
_SERIAL_RE = re.compile(r"^[A-Z0-9]{5,17}$")
_KEY_RE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-*]{4,}")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (strict structured outputs need every key present)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    """A strict object: every property required, nothing else allowed."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_NULL_STR = {"type": ["string", "null"]}

ANALYSIS_SCHEMA: dict[str, Any] = _obj(
    {
        "view": {
            "type": "string",
            "enum": list(VIEWS),
            "description": "What the photo mainly shows.",
        },
        "summary": {"type": "string", "description": "One sentence, at most 200 characters."},
        "tags": {
            "type": "array",
            "description": "Distinct things visible: parts, tools, brands "
            "(logos, badges), processes (welding, painting...).",
            "items": _obj(
                {
                    "name": _STR,
                    "type": {"type": "string", "enum": list(_TAG_TYPES_FOR_MODEL)},
                    "confidence": {"type": "integer", "description": "0-100"},
                }
            ),
        },
        "components": {
            "type": "array",
            "items": _obj(
                {
                    "name": {
                        "type": "string",
                        "description": "e.g. front bumper, driver seat, valve cover, frame rail",
                    },
                    "condition": {"type": "integer", "description": "1 (destroyed) to 10 (as new)"},
                    "damage_types": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(DAMAGE_TYPES)},
                    },
                    "needs_attention": {"type": "boolean"},
                    "confidence": {"type": "integer", "description": "0-100"},
                }
            ),
        },
        "paint": {
            "type": "array",
            "description": "One entry per painted panel clearly "
            "visible; empty when no paint is visible.",
            "items": _obj(
                {
                    "panel": {
                        "type": "string",
                        "description": "e.g. hood, left front fender, driver door",
                    },
                    "appears_original": {
                        "type": ["boolean", "null"],
                        "description": "null when it cannot be told",
                    },
                    "defects": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(PAINT_DEFECTS)},
                    },
                    "score": {"type": "integer", "description": "1 (failed) to 10 (flawless)"},
                    "confidence": {"type": "integer", "description": "0-100"},
                }
            ),
        },
        "build_quality": {
            "type": ["integer", "null"],
            "description": "Quality of the visible "
            "workmanship (restoration, repairs, custom work), 1-10; null when "
            "it cannot be judged.",
        },
        "modifications": {
            "type": "array",
            "items": _STR,
            "description": "Visible non-factory "
            "changes (aftermarket wheels, swapped engine, lowered...).",
        },
        "document": _obj(
            {
                "is_document": {"type": "boolean"},
                "category": {
                    "type": ["string", "null"],
                    "enum": [*DOCUMENT_CATEGORIES, None],
                    "description": "null unless is_document",
                },
            }
        ),
        "vin_from_plate": {
            "type": ["string", "null"],
            "description": "VIN read from a VIN "
            "plate, tag or document in the image, exactly as printed; null if "
            "none is legible.",
        },
        "spid": _nullable(
            _obj(
                {
                    "vin": _NULL_STR,
                    "model_code": _NULL_STR,
                    "build_date": _NULL_STR,
                    "paint_codes": {"type": "array", "items": _STR},
                    "rpo_codes": {
                        "type": "array",
                        "items": _STR,
                        "description": "Every 3-character RPO code on the sheet.",
                    },
                    "engine_code": _NULL_STR,
                    "transmission_code": _NULL_STR,
                    "axle_code": _NULL_STR,
                }
            )
        ),
    }
)
"""The strict JSON schema every answer must follow."""

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "vehicle_image_analysis", "strict": True, "schema": ANALYSIS_SCHEMA},
}

SYSTEM_PROMPT = (
    "You inspect photographs from vehicle listings for a collector-car database. "
    "Describe only what is visible in the image; do not guess beyond it. "
    "Rate component condition and paint quality from 1 (worst) to 10 (best). "
    "If the image is a document, classify it. If the vehicle is a General Motors product "
    "(Chevrolet, GMC, Pontiac, Oldsmobile, Buick, Cadillac, Saturn, Hummer, Geo) and the "
    "image shows its Service Parts Identification (SPID) label, transcribe it into "
    "`spid` (all RPO codes, paint codes, model code, build date, VIN); otherwise `spid` "
    "is null. Answer with JSON following the schema."
)

_CONTEXT_KEYS = ("year", "make", "model", "trim", "vin", "title", "body_style")


def price_for(model: str) -> tuple[float, float] | None:
    """``(input, output)`` USD per 1M tokens for ``model``, or None when unknown."""
    best: str | None = None
    for prefix in PRICES_PER_MILLION:
        if (model == prefix or model.startswith(prefix + "-")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return PRICES_PER_MILLION[best] if best is not None else None


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Estimated USD for one call (see :data:`PRICES_PER_MILLION`), None when unknown."""
    price = price_for(model)
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


class _Failure(ReasonError):
    """Internal: a call that failed for good, with its reason."""

    def __init__(self, reason: str, detail: str, attempts: int = 0) -> None:
        super().__init__(reason, detail)
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.detail, self.attempts))


class OpenAIProvider:
    """Analyse vehicle images with an OpenAI (or compatible) vision model.

    Reads no settings by itself (the provider registry builds it from settings:
    :mod:`nuke_crawl.analysis.registry`). ``image_detail``
    is the vision ``detail`` parameter (``"low"`` is far cheaper, ``"auto"`` reads
    labels and plates better).

    Use as ``async with OpenAIProvider(...) as p`` or call :meth:`aclose`; the client is
    created on first use, inside the running event loop.
    """

    name = PROVIDER
    remote = True
    optional = False
    # a call waiting out a retry's backoff holds no slot: twice as many images in progress
    in_progress_factor = 2
    missing = "OPENAI_API_KEY is not set"

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        *,
        image_detail: str = "auto",
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if image_detail not in ("auto", "low", "high"):
            raise ValueError(f"image_detail must be auto, low or high, not {image_detail!r}")
        self._api_key = api_key or None
        self.base_url = base_url or None
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.max_backoff = float(max_backoff)
        self.image_detail = image_detail
        self._client: AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._call_slots: asyncio.Semaphore | None = None

    def limit_calls(self, slots: int) -> None:
        """Allow at most ``slots`` requests in flight. A call waiting out a
        backoff holds no slot, so retries do not starve the other images."""
        self._call_slots = asyncio.Semaphore(slots) if slots > 0 else None

    def __repr__(self) -> str:  # never shows the key
        return (
            f"OpenAIProvider(model={self.model!r}, base_url={self.base_url!r}, "
            f"key={'set' if self._api_key else 'missing'})"
        )

    @classmethod
    def from_settings(cls, settings: Any) -> OpenAIProvider:
        """From settings, falling back to the environment: ``OPENAI_API_KEY``,
        ``OPENAI_BASE_URL``, ``NUKE_OPENAI_MODEL`` (``gpt-4o-mini``),
        ``NUKE_OPENAI_TIMEOUT`` (60 s), ``NUKE_OPENAI_MAX_RETRIES`` (3),
        ``NUKE_OPENAI_BACKOFF_BASE`` (1 s); ``NUKE_OPENAI_IMAGE_DETAIL`` (``auto``) and
        ``NUKE_ANALYSIS_CONCURRENCY`` (10: requests in flight, :meth:`limit_calls`)."""

        def read(name: str) -> Any:
            value = settings.get(name)
            if value is None or value == "":
                value = os.environ.get(name) or None
            return value

        provider = cls(
            api_key=read("OPENAI_API_KEY"),
            base_url=read("OPENAI_BASE_URL"),
            model=str(read("NUKE_OPENAI_MODEL") or DEFAULT_MODEL),
            timeout=float(read("NUKE_OPENAI_TIMEOUT") or DEFAULT_TIMEOUT),
            max_retries=int(read("NUKE_OPENAI_MAX_RETRIES") or DEFAULT_MAX_RETRIES),
            backoff_base=float(read("NUKE_OPENAI_BACKOFF_BASE") or DEFAULT_BACKOFF_BASE),
            image_detail=str(
                settings.get("NUKE_OPENAI_IMAGE_DETAIL") or defaults.NUKE_OPENAI_IMAGE_DETAIL
            ),
        )
        concurrency = settings.get("NUKE_ANALYSIS_CONCURRENCY")
        if concurrency:
            provider.limit_calls(int(concurrency))
        return provider

    def configured(self) -> bool:
        """True when an API key is set (says nothing about the key being valid)."""
        return self._api_key is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (the provider can be used again afterwards)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _get_client(self) -> AsyncOpenAI:
        """The client, built in (and bound to) the running event loop."""
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            # its pooled connections belong to a finished loop; they cannot be reused
            self._client = None
        if self._client is None:
            assert self._api_key is not None
            self._client_loop = loop
            self._client = AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,  # retries are ours, counted and logged
            )
        return self._client

    # ------------------------------------------------------------------ preflight

    async def check(self) -> tuple[bool, str]:
        """Preflight: is the key set and accepted, and is the model available?

        Costs nothing (``GET /models/{model}``). Returns ``(True, "ok: ...")`` or
        ``(False, "<reason>: <detail>")`` with a reason from the module docstring
        (``(False, "OPENAI_API_KEY is not set")`` without a key).
        """
        if not self._api_key:
            return False, "OPENAI_API_KEY is not set"
        try:
            model = await self._get_client().models.retrieve(self.model)
        except openai.OpenAIError as exc:
            reason, detail, _ = self._classify(exc)
            if reason == "model_not_found":
                detail = f"model {self.model!r} is not available with this key ({detail})"
            return False, f"{reason}: {detail}"
        return True, f"ok: model {getattr(model, 'id', self.model)!r} at {self._where()}"

    def _where(self) -> str:
        return self.base_url or "https://api.openai.com/v1"

    # ------------------------------------------------------------------ analysis

    async def analyze(
        self, image: bytes, mime_type: str, *, context: Mapping[str, Any] | None = None
    ) -> ProviderResult:
        """Analyse one image; ``context`` may carry year/make/model/vin/title.

        Never raises for API, network or answer problems (see the module docstring);
        programming errors still raise.
        """
        started = time.perf_counter()
        if not self._api_key:
            return ProviderResult.failure(
                PROVIDER, "not_configured", "OPENAI_API_KEY is not set", model=self.model
            )
        if not image:
            return ProviderResult.failure(
                PROVIDER, "invalid_image", "empty image", model=self.model
            )
        request = self._build_request(image, mime_type, context or {})
        try:
            completion, attempts = await self._call_with_retries(request)
        except _Failure as failure:
            logger.warning("openai analysis failed: %s (%s)", failure.reason, failure.detail)
            return ProviderResult.failure(
                PROVIDER,
                failure.reason,
                failure.detail,
                model=self.model,
                attempts=failure.attempts,
                elapsed_s=time.perf_counter() - started,
            )
        result = self._parse_completion(completion)
        result.attempts = attempts
        result.elapsed_s = time.perf_counter() - started
        result.data["retries"] = attempts - 1
        if not result.ok:
            logger.warning(
                "openai analysis failed: %s (%s)", result.error_reason, result.error_detail
            )
        return result

    def _build_request(
        self, image: bytes, mime_type: str, context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for one image."""
        url = f"data:{mime_type or 'image/jpeg'};base64,{base64.b64encode(image).decode('ascii')}"
        known = {k: context[k] for k in _CONTEXT_KEYS if context.get(k) not in (None, "")}
        text = "Analyse this vehicle listing photo."
        if known:
            text += " Listing context (may be wrong): " + json.dumps(known, default=str)
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text},
                        {
                            "type": "image_url",
                            "image_url": {"url": url, "detail": self.image_detail},
                        },
                    ],
                },
            ],
            "response_format": RESPONSE_FORMAT,
            "max_completion_tokens": MAX_COMPLETION_TOKENS,
        }

    async def _call_with_retries(self, request: dict[str, Any]) -> tuple[Any, int]:
        """``(completion, attempts)``; raises :class:`_Failure` when it gives up."""
        client = self._get_client()
        attempt = 0
        while True:
            attempt += 1
            try:
                if self._call_slots is None:
                    return await client.chat.completions.create(**request), attempt
                async with self._call_slots:
                    return await client.chat.completions.create(**request), attempt
            except json.JSONDecodeError as exc:
                # a body that is not JSON under a JSON content type (a proxy's HTML page):
                # the client's decoding fails; the call may be billed, never retried
                raise _Failure(
                    "malformed_output",
                    self._redact(f"answer is not JSON ({exc.msg}): {exc.doc[:200]!r}"),
                    attempt,
                ) from None
            except openai.OpenAIError as exc:
                reason, detail, retry_after = self._classify(exc)
                transient = reason in ("rate_limited", "server_error", "timeout", "unreachable")
                if not transient or attempt > self.max_retries:
                    if attempt > 1:
                        detail = f"{detail} (after {attempt} attempts)"
                    raise _Failure(reason, detail, attempt) from None
                delay = self.backoff_base * 2 ** (attempt - 1)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                delay = min(delay, self.max_backoff)
                logger.info(
                    "openai %s (attempt %d/%d), retrying in %.1fs: %s",
                    reason,
                    attempt,
                    self.max_retries + 1,
                    delay,
                    detail,
                )
                await asyncio.sleep(delay)

    def _classify(self, exc: BaseException) -> tuple[str, str, float | None]:
        """``(reason, detail, retry_after_seconds)`` for an exception of the client."""
        retry_after: float | None = None
        if isinstance(exc, openai.APITimeoutError):
            return "timeout", f"no answer within {self.timeout:g}s from {self._where()}", None
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            return "unreachable", self._redact(f"cannot connect to {self._where()} ({why})"), None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._redact(f"HTTP {status}: {_error_message(exc)}")
            retry_after = _retry_after(exc.response.headers)
            if status == 401:
                return "auth_failed", detail, None
            if status == 403:
                return "permission_denied", detail, None
            if status == 404:
                return "model_not_found", detail, None
            if status == 429:
                return "rate_limited", detail, retry_after
            if status == 408:
                return "timeout", detail, retry_after
            if status == 409 or status >= 500:
                return "server_error", detail, retry_after
            if status in (400, 413, 415, 422):
                return "bad_request", detail, None
            return "error", detail, None
        return "error", self._redact(f"{type(exc).__name__}: {exc}"), None

    def _redact(self, text: str) -> str:
        """``text`` without the API key (nor anything shaped like an OpenAI key)."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return _KEY_RE.sub(r"\1***", text)

    # ------------------------------------------------------------------ parsing

    def _parse_completion(self, completion: Any) -> ProviderResult:
        """A result from a chat completion: usage and cost first, then the answer."""
        usage = getattr(completion, "usage", None)
        tokens = TokenUsage(
            prompt=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion=int(getattr(usage, "completion_tokens", 0) or 0),
        )
        model = getattr(completion, "model", None) or self.model
        # the answer names the exact snapshot; fall back to the requested model's price
        priced = model if price_for(model) is not None else self.model
        common: dict[str, Any] = {
            "model": model,
            "tokens": tokens,
            "cost_usd": estimate_cost(priced, tokens.prompt, tokens.completion),
        }
        choices = getattr(completion, "choices", None) or []
        if not choices:
            return ProviderResult.failure(
                PROVIDER, "malformed_output", "no choices in answer", **common
            )
        choice = choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if refusal:
            return ProviderResult.failure(PROVIDER, "refused", str(refusal)[:500], **common)
        if choice.finish_reason == "content_filter":
            return ProviderResult.failure(
                PROVIDER, "refused", "finish_reason=content_filter", **common
            )
        content = message.content or ""
        if choice.finish_reason == "length":
            return ProviderResult.failure(
                PROVIDER,
                "malformed_output",
                f"answer cut off at {tokens.completion} tokens (finish_reason=length)",
                **common,
            )
        try:
            answer = json.loads(content)
        except (json.JSONDecodeError, TypeError) as exc:
            return ProviderResult.failure(
                PROVIDER,
                "malformed_output",
                f"answer is not JSON ({exc}): {content[:200]!r}",
                **common,
            )
        try:
            return parse_answer(answer, model=model, tokens=tokens, cost_usd=common["cost_usd"])
        except _Failure as failure:
            return ProviderResult.failure(PROVIDER, failure.reason, failure.detail, **common)


def parse_answer(
    answer: Any, *, model: str, tokens: TokenUsage | None = None, cost_usd: float | None = 0.0
) -> ProviderResult:
    """Validate a decoded answer (see :data:`ANALYSIS_SCHEMA`) into a result.

    The top level must be an object with the schema's keys (else ``malformed_output``).
    Below it the parser is forgiving and records each correction in
    ``data["warnings"]``: ratings outside 1-10 are clamped, unknown enum values become
    ``other`` (damage, defects, document category) or None (view), entries without a
    name are dropped, RPO codes that are not 3 letters/digits are dropped.
    """
    if not isinstance(answer, dict):
        raise _Failure("malformed_output", f"answer is {type(answer).__name__}, not an object")
    missing = [k for k in ("view", "components", "paint", "document") if k not in answer]
    if missing:
        raise _Failure("malformed_output", f"answer lacks {', '.join(missing)}")
    warnings: list[str] = []

    view = answer.get("view")
    if view not in VIEWS:
        warnings.append(f"unknown view {view!r}")
        view = None

    tags: list[ImageTag] = []
    for item in _list(answer.get("tags"), "tags", warnings):
        name = _text(item.get("name"))
        if not name:
            warnings.append("tag without a name dropped")
            continue
        tag_type = item.get("type")
        if tag_type not in _TAG_TYPES_FOR_MODEL:
            warnings.append(f"tag {name!r}: unknown type {tag_type!r} -> custom")
            tag_type = "custom"
        tags.append(
            ImageTag(
                name,
                tag_type,
                _confidence(item.get("confidence"), warnings),
                ai_detection_data={"source": PROVIDER, "model": model},
            )
        )

    components: list[ComponentCondition] = []
    for item in _list(answer.get("components"), "components", warnings):
        name = _text(item.get("name"))
        if not name:
            warnings.append("component without a name dropped")
            continue
        components.append(
            ComponentCondition(
                component_name=name,
                condition_rating=_rating(item.get("condition"), f"component {name!r}", warnings),
                damage_types=_vocab(item.get("damage_types"), DAMAGE_TYPES, name, warnings),
                needs_attention=bool(item.get("needs_attention")),
                confidence=_confidence(item.get("confidence"), warnings),
                detected_by_model=model,
            )
        )

    paint: list[PaintAssessment] = []
    for item in _list(answer.get("paint"), "paint", warnings):
        name = _text(item.get("panel"))
        if not name:
            warnings.append("paint entry without a panel dropped")
            continue
        original = item.get("appears_original")
        paint.append(
            PaintAssessment(
                panel_name=name,
                paint_quality_score=_rating(item.get("score"), f"panel {name!r}", warnings),
                appears_original=original if isinstance(original, bool) else None,
                defects=_vocab(item.get("defects"), PAINT_DEFECTS, name, warnings),
                confidence=_confidence(item.get("confidence"), warnings),
                assessed_by_model=model,
            )
        )

    doc_raw = answer.get("document")
    document = DocumentInfo()
    if isinstance(doc_raw, dict):
        is_doc = bool(doc_raw.get("is_document"))
        category = doc_raw.get("category")
        if not is_doc:
            category = None
        elif category not in DOCUMENT_CATEGORIES:
            warnings.append(f"unknown document category {category!r} -> other")
            category = "other"
        document = DocumentInfo(is_doc, category)
    else:
        warnings.append("document is not an object")
    if document.is_document and view is None:
        view = "document"

    build_quality = answer.get("build_quality")
    if build_quality is not None:
        build_quality = _rating(build_quality, "build_quality", warnings)

    modifications = [m for m in (_text(x) for x in _list_of_any(answer.get("modifications"))) if m]
    vin_plate = _serial(answer.get("vin_from_plate"), "vin_from_plate", warnings)
    spid = _spid(answer.get("spid"), warnings)

    data: dict[str, Any] = {
        "summary": _text(answer.get("summary"))[:500],
        "warnings": warnings,
    }
    if vin_plate is not None:
        data["vin_from_plate_valid"] = is_valid_vin(vin_plate)
    return ProviderResult(
        provider=PROVIDER,
        ok=True,
        data=data,
        tags=tags,
        components=components,
        paint=paint,
        spid=spid,
        document=document,
        view=view,
        build_quality=build_quality,
        modifications=modifications,
        vin_from_plate=vin_plate,
        model=model,
        tokens=tokens or TokenUsage(),
        cost_usd=cost_usd,
    )


# ----------------------------------------------------------------------- helpers


def _error_message(exc: openai.APIStatusError) -> str:
    """The server's error message (``{"error": {"message": ...}}``) or the reason phrase."""
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    return str(exc.message)[:300]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, ``Retry-After``) or None."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _list_of_any(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _list(value: Any, what: str, warnings: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        warnings.append(f"{what} is not a list")
        return []
    items = [v for v in value if isinstance(v, dict)]
    if len(items) != len(value):
        warnings.append(f"{what}: {len(value) - len(items)} non-object entries dropped")
    return items


def _rating(value: Any, what: str, warnings: list[str]) -> int:
    """A 1-10 integer rating (clamped; 5 when missing or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        warnings.append(f"{what}: rating {value!r} is not a number -> 5")
        return 5
    rating = round(value)
    if not 1 <= rating <= 10:
        warnings.append(f"{what}: rating {value!r} clamped to 1-10")
    return int(clamp(rating, 1, 10))


def _confidence(value: Any, warnings: list[str]) -> float:
    """A 0-100 confidence (a 0-1 fraction is scaled up; 50 when missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 50.0
    conf = float(value)
    if 0 < conf <= 1 and not float(conf).is_integer():
        conf *= 100
    if not 0 <= conf <= 100:
        warnings.append(f"confidence {value!r} clamped to 0-100")
    return clamp(conf, 0.0, 100.0)


def _vocab(value: Any, allowed: tuple[str, ...], what: str, warnings: list[str]) -> list[str]:
    """Entries of ``allowed`` (unknown ones become ``other``), deduplicated, in order."""
    out: list[str] = []
    for raw in _list_of_any(value):
        word = _text(raw).lower().replace(" ", "_").replace("-", "_")
        if not word:
            continue
        if word not in allowed:
            warnings.append(f"{what}: unknown value {raw!r} -> other")
            word = "other"
        if word not in out:
            out.append(word)
    return out


def _code(value: Any) -> str | None:
    """An upper-cased code without inner spaces, or None."""
    text = _text(value).upper()
    return re.sub(r"\s+", "", text) or None


def _serial(value: Any, what: str, warnings: list[str]) -> str | None:
    """A VIN or pre-1981 serial (5-17 letters/digits), or None."""
    code = _code(value)
    if code is None:
        return None
    code = code.replace("-", "")
    if not _SERIAL_RE.match(code):
        warnings.append(f"{what}: {value!r} does not look like a VIN or serial")
        return None
    return code


def _spid(value: Any, warnings: list[str]) -> SpidData | None:
    """The SPID sheet, or None when the answer has none (or an empty one)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        warnings.append("spid is not an object")
        return None
    rpo: list[str] = []
    for raw in _list_of_any(value.get("rpo_codes")):
        code = _code(raw)
        if code is None:
            continue
        if not _RPO_RE.match(code):
            warnings.append(f"spid: RPO code {raw!r} dropped (not 3 letters/digits)")
            continue
        if code not in rpo:
            rpo.append(code)
    paint_codes = [
        c for c in (_text(p).upper() for p in _list_of_any(value.get("paint_codes"))) if c
    ]
    spid = SpidData(
        vin=_serial(value.get("vin"), "spid.vin", warnings),
        model_code=_code(value.get("model_code")),
        build_date=_text(value.get("build_date")) or None,
        paint_codes=paint_codes,
        rpo_codes=rpo,
        engine_code=_code(value.get("engine_code")),
        transmission_code=_code(value.get("transmission_code")),
        axle_code=_code(value.get("axle_code")),
        raw=dict(value),
    )
    if not (spid.vin or spid.model_code or spid.rpo_codes or spid.paint_codes):
        return None
    return spid
