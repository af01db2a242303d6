"""A Cloudflare Images API server of our own, for tests and benchmarks.

Follows the documented request and response shapes of the Images API v1 under
``/client/v4`` (the base URL to give ``CF_IMAGES_API_URL`` is :attr:`FakeCloudflare.api_url`):

* ``POST /accounts/{account}/images/v1``: multipart ``file`` (plus ``id``, ``metadata``,
  ``requireSignedURLs``). 200 with ``result`` = ``{id, filename, uploaded, meta,
  requireSignedURLs, variants: ["https://imagedelivery.net/<hash>/<id>/<variant>", ...]}``;
  409 with error 5409 when the custom id exists; 415 with error 5415 when the file is not
  JPEG, PNG, GIF, WebP, AVIF or SVG; 400 with error 5400 when ``file`` or the metadata JSON
  is missing or bad; 413 with error 5413 over :attr:`FakeCloudflare.max_bytes`.
* ``GET .../images/v1/{id}``: the details, or 404 with error 5404.
* ``GET .../images/v1/{id}/blob``: the original bytes; ``DELETE .../images/v1/{id}``.
* ``GET .../images/v1/variants`` and ``GET .../images/v2`` (a list, ``per_page``).

Every answer is ``{"success", "errors": [{"code", "message"}], "messages", "result"}``.
A wrong bearer token gets 401 (error 10000, "Authentication error"), an account other
than :attr:`FakeCloudflare.account_id` gets 403 (error 9109). Scripted faults: queue
``(status, headers)`` answers with :meth:`FakeCloudflare.fail_next` (e.g. ``429`` with
``Retry-After``, ``500``, ``502``); :attr:`FakeCloudflare.reject` maps an id to a
``(status, code, message)`` refusal. With :attr:`FakeCloudflare.rate_limit` set to
``(n, seconds)`` the server answers 429 (error 971) past ``n`` requests in any window of
``seconds``, as Cloudflare does. Everything received is in :attr:`FakeCloudflare.log`.

Run standalone for benchmarks: ``python -m tests.cloudflare_server [--latency S]
[--discard]``; the first line on stdout is the API base URL; ``GET /__stats`` (no token)
answers ``{"uploads", "requests", "statuses"}``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import email.parser
import email.policy
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "cf-test-token-5f1c2a9d7e"
ACCOUNT_ID = "023e105f4ecef8ad9ca31a8372d0c353"
ACCOUNT_HASH = "ZWd9g1K7eljCn_KDTu_MWA"
VARIANTS = ("public", "thumbnail")

_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")


def _is_image(data: bytes) -> bool:
    if data.startswith(_SIGNATURES):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return True
    return data.lstrip()[:5].lower() in (b"<svg ", b"<?xml")


@dataclass
class Received:
    method: str
    path: str
    time: float
    status: int
    headers: dict[str, str]


@dataclass
class StoredImage:
    id: str
    filename: str
    data: bytes
    content_type: str
    meta: dict[str, Any]
    uploaded: str


class FakeCloudflare:
    """The server; use as a context manager (``with FakeCloudflare() as cf:``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, keep_data: bool = True) -> None:
        self.account_id = ACCOUNT_ID
        self.account_hash = ACCOUNT_HASH
        self.token = TOKEN
        self.variants = list(VARIANTS)
        self.max_bytes = 10 * 1024 * 1024
        self.keep_data = keep_data  # False (benchmarks): bytes dropped, the blob is empty
        self.images: dict[str, StoredImage] = {}
        self.log: list[Received] = []
        self.uploads = 0  # images created
        self.reject: dict[str, tuple[int, int, str]] = {}
        self.rate_limit: tuple[int, float] | None = None
        # (n, status): once n images were created, every API request answers status
        # (500: the service is down; 401: the token was revoked mid-run)
        self.fail_after: tuple[int, int] | None = None
        self.latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests being answered at once
        self._faults: collections.deque[tuple[int, dict[str, str]]] = collections.deque()
        self._window: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler_class())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def api_url(self) -> str:
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}/client/v4"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests (any endpoint) with ``status``."""
        with self.lock:
            for _ in range(times):
                self._faults.append((status, dict(headers or {})))

    def statuses(self, method: str | None = None) -> list[int]:
        return [r.status for r in self.log if method is None or r.method == method]

    def details(self, image: StoredImage) -> dict[str, Any]:
        return {
            "id": image.id,
            "filename": image.filename,
            "uploaded": image.uploaded,
            "requireSignedURLs": False,
            "meta": image.meta,
            "variants": [
                f"https://imagedelivery.net/{self.account_hash}/{image.id}/{name}"
                for name in self.variants
            ],
        }

    # -- the handler ---------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.latency:
                        time.sleep(fake.latency)
                    status, headers, payload = fake._answer(method, self.path, self.headers, body)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1
                with fake.lock:
                    fake.log.append(
                        Received(
                            method, self.path, time.monotonic(), status, dict(self.headers.items())
                        )
                    )
                self.send_response(status)
                ctype = headers.pop("Content-Type", "application/json")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def _answer(
        self, method: str, raw_path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        def error(
            status: int, code: int, message: str, extra: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
            doc = {
                "success": False,
                "errors": [{"code": code, "message": message}],
                "messages": [],
                "result": None,
            }
            return status, dict(extra or {}), json.dumps(doc).encode()

        def ok(result: Any) -> tuple[int, dict[str, str], bytes]:
            doc = {"success": True, "errors": [], "messages": [], "result": result}
            return 200, {}, json.dumps(doc).encode()

        if raw_path == "/__stats":  # for benchmarks in another process; no auth
            with self.lock:
                stats = {
                    "uploads": self.uploads,
                    "requests": len(self.log),
                    "statuses": dict(collections.Counter(r.status for r in self.log)),
                }
            return 200, {}, json.dumps(stats).encode()
        with self.lock:
            broken = self._broken(error)
        if broken is not None:
            return broken
        if headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, 10000, "Authentication error")
        with self.lock:
            if self.rate_limit is not None:
                limit, period = self.rate_limit
                now = time.monotonic()
                while self._window and self._window[0] <= now - period:
                    self._window.popleft()
                if len(self._window) >= limit:
                    return error(
                        429,
                        971,
                        "Please wait and consider throttling your request speed",
                        {"Retry-After": str(max(1, round(period)))},
                    )
                self._window.append(now)
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            status, extra = fault
            messages = {
                429: (971, "Please wait and consider throttling your request speed"),
                500: (5500, "Internal Server Error"),
            }
            code, message = messages.get(status, (status, f"HTTP {status}"))
            return error(status, code, message, extra)

        parts = urlsplit(raw_path)
        segments = [unquote(s) for s in parts.path.split("/")]
        # "", "client", "v4", "accounts", account, "images", version, [id], [blob]
        if (
            segments[:4] != ["", "client", "v4", "accounts"]
            or len(segments) < 7
            or segments[5] != "images"
        ):
            return error(404, 7003, "Could not route to " + parts.path)
        if segments[4] != self.account_id:
            return error(403, 9109, "Unauthorized to access requested resource")
        version, rest = segments[6], segments[7:]
        if version == "v2" and not rest and method == "GET":
            per_page = int(parse_qs(parts.query).get("per_page", ["1000"])[0])
            if not 10 <= per_page <= 10000:
                return error(400, 5400, "per_page must be between 10 and 10000")
            with self.lock:
                images = [self.details(i) for i in list(self.images.values())[:per_page]]
            return ok({"images": images, "continuation_token": None})
        if version != "v1":
            return error(404, 7003, "Could not route to " + parts.path)
        if not rest and method == "POST":
            return self._upload(headers, body, error, ok)
        if rest == ["variants"] and method == "GET":
            return ok(
                {
                    "variants": {
                        name: {
                            "id": name,
                            "options": {
                                "fit": "scale-down",
                                "metadata": "none",
                                "width": 1366,
                                "height": 768,
                            },
                            "neverRequireSignedURLs": False,
                        }
                        for name in self.variants
                    }
                }
            )
        if not rest:
            return error(405, 10405, "Method not allowed")
        blob = rest[-1] == "blob" and len(rest) >= 2
        image_id = "/".join(rest[:-1] if blob else rest)
        with self.lock:
            image = self.images.get(image_id)
        if image is None:
            return error(404, 5404, "Image not found")
        if method == "GET" and blob:
            return 200, {"Content-Type": image.content_type}, image.data
        if method == "GET":
            return ok(self.details(image))
        if method == "DELETE" and not blob:
            with self.lock:
                self.images.pop(image_id, None)
            return ok({})
        return error(405, 10405, "Method not allowed")

    def _broken(self, error: Any) -> Any:
        """The answer of a service that ``fail_after`` broke, else None (hold the lock)."""
        if self.fail_after is None or self.uploads < self.fail_after[0]:
            return None
        status = self.fail_after[1]
        if status == 401:
            return error(401, 10000, "Authentication error")
        return error(status, 5500, "Internal Server Error")

    def _upload(self, headers: Any, body: bytes, error: Any, ok: Any) -> Any:
        ctype = headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            return error(400, 5400, "Bad request: expected multipart/form-data")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
        )
        fields: dict[str, tuple[bytes, str | None, str]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            payload = payload if isinstance(payload, bytes) else b""
            fields[str(name)] = (payload, part.get_filename(), part.get_content_type())
        if "file" not in fields:
            return error(400, 5400, "Bad request: no file was uploaded")
        data, filename, file_type = fields["file"]
        image_id = fields["id"][0].decode() if "id" in fields else None
        meta: dict[str, Any] = {}
        if "metadata" in fields:
            try:
                meta = json.loads(fields["metadata"][0])
            except ValueError:
                return error(400, 5400, "Bad request: metadata is not valid JSON")
            if len(fields["metadata"][0]) > 1024:
                return error(400, 5400, "Bad request: metadata must be at most 1024 bytes")
        if image_id is None:
            image_id = f"{len(self.images):08d}-0000-4000-8000-000000000000"
        if image_id in self.reject:
            status, code, text = self.reject[image_id]
            return error(status, code, text)
        if len(data) > self.max_bytes:
            return error(413, 5413, "Image too large: the maximum size is 10 MB")
        if not _is_image(data):
            return error(
                415,
                5415,
                "Images must be uploaded as a file (supported formats: "
                "JPEG, PNG, GIF, WebP, AVIF, SVG)",
            )
        with self.lock:
            # checked again where the image is created: two uploads answered at once
            # must not both get in under the last place before fail_after
            broken = self._broken(error)
            if broken is not None:
                return broken
            if image_id in self.images:
                return error(409, 5409, "Resource already exists")
            image = StoredImage(
                image_id,
                filename or "",
                data if self.keep_data else b"",
                file_type,
                meta,
                datetime.now(UTC).isoformat(timespec="milliseconds"),
            )
            self.images[image_id] = image
            self.uploads += 1
        return ok(self.details(image))


def main() -> None:
    parser = argparse.ArgumentParser(description="A local Cloudflare Images API server")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument(
        "--discard", action="store_true", help="keep no image bytes (benchmarks: memory stays flat)"
    )
    args = parser.parse_args()
    with FakeCloudflare(keep_data=not args.discard) as cf:
        cf.latency = args.latency
        print(cf.api_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
