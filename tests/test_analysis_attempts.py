"""A paid analysis call is never repeated forever (issue 12, item 11).

An answer holding characters a database refuses (NUL, a lone surrogate) is cleaned and
written, on both backends, so it is paid once; an attempt is counted before the call,
so even a run killed during the call counts against ``NUKE_ANALYSIS_MAX_ATTEMPTS``.
Real ``scrapy crawl image_analysis`` processes, our OpenAI-compatible server counting
its calls across runs, a real SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nuke_crawl.analysis.openai_provider import parse_answer
from nuke_crawl.db import Database, analysis, loads_json
from nuke_crawl.db.connection import Json
from nuke_crawl.demo import serve
from nuke_crawl.demo.images import ImageHost
from tests.conftest import FAST, REPO, scrapy_env
from tests.openai_server import API_KEY, NUL_ANSWER, FakeOpenAI
from tests.test_image_analysis import Fixture

REFUSED = ("\x00", "\ud800")


def _env(server: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": server.url + "/v1"}


ARGS = [
    "crawl",
    "image_analysis",
    *FAST,
    "-s",
    "NUKE_OPENAI_BACKOFF_BASE=0.05",
    "-s",
    "NUKE_ANALYSIS_RETRY_BACKOFF=0",
]


def _analyse(db_url: str, server: FakeOpenAI, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "scrapy", *ARGS, *args],
        cwd=REPO,
        env=scrapy_env(db_url, **_env(server)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def _no_refused(value: Any) -> bool:
    if isinstance(value, str):
        return not any(ch in value for ch in REFUSED)
    if isinstance(value, dict):
        return all(_no_refused(k) and _no_refused(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_no_refused(v) for v in value)
    return True


def test_clean_for_db_strips_what_databases_refuse() -> None:
    value = {"a\x00": ["x\x00y", ("\ud800z",)], "n": 1, "j": Json({"k": "v\x00"})}
    cleaned = analysis.clean_for_db(value)
    assert cleaned == {"a": ["xy", ("z",)], "n": 1, "j": Json({"k": "v"})}
    assert analysis.clean_for_db("Ölkühler \x01") == "Ölkühler \x01"  # accepted: kept


@pytest.mark.slow
def test_answer_with_nul_is_written_and_paid_once(db_url: str, tmp_path: Path) -> None:
    with serve(ImageHost(width=640, height=480)) as host, FakeOpenAI() as server:
        fx = Fixture(db_url, host.url, tmp_path / "images")
        try:
            vehicles = [fx.vehicle("scenario=nul", [f"/img/nul{i}.jpg"]) for i in range(2)]
            _analyse(db_url, server)
            _analyse(db_url, server)  # nothing left: nothing paid again
            assert server.chat_requests == 2
            for vid in vehicles:
                (row,) = fx.images(vid)
                assert row["ai_last_scanned"] is not None and row["ai_error"] is None
                assert row["ai_attempts"] == 1
                meta = row["ai_scan_metadata"]["openai"]
                assert "Red Camaro with a" in str(meta) and _no_refused(meta)
                tags = fx.db.fetchall("SELECT tag_name FROM image_tags WHERE vehicle_id = ?", [vid])
                assert "Rallywheel" in {t["tag_name"] for t in tags}
        finally:
            fx.close()


def test_record_success_cleans_refused_characters(db: Database) -> None:
    from nuke_crawl.db import store

    org, _ = store.add_organization(db, "https://dealer.example")
    store.upsert_vehicles(
        db,
        [
            store.VehicleRecord(
                org.id, "https://dealer.example/v/1", {"title": "x"}, ["https://cdn.example/1.jpg"]
            )
        ],
    )
    row = db.fetchone("SELECT id, vehicle_id FROM vehicle_images")
    assert row is not None
    work = analysis.AnalysisWork(
        str(row["id"]), str(row["vehicle_id"]), "https://cdn.example/1.jpg", None, None, True, None
    )
    result = parse_answer(NUL_ANSWER, model="gpt-4o-mini")
    assert result.ok and not _no_refused(result.to_metadata())  # the answer holds them
    outcome = analysis.record_success(db, work, [result], "me")
    assert outcome.written and outcome.tags == 1
    meta = loads_json(db.scalar("SELECT ai_scan_metadata FROM vehicle_images"))
    assert _no_refused(meta) and db.scalar("SELECT tag_name FROM image_tags") == "Rallywheel"
    assert db.scalar("SELECT ai_attempts FROM vehicle_images") == 1


@pytest.mark.slow
def test_attempt_counted_before_the_call_caps_paid_calls(sqlite_url: str, tmp_path: Path) -> None:
    """Runs killed during the call: each counts, and the cap stops the paying."""
    with (
        serve(ImageHost(width=640, height=480)) as host,
        FakeOpenAI(default="slow", slow_seconds=120) as server,
    ):
        fx = Fixture(sqlite_url, host.url, tmp_path / "images")
        try:
            fx.vehicle("car", ["/img/capped.jpg"])
        finally:
            fx.close()
        cap = ["-s", "NUKE_ANALYSIS_MAX_ATTEMPTS=2", "-s", "NUKE_ANALYSIS_LEASE_SECONDS=1"]
        for run in range(2):
            proc = subprocess.Popen(
                [sys.executable, "-m", "scrapy", *ARGS, *cap],
                cwd=REPO,
                env=scrapy_env(sqlite_url, **_env(server)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while server.chat_requests <= run and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.chat_requests == run + 1
            proc.send_signal(signal.SIGKILL)  # dies during the paid call
            proc.wait(timeout=10)
            time.sleep(1.2)  # its lease expires
        result = _analyse(sqlite_url, server, *cap)
        assert server.chat_requests == 2, result.stderr[-3000:]
        db = Database(sqlite_url)
        try:
            assert db.scalar("SELECT ai_attempts FROM vehicle_images") == 2
        finally:
            db.close()
