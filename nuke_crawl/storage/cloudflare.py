"""Cloudflare Images as an image store (``IMAGES_STORE = "cloudflare-images://<account_id>"``).

:class:`CloudflareImagesStore` uploads verified images with Cloudflare's documented API
(``POST {api}/accounts/{account_id}/images/v1``, multipart ``file`` with a custom ``id``
and ``metadata``), reads stored copies back (``GET .../images/v1/{id}/blob``) and checks
the configuration before a run (:meth:`CloudflareImagesStore.probe`). The image id is the
deterministic path the other stores use (``<vehicle_id>/<sha1(source URL)>.<ext>``);
Cloudflare accepts ``/`` in custom ids, and the id is percent-encoded in API paths.

Every method blocks (urllib3): call them from a thread, never on the reactor. One store is
shared by all threads: the rate cap, the concurrency cap and a ``Retry-After`` pause are
enforced across them.

Settings (defaults):

- ``IMAGES_STORE``: ``cloudflare-images://<account_id>``.
- ``CF_IMAGES_TOKEN``: the API token, read from the **environment only** (a setting of
  that name is refused, so it cannot land in a settings file or a command line). It is
  never logged and appears in no ``repr`` or error message.
- ``CF_IMAGES_ACCOUNT_HASH`` (required; setting or environment): the account hash of
  delivery URLs ``https://imagedelivery.net/<hash>/<id>/<variant>``.
- ``CF_IMAGES_VARIANT`` (``"public"``): the variant whose URL becomes ``image_url``.
- ``CF_IMAGES_API_URL`` (``"https://api.cloudflare.com/client/v4"``).
- ``CF_IMAGES_RATE_LIMIT`` (1200) requests per ``CF_IMAGES_RATE_PERIOD`` (300.0 s): a
  sliding-window cap on all API requests of this process (Cloudflare documents 1,200
  requests per 5 minutes per user; several processes sharing one token need a share each).
- ``CF_IMAGES_CONCURRENCY`` (8): API requests in flight at once.
- ``CF_IMAGES_TIMEOUT`` (30.0 s): connect and read timeout of each request.
- ``CF_IMAGES_RETRY_TIMES`` (4): retries of a 429, a 5xx or a connection error.
- ``NUKE_BACKOFF_BASE`` (1.0 s), ``NUKE_BACKOFF_MAX`` (60.0 s): retry *n* waits
  ``base * 2 ** (n - 1)``, at most ``max`` (the backoff middleware's settings);
  ``NUKE_RETRY_AFTER_MAX`` (300.0 s) caps a ``Retry-After`` (parsed by
  :func:`nuke_crawl.middlewares.backoff.parse_retry_after`), which pauses every thread.

Errors: :class:`CloudflareImagesError` carries ``reason`` and ``detail`` like the
pipeline's ``ImageFailed``, plus the HTTP ``status`` and the API's first error ``code``
and ``api_message``. Reasons: ``storage_rejected`` (the API refused this image: a 4xx
other than 401/403/408/409/429; permanent), ``storage`` (retries exhausted, a 401/403
mid-run, an unreadable answer; transient), ``missing_file`` (read: no such image) and
``storage_config`` (settings or :meth:`probe`: the run cannot start).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3

from nuke_crawl import settings as defaults
from nuke_crawl.middlewares.backoff import parse_retry_after
from nuke_crawl.storage import ImageStore, StoreError

logger = logging.getLogger(__name__)

SCHEME = "cloudflare-images"
DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"
DELIVERY_BASE = "https://imagedelivery.net"
#: Cloudflare's limit on an image's ``metadata`` (JSON) in bytes.
METADATA_MAX_BYTES = 1024
#: Cloudflare's limit on a custom id's length.
ID_MAX_CHARS = 1024

_TOKEN_OK = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: a header value
_ACCOUNT_OK = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HASH_OK = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VARIANT_OK = re.compile(r"[A-Za-z0-9_-]{1,99}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
_TRANSIENT_ERRORS = (urllib3.exceptions.HTTPError, OSError)

__all__ = [
    "SCHEME",
    "CloudflareImagesConfig",
    "CloudflareImagesError",
    "CloudflareImagesStore",
    "RateLimiter",
    "UploadResult",
]


class CloudflareImagesError(StoreError):
    """A Cloudflare Images failure: ``reason`` (see the module docstring) and ``detail``,
    with the HTTP ``status`` and the API's first error ``code`` and ``api_message``."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        status: int | None = None,
        code: int | None = None,
        api_message: str | None = None,
    ) -> None:
        super().__init__(reason, detail)
        self.status = status
        self.code = code
        self.api_message = api_message

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_error,
            (self.reason, self.detail, self.status, self.code, self.api_message),
        )


