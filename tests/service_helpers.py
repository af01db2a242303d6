"""A running ``scrapy serve`` for the service tests, a real HTTP client, seeded data."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nuke_crawl.db import Database, migrate, store
from tests.conftest import REPO, scrapy_env

TOKEN = "test-admin-token-5e1f"
JOB_SETTINGS = [
    "AUTOTHROTTLE_ENABLED=0",
    "ROBOTSTXT_OBEY=0",
    "DOWNLOAD_TIMEOUT=3",
    "RETRY_TIMES=0",
    "NUKE_BACKOFF_BASE=0.05",
    "IMAGES_MIN_WIDTH=10",
    "IMAGES_MIN_HEIGHT=10",
    "NUKE_IMAGES_FSYNC=0",
]


class Service:
    """``scrapy serve --port 0`` in a child process; :meth:`get` / :meth:`post` answer
    ``(status, json)`` through urllib."""

    def __init__(
        self,
        db_url: str,
        home: Path,
        *,
        token: str | None = TOKEN,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db_url, self.home, self.token = db_url, home, token
        self.extra = extra or []
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def start(self, timeout: float = 30) -> Service:
        self.home.mkdir(parents=True, exist_ok=True)
        env = scrapy_env(self.db_url, **self.env)
        env.pop("NUKE_ADMIN_TOKEN", None)
        if self.token:
            env["NUKE_ADMIN_TOKEN"] = self.token
        cmd = [
            sys.executable,
            "-m",
            "scrapy",
            "serve",
            "--port",
            "0",
            "-s",
            f"IMAGES_STORE={self.home / 'images'}",
            "-s",
            f"NUKE_SERVICE_LOG_DIR={self.home / 'logs'}",
            "-s",
            "NUKE_SERVICE_STATUS_REFRESH=0.5",
            "-s",
            "NUKE_SERVICE_CANCEL_GRACE=1.5",
            "-s",
            "NUKE_ALLOW_PRIVATE_NETWORKS=1",
            *[x for s in JOB_SETTINGS for x in ("--job-setting", s)],
            *self.extra,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if "service on http://" in line:
                self.url = line.split("service on ", 1)[1].split("/ ", 1)[0]
                break
        assert self.url, "".join(self.output)
        # drain the rest of the output in the background (a full pipe would block it)
        import threading

        threading.Thread(target=self._drain, daemon=True).start()
        for _ in range(100):
            try:
                if self.get("/api/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("service never answered: " + "".join(self.output))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                payload = res.read()
                if "json" not in res.headers.get("Content-Type", ""):
                    return res.status, payload.decode()
                return res.status, json.loads(payload or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                return exc.code, json.loads(payload)
            except ValueError:
                return exc.code, payload.decode()

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(
        self, path: str, body: Any = None, *, token: str | None = TOKEN, raw: bytes | None = None
    ) -> tuple[int, Any]:
        return self.request("POST", path, body if body is not None else {}, token=token, raw=raw)

    def wait_job(self, job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, answer = self.get(f"/api/jobs/{job_id}")
            job = answer["job"]
            if job["state"] in states:
                return job
            time.sleep(0.2)
        raise AssertionError(
            f"job {job_id} still {job.get('state')}: {job}\n" + "".join(self.output[-30:])
        )


def seed(
    url: str, vehicles: list[tuple[str, list[str]]], website: str = "http://dealer.example"
) -> tuple[str, list[str]]:
    """Vehicles (listing URL, image URLs) as the org crawl records them: the
    organization's id and the vehicles' ids."""
    db = Database(url)
    migrate(db)
    try:
        org, _ = store.add_organization(db, website, name="Dealer Example")
        recs = [
            store.VehicleRecord(
                org.id,
                listing,
                {"year": 1999, "make": "Saab", "model": "900", "listing_url": listing},
                urls,
            )
            for listing, urls in vehicles
        ]
        store.upsert_vehicles(db, recs)
        rows = db.fetchall("SELECT id, discovery_url FROM vehicles")
        by_url = {r["discovery_url"]: str(r["id"]) for r in rows}
        return org.id, [by_url[listing] for listing, _ in vehicles]
    finally:
        db.close()


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
