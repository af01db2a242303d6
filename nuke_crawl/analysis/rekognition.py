"""Object labels from Amazon Rekognition ``DetectLabels``, as ``image_tags``.

The boto3 call blocks, so it runs in a worker thread (``asyncio.to_thread``); one client
is shared by all threads (boto3 clients are thread-safe, sessions are not, so the
client is built once under a lock).

Configuration (read when the provider is built, all optional):

* region: the ``region`` argument, else ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the
  profile's region, else ``us-east-1``;
* endpoint: the ``endpoint_url`` argument, else ``AWS_ENDPOINT_URL_REKOGNITION``, else
  ``AWS_ENDPOINT_URL`` (for moto, LocalStack or a VPC endpoint);
* credentials: botocore's usual chain (environment, profile, SSO, instance role).
  :meth:`RekognitionProvider.configured` is True only when that chain finds some. Set
  ``AWS_EC2_METADATA_DISABLED=true`` off EC2 to skip the slow instance-metadata probe.

Labels become tags: one tag per instance (with its bounding box in percent) or, for a
label without instances, one tag without a box. ``tag_type`` is ``part``, ``tool``,
``brand`` or ``process`` for the labels in :data:`LABEL_TAG_TYPES`, else ``custom``.
Rekognition accepts JPEG and PNG up to 5 MB; other formats and larger files are
re-encoded as JPEG (at most 4096 px) before sending.

Failure reasons: ``not_configured`` (no credentials), ``auth_failed`` (bad key or
signature), ``permission_denied``, ``rate_limited`` (throttled after botocore's retries),
``server_error``, ``timeout``, ``unreachable``, ``invalid_image``, ``bad_request``,
``error``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config
from PIL import Image

from nuke_crawl import settings as defaults

from .results import ImageTag, ProviderResult

logger = logging.getLogger(__name__)

PROVIDER = "rekognition"
DEFAULT_REGION = "us-east-1"
MAX_BYTES = 5 * 1024 * 1024
"""Largest image ``DetectLabels`` takes as bytes."""
MAX_SIDE = 4096
"""Longest side of a re-encoded image."""
PRICE_PER_IMAGE_USD = 0.001
"""Estimated list price of one ``DetectLabels`` image (first million per month)."""

LABEL_TAG_TYPES: dict[str, str] = {
    # parts
    **{
        name: "part"
        for name in (
            "Wheel",
            "Alloy Wheel",
            "Tire",
            "Spoke",
            "Rim",
            "Hubcap",
            "Bumper",
            "Headlight",
            "Tail Light",
            "Light",
            "Windshield",
            "Window",
            "Mirror",
            "Car Mirror",
            "Steering Wheel",
            "Engine",
            "Motor",
            "Car Engine",
            "Grille",
            "Hood",
            "Car Seat",
            "Seat",
            "Dashboard",
            "Speedometer",
            "Gauge",
            "Tachometer",
            "Gear Shift",
            "Seat Belt",
            "Door",
            "Car Door",
            "Windshield Wiper",
            "Fender",
            "Trunk",
            "License Plate",
            "Exhaust",
            "Muffler",
            "Brake",
            "Disc Brake",
            "Radiator",
            "Spark Plug",
            "Battery",
            "Axle",
            "Suspension",
            "Carburetor",
            "Antenna",
            "Spoiler",
            "Roof Rack",
            "Emblem",
            "Chrome",
            "Upholstery",
            "Console",
            "Odometer",
        )
    },
    # tools
    **{
        name: "tool"
        for name in (
            "Tool",
            "Wrench",
            "Screwdriver",
            "Hammer",
            "Drill",
            "Power Drill",
            "Pliers",
            "Jack",
            "Car Jack",
            "Toolbox",
            "Grinder",
            "Spray Gun",
            "Socket",
            "Clamp",
        )
    },
    # brand marks
    **{name: "brand" for name in ("Logo", "Trademark", "Symbol", "Badge")},
    # work in progress
    **{
        name: "process"
        for name in (
            "Welding",
            "Painting",
            "Car Wash",
            "Garage",
            "Auto Repair",
            "Mechanic",
            "Repair",
            "Workshop",
        )
    },
}
"""Rekognition label name -> ``tag_type`` (everything else is ``custom``)."""

_NO_CREDENTIALS = (
    "AWS credentials not found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "AWS_PROFILE, or use an instance role)"
)


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class RekognitionProvider:
    """Tags from Amazon Rekognition ``DetectLabels`` (see the module docstring).

    ``min_confidence`` (0-100) and ``max_labels`` go to the API; ``timeout`` bounds
    connect and read; ``max_attempts`` is botocore's retry budget (standard mode, which
    backs off on throttling and 5xx).
    """

    name = PROVIDER
    remote = True
    optional = True  # labels only: an image another provider analysed is not failed
    in_progress_factor = 1
    missing = "AWS credentials not found"

    def __init__(
        self,
        region: str | None = None,
        endpoint_url: str | None = None,
        min_confidence: float = 70,
        max_labels: int = 30,
        *,
        timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        self._session = boto3.session.Session()
        self.region = (
            region
            or _env("AWS_REGION", "AWS_DEFAULT_REGION")
            or self._session.region_name
            or DEFAULT_REGION
        )
        self.endpoint_url = endpoint_url or _env("AWS_ENDPOINT_URL_REKOGNITION", "AWS_ENDPOINT_URL")
        self.min_confidence = float(min_confidence)
        self.max_labels = int(max_labels)
        self.timeout = float(timeout)
        self.max_attempts = int(max_attempts)
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> RekognitionProvider:
        """From ``NUKE_REKOGNITION_MIN_CONFIDENCE`` (70) and
        ``NUKE_REKOGNITION_MAX_LABELS`` (30); region, endpoint and credentials as boto3
        finds them (``AWS_*`` environment)."""
        return cls(
            min_confidence=settings.getfloat(
                "NUKE_REKOGNITION_MIN_CONFIDENCE", defaults.NUKE_REKOGNITION_MIN_CONFIDENCE
            ),
            max_labels=settings.getint(
                "NUKE_REKOGNITION_MAX_LABELS", defaults.NUKE_REKOGNITION_MAX_LABELS
            ),
        )

    async def aclose(self) -> None:
        """Nothing to release (boto3 clients need no closing)."""

    def __repr__(self) -> str:
        return f"RekognitionProvider(region={self.region!r}, endpoint_url={self.endpoint_url!r})"

    def configured(self) -> bool:
        """True only when botocore's credential chain finds credentials."""
        try:
            with self._lock:  # sessions are not thread-safe; the answer is cached
                return self._session.get_credentials() is not None
        except botocore.exceptions.BotoCoreError as exc:
            logger.info("AWS credentials unusable: %s", type(exc).__name__)
            return False

    def _get_client(self, *, attempts: int | None = None, timeout: float | None = None) -> Any:
        """The shared client, or a throw-away one with other retry/timeout settings."""

        def build() -> Any:
            config = Config(
                region_name=self.region,
                connect_timeout=timeout or self.timeout,
                read_timeout=timeout or self.timeout,
                retries={"mode": "standard", "max_attempts": attempts or self.max_attempts},
            )
            return self._session.client(
                "rekognition", endpoint_url=self.endpoint_url, config=config
            )

        if attempts is not None or timeout is not None:
            with self._lock:
                return build()
        with self._lock:
            if self._client is None:
                self._client = build()
            return self._client

    # ------------------------------------------------------------------ preflight

    async def check(self) -> tuple[bool, str]:
        """Preflight: credentials present, endpoint reachable, ``DetectLabels`` allowed.

        Sends one tiny generated image (billed as one image, ~$0.001) with no retries and
        a 10 s timeout. ``(True, "ok: ...")`` or ``(False, "<reason>: <detail>")``.
        """
        if not self.configured():
            return False, f"not_configured: {_NO_CREDENTIALS}"
        probe = _probe_image()

        def call() -> Any:
            client = self._get_client(attempts=1, timeout=10.0)
            return client.detect_labels(Image={"Bytes": probe}, MaxLabels=1)

        try:
            await asyncio.to_thread(call)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            reason, detail = self._classify(exc)
            return False, f"{reason}: {detail}"
        return True, f"ok: DetectLabels answered at {self._where()} ({self.region})"

    def _where(self) -> str:
        return self.endpoint_url or f"rekognition.{self.region}.amazonaws.com"

    # ------------------------------------------------------------------ analysis

    async def analyze(
        self, image: bytes, mime_type: str | None = None, *, context: Any = None
    ) -> ProviderResult:
        """Labels of one image as tags; never raises for AWS, network or image problems."""
        return await asyncio.to_thread(self.analyze_sync, image, mime_type)

    def analyze_sync(self, image: bytes, mime_type: str | None = None) -> ProviderResult:
        """The blocking body of :meth:`analyze` (call it from a worker thread)."""
        started = time.perf_counter()
        if not self.configured():
            return ProviderResult.failure(PROVIDER, "not_configured", _NO_CREDENTIALS)
        try:
            payload, reencoded = _prepare_image(image, mime_type)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return ProviderResult.failure(PROVIDER, "invalid_image", f"{type(exc).__name__}: {exc}")
        try:
            response = self._get_client().detect_labels(
                Image={"Bytes": payload},
                MaxLabels=self.max_labels,
                MinConfidence=self.min_confidence,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            reason, detail = self._classify(exc)
            logger.warning("rekognition analysis failed: %s (%s)", reason, detail)
            attempts = 1
            if isinstance(exc, botocore.exceptions.ClientError):
                attempts += int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
            return ProviderResult.failure(
                PROVIDER, reason, detail, attempts=attempts, elapsed_s=time.perf_counter() - started
            )
        retries = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        labels = response.get("Labels", [])
        return ProviderResult(
            provider=PROVIDER,
            ok=True,
            model=f"rekognition-{response.get('LabelModelVersion', 'unknown')}",
            data={
                "labels": [_label_summary(label) for label in labels],
                "label_model_version": response.get("LabelModelVersion"),
                "reencoded": reencoded,
                "retries": retries,
            },
            tags=labels_to_tags(labels),
            cost_usd=PRICE_PER_IMAGE_USD,
            attempts=1 + retries,
            elapsed_s=time.perf_counter() - started,
        )

    def _classify(self, exc: BaseException) -> tuple[str, str]:
        """``(reason, detail)`` for a botocore exception."""
        exc_mod = botocore.exceptions
        if isinstance(exc, (exc_mod.NoCredentialsError, exc_mod.PartialCredentialsError)):
            return "not_configured", _NO_CREDENTIALS
        if isinstance(exc, (exc_mod.ConnectTimeoutError, exc_mod.ReadTimeoutError)):
            return "timeout", f"no answer from {self._where()} within {self.timeout:g}s"
        if isinstance(exc, exc_mod.EndpointConnectionError):
            return "unreachable", f"cannot connect to {self._where()}"
        if isinstance(exc, exc_mod.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            detail = f"{code}: {err.get('Message', '')}".strip()
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in (
                "UnrecognizedClientException",
                "InvalidSignatureException",
                "InvalidClientTokenId",
                "ExpiredTokenException",
                "SignatureDoesNotMatch",
            ):
                return "auth_failed", detail
            if code in ("AccessDeniedException", "AccessDenied") or status == 403:
                return "permission_denied", detail
            if (
                code
                in (
                    "ThrottlingException",
                    "ProvisionedThroughputExceededException",
                    "LimitExceededException",
                    "TooManyRequestsException",
                )
                or status == 429
            ):
                return "rate_limited", detail
            if code in ("InvalidImageFormatException", "ImageTooLargeException"):
                return "invalid_image", detail
            if code in ("InvalidParameterException", "ValidationException") or status == 400:
                return "bad_request", detail
            if status >= 500 or code in ("InternalServerError", "ServiceUnavailable"):
                return "server_error", detail
            return "error", detail
        return "error", f"{type(exc).__name__}: {exc}"


def labels_to_tags(labels: list[dict[str, Any]]) -> list[ImageTag]:
    """``DetectLabels`` labels as :class:`ImageTag` (one per instance, boxes in percent)."""
    tags: list[ImageTag] = []
    for label in labels:
        name = str(label.get("Name", "")).strip()
        if not name:
            continue
        tag_type = LABEL_TAG_TYPES.get(name, "custom")
        base = {
            "source": PROVIDER,
            "label_confidence": label.get("Confidence"),
            "parents": [p.get("Name") for p in label.get("Parents", [])],
            "categories": [c.get("Name") for c in label.get("Categories", [])],
            "aliases": [a.get("Name") for a in label.get("Aliases", [])],
        }
        instances = [i for i in label.get("Instances", []) if i.get("BoundingBox")]
        if not instances:
            tags.append(
                ImageTag(
                    name, tag_type, float(label.get("Confidence", 0.0)), ai_detection_data=base
                )
            )
            continue
        for index, instance in enumerate(instances):
            box = instance["BoundingBox"]
            tags.append(
                ImageTag(
                    name,
                    tag_type,
                    float(instance.get("Confidence", label.get("Confidence", 0.0))),
                    x=_percent(box.get("Left")),
                    y=_percent(box.get("Top")),
                    width=_percent(box.get("Width")),
                    height=_percent(box.get("Height")),
                    ai_detection_data={**base, "instance": index},
                )
            )
    return tags


def _percent(fraction: Any) -> float | None:
    if fraction is None:
        return None
    return round(max(0.0, min(100.0, float(fraction) * 100.0)), 4)


def _label_summary(label: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": label.get("Name"),
        "confidence": label.get("Confidence"),
        "instances": len(label.get("Instances", [])),
        "parents": [p.get("Name") for p in label.get("Parents", [])],
    }


def _prepare_image(image: bytes, mime_type: str | None) -> tuple[bytes, bool]:
    """Bytes Rekognition accepts (JPEG/PNG <= 5 MB) and whether they were re-encoded."""
    if not image:
        raise ValueError("empty image")
    is_jpeg = image[:3] == b"\xff\xd8\xff"
    is_png = image[:8] == b"\x89PNG\r\n\x1a\n"
    if (is_jpeg or is_png) and len(image) <= MAX_BYTES:
        return image, False
    with Image.open(io.BytesIO(image)) as img:
        img.draft("RGB", (MAX_SIDE, MAX_SIDE))
        rgb = img.convert("RGB")
    if max(rgb.size) > MAX_SIDE:
        rgb.thumbnail((MAX_SIDE, MAX_SIDE))
    for quality in (90, 80, 70, 60):
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=quality)
        if out.tell() <= MAX_BYTES:
            return out.getvalue(), True
    rgb.thumbnail((MAX_SIDE // 2, MAX_SIDE // 2))
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=70)
    return out.getvalue(), True


def _probe_image() -> bytes:
    """A small valid JPEG for the preflight (Rekognition wants >= 80 px per side)."""
    out = io.BytesIO()
    Image.new("RGB", (96, 96), (128, 128, 128)).save(out, "JPEG", quality=70)
    return out.getvalue()