def _rebuild_error(
    reason: str, detail: str, status: int | None, code: int | None, api_message: str | None
) -> CloudflareImagesError:
    return CloudflareImagesError(reason, detail, status=status, code=code, api_message=api_message)


@dataclass(frozen=True)
class CloudflareImagesConfig:
    """Validated settings of a :class:`CloudflareImagesStore` (the token is never shown)."""

    account_id: str
    token: str = field(repr=False)
    account_hash: str
    variant: str = "public"
    api_url: str = DEFAULT_API_URL
    rate_limit: int = 1200
    rate_period: float = 300.0
    concurrency: int = 8
    timeout: float = 30.0
    retry_times: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 300.0

    def __post_init__(self) -> None:
        if not _ACCOUNT_OK.fullmatch(self.account_id):
            raise CloudflareImagesError(
                "storage_config",
                f"IMAGES_STORE: expected {SCHEME}://<account_id> (letters, digits, - or _), "
                f"got account id {self.account_id!r}",
            )
        if not self.token:
            raise CloudflareImagesError(
                "storage_config", "CF_IMAGES_TOKEN is not set in the environment"
            )
        if not _TOKEN_OK.fullmatch(self.token):
            raise CloudflareImagesError(
                "storage_config",
                "CF_IMAGES_TOKEN has spaces or characters that cannot go in a header",
            )
        if not _HASH_OK.fullmatch(self.account_hash or ""):
            raise CloudflareImagesError(
                "storage_config",
                "CF_IMAGES_ACCOUNT_HASH must be set to the account hash of delivery URLs "
                f"(letters, digits, - or _), got {self.account_hash!r}",
            )
        if not _VARIANT_OK.fullmatch(self.variant):
            raise CloudflareImagesError(
                "storage_config", f"CF_IMAGES_VARIANT: {self.variant!r} is not a variant name"
            )
        parts = urlsplit(self.api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CloudflareImagesError(
                "storage_config", f"CF_IMAGES_API_URL: {self.api_url!r} is not an http(s) URL"
            )
        for name, value in (
            ("CF_IMAGES_RATE_LIMIT", self.rate_limit),
            ("CF_IMAGES_CONCURRENCY", self.concurrency),
        ):
            if value < 1:
                raise CloudflareImagesError("storage_config", f"{name} must be at least 1")
        for name, number in (
            ("CF_IMAGES_RATE_PERIOD", self.rate_period),
            ("CF_IMAGES_TIMEOUT", self.timeout),
        ):
            if not number > 0:
                raise CloudflareImagesError("storage_config", f"{name} must be positive")
        if (
            self.retry_times < 0
            or min(self.backoff_base, self.backoff_max, self.retry_after_max) < 0
        ):
            raise CloudflareImagesError(
                "storage_config",
                "CF_IMAGES_RETRY_TIMES, NUKE_BACKOFF_BASE, NUKE_BACKOFF_MAX and "
                "NUKE_RETRY_AFTER_MAX must not be negative",
            )

    @classmethod
    def from_settings(
        cls, uri: str, settings: Any, environ: Mapping[str, str] | None = None
    ) -> CloudflareImagesConfig:
        """Build from ``IMAGES_STORE``'s ``uri``, Scrapy ``settings`` and the environment."""
        env = os.environ if environ is None else environ
        parts = urlsplit(uri)
        if parts.scheme != SCHEME or parts.path.strip("/") or parts.query:
            raise CloudflareImagesError(
                "storage_config", f"IMAGES_STORE: expected {SCHEME}://<account_id>, got {uri!r}"
            )
        if settings.get("CF_IMAGES_TOKEN"):
            raise CloudflareImagesError(
                "storage_config",
                "CF_IMAGES_TOKEN is read from the environment only; remove it from the "
                "settings (a secret must not sit in a settings file or a command line)",
            )

        def text(name: str, default: str) -> str:
            return str(settings.get(name) or default).strip()

        try:
            return cls(
                account_id=parts.netloc,
                token=env.get("CF_IMAGES_TOKEN", "").strip(),
                account_hash=text("CF_IMAGES_ACCOUNT_HASH", env.get("CF_IMAGES_ACCOUNT_HASH", "")),
                variant=text("CF_IMAGES_VARIANT", defaults.CF_IMAGES_VARIANT),
                api_url=text("CF_IMAGES_API_URL", defaults.CF_IMAGES_API_URL).rstrip("/"),
                rate_limit=settings.getint("CF_IMAGES_RATE_LIMIT", defaults.CF_IMAGES_RATE_LIMIT),
                rate_period=settings.getfloat(
                    "CF_IMAGES_RATE_PERIOD", defaults.CF_IMAGES_RATE_PERIOD
                ),
                concurrency=settings.getint(
                    "CF_IMAGES_CONCURRENCY", defaults.CF_IMAGES_CONCURRENCY
                ),
                timeout=settings.getfloat("CF_IMAGES_TIMEOUT", defaults.CF_IMAGES_TIMEOUT),
                retry_times=settings.getint(
                    "CF_IMAGES_RETRY_TIMES", defaults.CF_IMAGES_RETRY_TIMES
                ),
                backoff_base=settings.getfloat("NUKE_BACKOFF_BASE", defaults.NUKE_BACKOFF_BASE),
                backoff_max=settings.getfloat("NUKE_BACKOFF_MAX", defaults.NUKE_BACKOFF_MAX),
                retry_after_max=settings.getfloat(
                    "NUKE_RETRY_AFTER_MAX", defaults.NUKE_RETRY_AFTER_MAX
                ),
            )
        except ValueError as exc:  # a setting that is not a number
            raise CloudflareImagesError(
                "storage_config", f"Cloudflare Images settings: {exc}"
            ) from None


@dataclass(frozen=True)
class UploadResult:
    """A stored image: its Cloudflare ``image_id``, the delivery ``url`` of the configured
    variant, every variant URL the API listed, and whether this call ``uploaded`` it
    (False: the id already existed and was left as it was)."""

    image_id: str
    url: str
    variants: tuple[str, ...]
    uploaded: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)


