"""A real scrapyd for the hand-off tests, on a free 127.0.0.1 port.

Runs ``python -m scrapyd`` (the version pinned in requirements.txt) from a directory of
its own holding ``scrapyd.conf`` and ``scrapy.cfg``: the project ``nuke_crawl`` is
served without deploying an egg, through the ``[settings]`` section
(``nuke_crawl = nuke_crawl.settings``), as the installed package. Its environment is the
test's minus ``DATABASE_URL`` and ``SCRAPY_SETTINGS_MODULE``: whatever database a job
uses must have been handed to it by the hand-off.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

PROJECT = "nuke_crawl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Scrapyd:
    """Start with :meth:`start` (or as a context manager); :attr:`url`, :meth:`listjobs`,
    :meth:`wait_finished`, :meth:`everything_written` (its logs, queue databases and
    output, to look for secrets)."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            k: v for k, v in env.items() if k not in ("DATABASE_URL", "SCRAPY_SETTINGS_MODULE")
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = home / "scrapyd.out"

    def start(self) -> Self:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "scrapyd.conf").write_text(
            "[scrapyd]\n"
            "bind_address = 127.0.0.1\n"
            f"http_port = {self.port}\n"
            f"logs_dir = {self.home / 'logs'}\n"
            f"dbs_dir = {self.home / 'dbs'}\n"
            f"eggs_dir = {self.home / 'eggs'}\n"
            "items_dir =\n"
            "jobs_to_keep = 100\n"
            "max_proc = 4\n"
            "poll_interval = 0.2\n"
            "\n[settings]\n"
            f"{PROJECT} = nuke_crawl.settings\n"
        )
        (self.home / "scrapy.cfg").write_text(f"[settings]\n{PROJECT} = nuke_crawl.settings\n")
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scrapyd", "--nodaemon", "--pidfile="],
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("scrapyd exited: " + self.output.read_text()[-3000:])
            try:
                if self.get("daemonstatus.json").get("status") == "ok":
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("scrapyd did not answer within 30 s: " + self.output.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/{path}", timeout=10) as response:
            return dict(json.loads(response.read().decode("utf-8")))

    def listjobs(self) -> dict[str, Any]:
        return self.get(f"listjobs.json?project={PROJECT}")

    def wait_finished(self, count: int, timeout: float = 120) -> list[dict[str, Any]]:
        """Wait until ``count`` jobs have finished (none pending or running); return them."""
        deadline = time.monotonic() + timeout
        jobs = self.listjobs()
        while time.monotonic() < deadline:
            jobs = self.listjobs()
            if len(jobs["finished"]) >= count and not jobs["pending"] and not jobs["running"]:
                return list(jobs["finished"])
            time.sleep(0.3)
        raise AssertionError(
            f"scrapyd jobs not finished in {timeout} s: {jobs}\n" + self.job_logs()
        )

    def job_logs(self) -> str:
        return "\n".join(
            f"== {p}\n{p.read_text(errors='replace')}"
            for p in sorted((self.home / "logs").rglob("*.log"))
        )

    def everything_written(self) -> str:
        """Every file scrapyd and its jobs wrote (logs, queue databases), as text."""
        texts = []
        for path in sorted(self.home.rglob("*")):
            if path.is_file():
                texts.append(path.read_bytes().decode("utf-8", errors="replace"))
        return "\n".join(texts)

    def jobs_dump(self) -> str:
        """Everything scrapyd's API says about the jobs (listjobs.json, raw)."""
        with urllib.request.urlopen(f"{self.url}/listjobs.json", timeout=10) as r:
            return r.read().decode("utf-8")
