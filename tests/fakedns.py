"""Scripted DNS answers for a child process (imported before Twisted binds getaddrinfo).

``install({"host.test": ["fail", "127.0.0.1"]})``: the n-th lookup of ``host.test``, by
anyone in the process (the guard, the downloader), gets the n-th answer, the last one
repeating; ``"fail"`` is a resolution error. Other names resolve as usual.
"""

from __future__ import annotations

import socket
import threading
from typing import Any


def install(script: dict[str, list[str]]) -> None:
    if not script:
        return
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname = socket.gethostbyname
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def answer(host: Any) -> str | None:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in script:
            return None
        with lock:
            n = counts.get(name, 0)
            counts[name] = n + 1
        answers = script[name]
        got = answers[min(n, len(answers) - 1)]
        if got == "fail":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return got

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        ip = answer(host)
        if ip is None:
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port or 0)))]

    def gethostbyname(host: str) -> str:
        ip = answer(host)
        return real_gethostbyname(host) if ip is None else ip

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
