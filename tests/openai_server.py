"""An OpenAI-compatible HTTP server of our own, for tests and benchmarks.

Serves ``POST /v1/chat/completions`` and ``GET /v1/models/{id}`` on 127.0.0.1 (port 0 by
default) from a :class:`~http.server.ThreadingHTTPServer` in a background thread, so
many slow requests are served at once (one thread per connection).

What a chat request gets is scripted:

* a marker ``scenario=<name>`` anywhere in the request's text wins (tests put it in the
  listing ``title`` they pass as context);
* else the next scenario queued with :meth:`FakeOpenAI.script`;
* else :attr:`FakeOpenAI.default` (``"good"``).

Scenarios: ``good`` (an answer built from :data:`GOOD_ANSWER`), ``spid`` (a GM SPID
sheet, :data:`SPID_ANSWER`), ``rate_limit`` (429 with ``Retry-After`` =
:attr:`FakeOpenAI.retry_after`, default 1), ``server_error`` (500), ``malformed``
(content that is not JSON), ``wrong_shape`` (JSON, but not the schema), ``refusal``
(``message.refusal`` set), ``length`` (cut off, ``finish_reason="length"``), ``slow``
(answers after :attr:`FakeOpenAI.slow_seconds`), ``off_range`` (ratings and enums out of
range, to exercise validation), ``html_json`` (200, ``application/json``, an HTML body: a
proxy's error page), ``nul`` (a good answer whose texts hold ``\u0000``, other control
characters and a lone surrogate, which databases refuse).

Every request first waits :attr:`FakeOpenAI.latency` seconds; with ``failure_rate`` > 0
every ``round(1 / failure_rate)``-th chat request (counted from 1) is answered 500
instead of its scenario, deterministically. A wrong ``Authorization`` key gets 401 and a
model outside :attr:`FakeOpenAI.models` gets 404, as the real API does.

Run standalone for benchmarks: ``python -m tests.openai_server --latency 1
--failure-rate 0.1``; the first line on stdout is the base URL (``.../v1``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

API_KEY = "sk-test-0123456789abcdef"
PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 200

GOOD_ANSWER_JSON = """
{
  "view": "exterior",
  "summary": "Red 1969 Camaro, left front three-quarter view, outdoors.",
  "tags": [
    {"name": "Rally wheel", "type": "part", "confidence": 90},
    {"name": "Chevrolet bowtie", "type": "brand", "confidence": 80}
  ],
  "components": [
    {"name": "front bumper", "condition": 7, "damage_types": ["scratch", "chip"],
     "needs_attention": false, "confidence": 85},
    {"name": "left rocker panel", "condition": 3, "damage_types": ["rust"],
     "needs_attention": true, "confidence": 75}
  ],
  "paint": [
    {"panel": "hood", "appears_original": false, "defects": ["orange_peel"], "score": 6,
     "confidence": 70},
    {"panel": "left front fender", "appears_original": null, "defects": [], "score": 8,
     "confidence": 60}
  ],
  "build_quality": 7,
  "modifications": ["aftermarket wheels", "lowered suspension"],
  "document": {"is_document": false, "category": null},
  "vin_from_plate": null,
  "spid": null
}
"""
"""The fixture every ``good`` answer is built from."""

GOOD_ANSWER: dict[str, Any] = json.loads(GOOD_ANSWER_JSON)

SPID_ANSWER: dict[str, Any] = {
    "view": "document",
    "summary": "Service Parts Identification label inside the glove box door.",
    "tags": [],
    "components": [],
    "paint": [],
    "build_quality": None,
    "modifications": [],
    "document": {"is_document": True, "category": "spid_sheet"},
    "vin_from_plate": "1G1YY2184K5100001",
    "spid": {
        "vin": "1G1YY2184K5100001",
        "model_code": "1YY07",
        "build_date": "1989-03",
        "paint_codes": ["WA8555", "U 41"],
        "rpo_codes": ["L98", "mx0", "G92", "Z51", "AQ9", "FX3", "TOOLONG", "C68"],
        "engine_code": "L98",
        "transmission_code": "MX0",
        "axle_code": "G92",
    },
}
"""A GM SPID sheet as a model would read it (one bad RPO code, lower case, spaces)."""

OFF_RANGE_ANSWER: dict[str, Any] = {
    **copy.deepcopy(GOOD_ANSWER),
    "view": "aerial",
    "components": [
        {
            "name": "hood",
            "condition": 14,
            "damage_types": ["dent", "laser burn"],
            "needs_attention": True,
            "confidence": 0.9,
        },
        {
            "name": "",
            "condition": 5,
            "damage_types": [],
            "needs_attention": False,
            "confidence": 50,
        },
    ],
    "paint": [
        {"panel": "roof", "appears_original": True, "defects": [], "score": 0, "confidence": 120}
    ],
    "document": {"is_document": True, "category": "brochure"},
}
"""Values outside the schema: unknown enums, ratings 14 and 0, a nameless component."""

SELECTORS_ANSWER: dict[str, str] = {
    "year": ".spec-yr",
    "make": ".spec-mk",
    "model": ".spec-md",
    "price": ".amt",
    "mileage": ".odo",
    "images": ".pics img",
    "bogus_key": ".x",
    "vin": "::not a selector",
}
"""CSS selectors as a model would answer a learned-selectors request (``selectors``): one
unknown key and one invalid selector, to be dropped."""

NUL_ANSWER: dict[str, Any] = {
    **copy.deepcopy(GOOD_ANSWER),
    "summary": "Red Camaro\u0000 with a \x01 control character and a lone \ud800 surrogate",
    "tags": [{"name": "Rally\u0000wheel", "type": "part", "confidence": 90}],
    "modifications": ["lowered\u0000"],
}
"""A good answer holding characters PostgreSQL (NUL) and both drivers (a lone surrogate)
refuse."""

HTML_BODY = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
)

SCENARIOS = (
    "good",
    "spid",
    "rate_limit",
    "server_error",
    "malformed",
    "wrong_shape",
    "refusal",
    "length",
    "slow",
    "off_range",
    "selectors",
    "html_json",
    "nul",
)

_MARKER = re.compile(r"scenario=([a-z_]+)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 drops SYNs when many clients connect at once
    # (the client then waits ~1 s to resend): the benchmark opens 10+ at a time
    request_queue_size = 256


class FakeOpenAI:
    """The server; use as a context manager or call :meth:`start`/:meth:`stop`.

    Attributes tests read: :attr:`url` (``http://127.0.0.1:PORT``), :attr:`chat_requests`
    and :attr:`model_requests` (counts), :attr:`failures_served` (500s from
    ``failure_rate``), :attr:`scenarios_served`, :attr:`last_body` (the last chat
    request, decoded), :attr:`bodies`, :attr:`max_in_flight` (peak concurrency seen),
    :attr:`images_seen` (chat requests per image: the sha1 of each ``image_url`` sent).
    """

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        models: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o"),
        latency: float = 0.0,
        failure_rate: float = 0.0,
        retry_after: float = 1.0,
        slow_seconds: float = 3.0,
        default: str = "good",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.models = models
        self.latency = latency
        self.failure_rate = failure_rate
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.default = default
        self.selectors_answer: dict[str, str] = dict(SELECTORS_ANSWER)  # the `selectors` answer
        self._queue: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self.chat_requests = 0
        self.model_requests = 0
        self.failures_served = 0
        self.scenarios_served: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.images_seen: collections.Counter[str] = collections.Counter()
        self.last_body: dict[str, Any] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = _Server((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *scenarios: str) -> None:
        """Queue scenarios for the next chat requests, in order."""
        for name in scenarios:
            if name not in SCENARIOS:
                raise ValueError(f"unknown scenario {name!r}")
        with self._lock:
            self._queue.extend(scenarios)

    def reset(self) -> None:
        """Forget queued scenarios and counts."""
        with self._lock:
            self._queue.clear()
            self.chat_requests = self.model_requests = self.failures_served = 0
            self.scenarios_served.clear()
            self.bodies.clear()
            self.images_seen.clear()
            self.last_body = None
            self.max_in_flight = 0

    # called from handler threads ------------------------------------------------

    def _count_chat(self, body: dict[str, Any]) -> int:
        """Count a chat request (whatever its outcome) and keep its body."""
        images = [hashlib.sha1(url.encode()).hexdigest() for url in _image_urls(body)]
        with self._lock:
            self.chat_requests += 1
            self.images_seen.update(images)
            self.bodies.append(body)
            self.last_body = body
            return self.chat_requests

    def _next_chat(self, body: dict[str, Any], number: int) -> str:
        """The scenario for an authorised chat request numbered ``number``."""
        text = json.dumps(body.get("messages", []))
        marker = _MARKER.search(text)
        with self._lock:
            if marker and marker.group(1) in SCENARIOS:
                scenario = marker.group(1)
            elif self._queue:
                scenario = self._queue.popleft()
            else:
                scenario = self.default
            if self.failure_rate > 0 and number % max(1, round(1 / self.failure_rate)) == 0:
                scenario = "server_error"
                self.failures_served += 1
            self.scenarios_served.append(scenario)
        return scenario

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _image_urls(body: dict[str, Any]) -> list[str]:
    """The ``image_url`` URLs of a chat request's messages."""
    out = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url")
                if isinstance(url, str):
                    out.append(url)
    return out


def _completion(
    model: str, content: str | None, *, refusal: str | None = None, finish_reason: str = "stop"
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _make_handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as real API front ends set: otherwise Nagle holds the body
        # written after the headers until the client's delayed ACK (~40 ms a call)
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            key = auth.removeprefix("Bearer ").strip()
            if key == server.api_key:
                return True
            # like the real API, the message names the key (partly); the provider
            # must not pass it on
            self._send(
                401,
                _error(
                    f"Incorrect API key provided: {key}.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            )
            return False

        def _model_unknown(self, model: str) -> bool:
            if model in server.models:
                return False
            self._send(
                404,
                _error(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
            )
            return True

        def do_GET(self) -> None:
            server._enter()
            try:
                if server.latency:
                    time.sleep(server.latency)
                with server._lock:
                    server.model_requests += 1
                match = re.fullmatch(r"/v1/models/([^/?]+)", self.path.split("?")[0])
                if not match:
                    self._send(404, _error("Not found", "invalid_request_error", None))
                    return
                if not self._authorized() or self._model_unknown(match.group(1)):
                    return
                self._send(
                    200,
                    {
                        "id": match.group(1),
                        "object": "model",
                        "created": 1700000000,
                        "owned_by": "system",
                    },
                )
            finally:
                server._leave()

        def do_POST(self) -> None:
            server._enter()
            try:
                length = int(self.headers.get("Content-Length", "0") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.split("?")[0] != "/v1/chat/completions":
                    self._send(404, _error("Not found", "invalid_request_error", None))
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(
                        400,
                        _error("We could not parse the JSON body.", "invalid_request_error", None),
                    )
                    return
                number = server._count_chat(body)
                if server.latency:
                    time.sleep(server.latency)
                if not self._authorized():
                    return
                model = str(body.get("model", ""))
                if self._model_unknown(model):
                    return
                self._chat(server._next_chat(body, number), model)
            finally:
                server._leave()

        def _chat(self, scenario: str, model: str) -> None:
            if scenario == "rate_limit":
                self._send(
                    429,
                    _error("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
                    {"Retry-After": f"{server.retry_after:g}"},
                )
            elif scenario == "server_error":
                self._send(
                    500,
                    _error(
                        "The server had an error while processing your request.",
                        "server_error",
                        None,
                    ),
                )
            elif scenario == "malformed":
                self._send(200, _completion(model, '{"view": "exterior", "components": ['))
            elif scenario == "wrong_shape":
                self._send(200, _completion(model, json.dumps(["exterior"])))
            elif scenario == "refusal":
                self._send(
                    200, _completion(model, None, refusal="I'm sorry, I can't help with that.")
                )
            elif scenario == "length":
                self._send(
                    200, _completion(model, json.dumps(GOOD_ANSWER)[:40], finish_reason="length")
                )
            elif scenario == "slow":
                time.sleep(server.slow_seconds)
                self._send(200, _completion(model, json.dumps(GOOD_ANSWER)))
            elif scenario == "spid":
                self._send(200, _completion(model, json.dumps(SPID_ANSWER)))
            elif scenario == "selectors":
                self._send(200, _completion(model, json.dumps(server.selectors_answer)))
            elif scenario == "off_range":
                self._send(200, _completion(model, json.dumps(OFF_RANGE_ANSWER)))
            elif scenario == "nul":
                self._send(200, _completion(model, json.dumps(NUL_ANSWER)))
            elif scenario == "html_json":
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(HTML_BODY)))
                    self.end_headers()
                    self.wfile.write(HTML_BODY)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            else:
                self._send(200, _completion(model, json.dumps(GOOD_ANSWER)))

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; the first stdout line is the ``/v1`` base URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--api-key", default=API_KEY)
    args = parser.parse_args(argv)
    server = FakeOpenAI(
        port=args.port, latency=args.latency, failure_rate=args.failure_rate, api_key=args.api_key
    )
    with server:
        sys.stdout.write(server.url + "/v1\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