class RateLimiter:
    """At most ``limit`` acquisitions in any ``period`` seconds (a sliding window),
    across threads; :meth:`pause` holds everyone back until a given time."""

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting, all threads together

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.period:
                    self._sent.popleft()
                wait = self._paused_until - now
                if wait <= 0 and len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                if wait <= 0:
                    wait = self._sent[0] + self.period - now
            wait = max(wait, 0.001)
            self.waited += wait
            self._sleep(wait)


@dataclass
class _Answer:
    status: int
    headers: Mapping[str, str]  # urllib3's HTTPHeaderDict: names are case-insensitive
    data: bytes

    def json(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.data)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None


class CloudflareImagesStore(ImageStore):
    """Cloudflare Images behind :class:`~nuke_crawl.storage.ImageStore` (blocking; call
    from threads); registered in :data:`~nuke_crawl.storage.STORE_SCHEMES` as
    ``cloudflare-images``.

    ``write``/``upload`` stores an image once with its metadata and returns the variant
    URLs Cloudflare made (the pipeline makes no variant of its own:
    :attr:`local_variants` is False), ``persist`` uploads without metadata, ``read``
    returns a stored copy's bytes, ``delete`` removes one, ``probe`` checks token,
    account, variant and account hash (read-only: it uploads nothing), ``public_url``
    builds a delivery URL. Counters for a run's stats are in :attr:`counts`
    (``uploaded``, ``existing``, ``retries``, ``rate_limited``; :meth:`run_stats`).
    """

    scheme = SCHEME
    local_variants = False

    def __init__(
        self,
        config: CloudflareImagesConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._limiter = RateLimiter(config.rate_limit, config.rate_period, sleep=sleep)
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._http = urllib3.PoolManager(
            num_pools=4,
            maxsize=config.concurrency,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=config.timeout, read=config.timeout),
        )
        self._base = f"{config.api_url}/accounts/{quote(config.account_id, safe='')}/images"
        self._counts_lock = threading.Lock()
        self.counts: dict[str, int] = {
            "uploaded": 0,
            "existing": 0,
            "retries": 0,
            "rate_limited": 0,
        }
        self.threads = config.concurrency  # uploads wait for the rate cap: own threads

    @classmethod
    def from_settings(
        cls, uri: str, settings: Any, environ: Mapping[str, str] | None = None
    ) -> CloudflareImagesStore:
        return cls(CloudflareImagesConfig.from_settings(uri, settings, environ))

    def __repr__(self) -> str:
        return (
            f"<CloudflareImagesStore account={self.config.account_id} "
            f"variant={self.config.variant} api={self.config.api_url}>"
        )

    def close(self) -> None:
        self._http.clear()

    # -- identifiers and URLs -------------------------------------------------------

    @staticmethod
    def image_id(path: str) -> str:
        """The Cloudflare custom id of a store path (the path itself, validated)."""
        bad = (
            not path
            or len(path) > ID_MAX_CHARS
            or bool(_UUID.fullmatch(path))
            or path.startswith("/")
            or any(ch in path for ch in "?#\\")
            or not path.isprintable()
        )
        if bad:
            raise CloudflareImagesError(
                "storage_rejected",
                f"{path[:100]!r} cannot be a Cloudflare Images custom id (1..{ID_MAX_CHARS} "
                "printable characters without ? # or \\, not starting with /, not a UUID)",
            )
        return path

    def public_url(self, path: str, variant: str | None = None) -> str:
        """``https://imagedelivery.net/<hash>/<id>/<variant>`` (the configured variant)."""
        image_id = quote(self.image_id(path), safe="/")
        return (
            f"{DELIVERY_BASE}/{self.config.account_hash}/{image_id}/"
            f"{variant or self.config.variant}"
        )

    def _image_url(self, image_id: str, suffix: str = "") -> str:
        return f"{self._base}/v1/{quote(image_id, safe='')}{suffix}"

    # -- the interface --------------------------------------------------------------

    def write(
        self,
        path: str,
        data: bytes,
        content_type: str,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Upload ``data`` under ``path`` with ``metadata`` (see :meth:`upload`); return
        Cloudflare's variants as ``{name: {"url": delivery URL}}``."""
        result = self.upload(path, data, content_type, metadata=metadata)
        return {url.rstrip("/").rsplit("/", 1)[-1]: {"url": url} for url in result.variants}

    def run_stats(self) -> dict[str, int]:
        with self._counts_lock:
            return {f"cloudflare/{key}": value for key, value in self.counts.items()}

    def upload(
        self,
        path: str,
        data: bytes,
        content_type: str,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> UploadResult:
        """Upload ``data`` with the custom id ``path``, unless that id already exists.

        ``metadata`` (e.g. ``vehicle_id``, ``organization_id``, ``source_url``) is sent as
        the image's JSON metadata with ``sha256`` added; a ``source_url`` that would take
        it over Cloudflare's 1,024 bytes is shortened (``...`` marks the cut). An id that
        already exists is success: it is fetched (to confirm it and get its variants) and
        never overwritten. Raises :class:`CloudflareImagesError`.
        """
        image_id = self.image_id(path)
        meta = _metadata(metadata, data)
        filename = image_id.rsplit("/", 1)[-1]
        fields: dict[str, Any] = {
            "file": (filename, data, content_type or "application/octet-stream"),
            "id": image_id,
            "metadata": json.dumps(meta, separators=(",", ":"), sort_keys=True),
            "requireSignedURLs": "false",
        }
        body, multipart_type = urllib3.encode_multipart_formdata(fields)
        answer = self._request(
            "POST",
            f"{self._base}/v1",
            body=body,
            content_type=multipart_type,
            what=f"uploading {image_id}",
        )
        if answer.status == 409 or _first_error(answer)[0] == 5409:
            existing = self._details(image_id)
            if existing is None:
                raise CloudflareImagesError(
                    "storage",
                    f"uploading {image_id}: HTTP 409 (the id exists) but fetching it found nothing",
                    status=409,
                )
            self._count("existing")
            logger.debug("Cloudflare Images already has %s: not uploaded again", image_id)
            return self._result(image_id, existing, uploaded=False)
        result = self._success(answer, f"uploading {image_id}")
        self._count("uploaded")
        return self._result(image_id, result, uploaded=True)

    def read(self, path: str) -> bytes:
        """The stored image's original bytes (``GET .../images/v1/{id}/blob``)."""
        image_id = self.image_id(path)
        answer = self._request(
            "GET", self._image_url(image_id, "/blob"), what=f"reading {image_id}"
        )
        if answer.status == 404:
            raise CloudflareImagesError(
                "missing_file",
                f"Cloudflare Images has no {image_id}",
                status=404,
                **_error_fields(answer),
            )
        if answer.status != 200:
            self._success(answer, f"reading {image_id}")  # raises with the API's error
        return answer.data

    def delete(self, path: str) -> None:
        """Remove the image (``DELETE .../images/v1/{id}``); an absent one is no error."""
        image_id = self.image_id(path)
        answer = self._request("DELETE", self._image_url(image_id), what=f"deleting {image_id}")
        if answer.status != 404:
            self._success(answer, f"deleting {image_id}")

    def exists(self, path: str) -> bool:
        return self._details(self.image_id(path)) is not None

    def probe(self) -> None:
        """Check token, account and variant with two cheap requests; raise one clear
        :class:`CloudflareImagesError` (``storage_config``) when they are wrong."""
        try:
            self._probe()
        except CloudflareImagesError as exc:
            if exc.reason == "storage_config":
                raise
            raise CloudflareImagesError(
                "storage_config",
                f"Cloudflare Images ({self.config.api_url}) cannot be used: {exc.detail}",
                status=exc.status,
                code=exc.code,
                api_message=exc.api_message,
            ) from None

    def _probe(self) -> None:
        answer = self._request(
            "GET", f"{self._base}/v1/variants", what="checking the store", retry_times=1
        )
        where = f"Cloudflare Images ({self.config.api_url}, account {self.config.account_id})"
        code, message = _first_error(answer)
        api = f" (API error {code}: {message})" if code is not None or message else ""
        if answer.status in (401, 403):
            raise CloudflareImagesError(
                "storage_config",
                f"{where} refused the token with HTTP {answer.status}{api}: check that "
                "CF_IMAGES_TOKEN is valid, has Images edit permission, and belongs to the "
                "account in IMAGES_STORE",
                status=answer.status,
                code=code,
                api_message=message,
            )
        if answer.status == 404:
            raise CloudflareImagesError(
                "storage_config",
                f"{where} answered HTTP 404{api}: check the account id in IMAGES_STORE and "
                "CF_IMAGES_API_URL",
                status=404,
                code=code,
                api_message=message,
            )
        try:
            result = self._success(answer, "checking the store")
        except CloudflareImagesError as exc:
            raise _config_error(where, exc) from None
        variants = result.get("variants") if isinstance(result, dict) else None
        if isinstance(variants, dict) and self.config.variant not in variants:
            names = ", ".join(sorted(variants)) or "none"
            raise CloudflareImagesError(
                "storage_config",
                f"{where} has no variant {self.config.variant!r} (CF_IMAGES_VARIANT); "
                f"its variants: {names}",
            )
        self._check_hash()

    def _check_hash(self) -> None:
        """Compare CF_IMAGES_ACCOUNT_HASH with the delivery URLs of a listed image."""
        answer = self._request(
            "GET", f"{self._base}/v2?per_page=10", what="checking the store", retry_times=1
        )
        try:
            result = self._success(answer, "listing images")
        except CloudflareImagesError as exc:
            raise _config_error("Cloudflare Images", exc) from None
        images = result.get("images") if isinstance(result, dict) else None
        for image in images or []:
            for url in image.get("variants") or [] if isinstance(image, dict) else []:
                parts = urlsplit(str(url)).path.strip("/").split("/")
                if parts and parts[0] != self.config.account_hash:
                    raise CloudflareImagesError(
                        "storage_config",
                        f"CF_IMAGES_ACCOUNT_HASH {self.config.account_hash!r} does not match "
                        f"the account's delivery URLs (they use {parts[0]!r})",
                    )
                return

    def persist(self, path: str, data: bytes, content_type: str) -> None:
        """Upload without metadata (:meth:`write` is what the pipeline calls)."""
        self.upload(path, data, content_type)

    def sync(self) -> None:
        """Nothing to do: an image is durable once the API answered success."""

    # -- HTTP ---------------------------------------------------------------------------

    def _details(self, image_id: str) -> dict[str, Any] | None:
        answer = self._request("GET", self._image_url(image_id), what=f"checking {image_id}")
        if answer.status == 404:
            return None
        return self._success(answer, f"checking {image_id}")

    def _result(self, image_id: str, result: dict[str, Any], *, uploaded: bool) -> UploadResult:
        raw = result.get("variants")
        variants = tuple(str(v) for v in raw) if isinstance(raw, list) else ()
        meta = result.get("meta")
        return UploadResult(
            image_id=image_id,
            url=self.public_url(image_id),
            variants=variants,
            uploaded=uploaded,
            metadata=meta if isinstance(meta, dict) else {},
        )

    def _success(self, answer: _Answer, what: str) -> dict[str, Any]:
        """The ``result`` of a successful answer, or the error it stands for."""
        body = answer.json()
        if 200 <= answer.status < 300 and body is not None and body.get("success") is True:
            result = body.get("result")
            return result if isinstance(result, dict) else {}
        code, message = _first_error(answer)
        api = f"API error {code}: {message}" if code is not None else (message or "no error")
        detail = f"{what}: HTTP {answer.status}, {api}"
        permanent = 400 <= answer.status < 500 and answer.status not in (401, 403, 408, 429)
        if body is None and 200 <= answer.status < 300:
            detail = f"{what}: HTTP {answer.status} with an answer that is not JSON"
        raise CloudflareImagesError(
            "storage_rejected" if permanent else "storage",
            detail,
            status=answer.status,
            code=code,
            api_message=message,
        )

    def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        body: bytes | None = None,
        content_type: str | None = None,
        retry_times: int | None = None,
    ) -> _Answer:
        """Send one API request with retries; returns the last answer (any status).

        Transient answers (429, 5xx, 408) and connection errors are retried up to
        ``retry_times`` times; when those run out a connection error raises ``storage``.
        """
        headers = {"Authorization": f"Bearer {self.config.token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        limit = self.config.retry_times if retry_times is None else retry_times
        attempt = 0
        while True:
            attempt += 1
            self._limiter.acquire()
            try:
                with self._slots:
                    response = self._http.request(
                        method,
                        url,
                        body=body,
                        headers=headers,
                        redirect=False,
                        preload_content=True,
                    )
            except _TRANSIENT_ERRORS as exc:
                problem = f"{type(exc).__name__}: {_scrub(str(exc), self.config.token)}"
                if attempt > limit:
                    raise CloudflareImagesError(
                        "storage", f"{what}: {problem} (after {attempt} attempts)"
                    ) from None
                delay = self._backoff(attempt)
                logger.debug(
                    "Cloudflare Images %s failed (%s); retry in %.2f s", what, problem, delay
                )
            else:
                answer = _Answer(response.status, response.headers, response.data or b"")
                if answer.status not in _RETRY_STATUSES or attempt > limit:
                    if answer.status in _RETRY_STATUSES:
                        logger.debug(
                            "Cloudflare Images %s: giving up after %d attempts", what, attempt
                        )
                    return answer
                delay = self._backoff(attempt)
                retry_after = parse_retry_after(answer.headers.get("Retry-After"))
                if answer.status == 429:
                    self._count("rate_limited")
                    if retry_after is not None:
                        delay = min(retry_after, self.config.retry_after_max)
                    logger.debug(
                        "Cloudflare Images %s: HTTP 429; every request waits %.2f s", what, delay
                    )
                    # every thread waits (in acquire(), this one included), not just this one
                    self._limiter.pause(delay)
                    self._count("retries")
                    continue
                if answer.status == 503 and retry_after is not None:
                    delay = min(retry_after, self.config.retry_after_max)
                logger.debug(
                    "Cloudflare Images %s: HTTP %d; retry in %.2f s", what, answer.status, delay
                )
            self._count("retries")
            if delay > 0:
                self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.config.backoff_base * 2 ** (attempt - 1), self.config.backoff_max))

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self.counts[key] += 1


