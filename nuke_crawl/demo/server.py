"""A small threaded HTTP server for demo apps, run in a background thread.

An *app* is any callable taking a :class:`Request` and returning a
:class:`Response`. :func:`serve` binds it to a loopback address (port 0 picks a
free port), starts ``serve_forever`` in a daemon thread and returns a
:class:`RunningServer` whose ``.url`` is known immediately. If the app has a
``bind(url)`` method, it is called with that URL before the first request, so
apps can build absolute links to themselves.

The server speaks HTTP/1.1 with keep-alive, always sends ``Content-Length``,
answers ``HEAD`` without a body, disables Nagle (headers and body are separate
writes, which otherwise meet delayed ACKs and stall keep-alive clients 40 ms a
request), and logs requests only at DEBUG level. ``stop()`` also closes idle
keep-alive connections and wakes delayed responses, so a stopped server is
really down for its clients.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)

__all__ = ["App", "Request", "Response", "RunningServer", "dead_url", "serve"]


@dataclass(frozen=True)
class Request:
    """What an app sees of one request: method, target (path plus query
    string, as sent), headers (case-insensitive lookups via :meth:`header`)."""

    method: str
    target: str
    headers: Mapping[str, str]

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        """The query string without ``?`` (empty when absent)."""
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header(self, name: str, default: str = "") -> str:
        """A header value by case-insensitive name."""
        lname = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lname:
                return value
        return default


@dataclass
class Response:
    """One answer: status, content type, body and extra headers.

    ``delay`` seconds are slept (in the handler thread, interruptible by
    ``stop()``) before anything is sent, to play a slow server.
    """

    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


App = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks open connections so ``stop()`` can
    close idle keep-alive sockets too."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # Crawlers open many connections at once; the default backlog of 5 makes
    # bursts wait for SYN retransmits.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response are normal for crawlers; keep quiet.
        # socketserver calls this from inside its exception handler.
        logger.debug(
            "Demo server connection error from %s",
            client_address,
            exc_info=True,  # noqa: LOG014
        )

    def close_connections(self) -> None:
        """Shut down every open client socket (wakes blocked handler threads)."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Turns each request into an app call; one thread per connection."""

    protocol_version = "HTTP/1.1"
    server_version = "nuke-demo/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    # Idle keep-alive connections give up their thread after this long.
    timeout = 60
    server: _Server

    def do_GET(self) -> None:  # http.server's naming
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._answer(send_body=True)

    def _answer(self, *, send_body: bool) -> None:
        request = Request(
            method=self.command,
            target=self.path,
            headers={k: v for k, v in self.headers.items()},
        )
        try:
            response = self.server.app(request)
        except Exception:
            logger.exception("Demo app failed on %s %s", self.command, self.path)
            response = Response(
                status=500, content_type="text/plain; charset=utf-8", body=b"app error\n"
            )
        if response.delay > 0 and self.server.stopping.wait(response.delay):
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body and response.body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class CountingApp:
    """Wraps an app: each request takes ``delay`` seconds more, and ``most`` records
    the most requests it was answering at once (to check per-host concurrency)."""

    def __init__(self, app: App, delay: float = 0.0) -> None:
        self.app, self.delay = app, delay
        self.active = self.most = 0
        self._lock = threading.Lock()

    def bind(self, url: str) -> None:
        bind = getattr(self.app, "bind", None)
        if bind is not None:
            bind(url)

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(self.delay)
            return self.app(request)
        finally:
            with self._lock:
                self.active -= 1


class RunningServer:
    """A server running in a background thread; a context manager.

    ``url`` is ``http://host:port`` with no trailing slash.
    """

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.host: str = server.server_address[0]  # type: ignore[assignment]
        self.port: int = server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"demo-server-{self.port}",
            daemon=True,
        )
        self._stopped = False

    @property
    def app(self) -> App:
        """The app this server answers with."""
        return self._server.app

    def start(self) -> RunningServer:
        """Start serving (called by :func:`serve`)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close open connections, release the port. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._server.stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RunningServer {self.url}>"


def serve(app: App, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``app`` on ``host:port`` (port 0: any free port) in a daemon thread.

    Calls ``app.bind(url)`` first when the app has such a method.
    """
    server = _Server((host, port), app)
    running = RunningServer(server)
    bind = getattr(app, "bind", None)
    if callable(bind):
        bind(running.url)
    return running.start()


# Sockets bound but never listening: connections to them are refused, and
# keeping them open stops the kernel from handing their ports to anyone else.
_dead_sockets: list[socket.socket] = []
_dead_lock = threading.Lock()


def dead_url(host: str = "127.0.0.1") -> str:
    """A URL on ``host`` where nothing listens (connections are refused):
    a "site that is down". The port stays reserved for the process lifetime."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    with _dead_lock:
        _dead_sockets.append(sock)
    return f"http://{host}:{sock.getsockname()[1]}"