def _first_error(answer: _Answer) -> tuple[int | None, str | None]:
    body = answer.json()
    errors = body.get("errors") if body else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("code")
        message = errors[0].get("message")
        return (
            code if isinstance(code, int) else None,
            str(message)[:300] if message is not None else None,
        )
    return None, None


def _error_fields(answer: _Answer) -> dict[str, Any]:
    code, message = _first_error(answer)
    return {"code": code, "api_message": message}


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "[token]") if secret else text


def _metadata(metadata: Mapping[str, Any] | None, data: bytes) -> dict[str, Any]:
    """The JSON metadata of an upload, within Cloudflare's 1,024 bytes."""
    meta = {k: v for k, v in (metadata or {}).items() if v is not None}
    meta.setdefault("sha256", hashlib.sha256(data).hexdigest())
    meta = {k: str(v) if not isinstance(v, (int, float, bool)) else v for k, v in meta.items()}

    def size(m: Mapping[str, Any]) -> int:
        return len(json.dumps(m, separators=(",", ":"), sort_keys=True).encode("utf-8"))

    over = size(meta) - METADATA_MAX_BYTES
    if over > 0 and isinstance(meta.get("source_url"), str):
        url = meta["source_url"]
        keep = max(0, len(url) - over - 3)
        meta["source_url"] = url[:keep] + "..."
        while size(meta) > METADATA_MAX_BYTES and keep > 0:  # multi-byte characters
            keep -= 1
            meta["source_url"] = url[:keep] + "..."
    if size(meta) > METADATA_MAX_BYTES:
        raise CloudflareImagesError(
            "storage_rejected", f"image metadata over {METADATA_MAX_BYTES} bytes: {sorted(meta)}"
        )
    return meta


def _config_error(where: str, exc: CloudflareImagesError) -> CloudflareImagesError:
    """``exc`` from the start-up check, as a ``storage_config`` error said of ``where``."""
    return CloudflareImagesError(
        "storage_config",
        f"{where}: {exc.detail}",
        status=exc.status,
        code=exc.code,
        api_message=exc.api_message,
    )
