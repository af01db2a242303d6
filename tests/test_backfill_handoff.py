"""Phase one hands off to phase two (NUKE_TRIGGER_BACKFILL)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from nuke_crawl.db import Database, loads_json
from nuke_crawl.demo import launch
from nuke_crawl.extensions.handoff import (
    HandoffError,
    absolute_database_url,
    backfill_arguments,
    backfill_command,
    forwarded_settings,
    schedule_scrapyd,
    without_password,
)
from tests.conftest import run_scrapy, scrapy_env
from tests.scrapyd_server import Scrapyd, free_port


def test_arguments_and_command():
    args = backfill_arguments(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), 7)
    assert args == {"created_after": "2026-01-02T03:04:05+00:00", "limit": "7"}
    cmd = backfill_command(args, {"IMAGES_STORE": "/x"})
    assert cmd[-7:] == [
        "image_backfill",
        "-a",
        "created_after=2026-01-02T03:04:05+00:00",
        "-a",
        "limit=7",
        "-s",
        "IMAGES_STORE=/x",
    ]


def test_store_and_variant_settings_are_forwarded():
    from scrapy.settings import Settings

    settings = Settings({"CF_IMAGES_RATE_LIMIT": 1200, "CF_IMAGES_TOKEN": "not-forwarded"})
    settings.setdict(
        {
            "IMAGES_STORE": "cloudflare-images://acc",
            "CF_IMAGES_ACCOUNT_HASH": "hash",
            "CF_IMAGES_API_URL": "http://api/v4",
            "CF_IMAGES_VARIANT": "big",
            "CF_IMAGES_CONCURRENCY": "3",
            "CF_IMAGES_TOKEN": "secret-token",
            "NUKE_IMAGE_VARIANTS": "thumb:320x240:webp",
        },
        priority="cmdline",
    )
    out = forwarded_settings(settings)
    assert out == {
        "IMAGES_STORE": "cloudflare-images://acc",
        "CF_IMAGES_ACCOUNT_HASH": "hash",
        "CF_IMAGES_API_URL": "http://api/v4",
        "CF_IMAGES_VARIANT": "big",
        "CF_IMAGES_CONCURRENCY": "3",
        "NUKE_IMAGE_VARIANTS": "thumb:320x240:webp",
    }
    settings.set("NUKE_IMAGE_VARIANTS", {"thumb": [320, 240]}, priority="cmdline")
    assert forwarded_settings(settings)["NUKE_IMAGE_VARIANTS"] == '{"thumb": [320, 240]}'


def test_database_url_for_other_processes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_database_url("sqlite:///nuke.db") == f"sqlite:///{tmp_path}/nuke.db"
    assert absolute_database_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_database_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert without_password("postgresql://u:pw@h:5432/db?options=-csearch_path%3Ds") == (
        "postgresql://u@h:5432/db?options=-csearch_path%3Ds",
        True,
    )
    assert without_password("postgresql://h/db?user=u&password=pw&sslmode=require") == (
        "postgresql://h/db?user=u&sslmode=require",
        True,
    )
    assert without_password("postgresql://u@h/db") == ("postgresql://u@h/db", False)
    assert without_password("sqlite:////abs/x.db") == ("sqlite:////abs/x.db", False)


@pytest.fixture
def scrapyd(tmp_path):
    with Scrapyd(tmp_path / "scrapyd", scrapy_env("")) as server:
        yield server


def test_scrapyd_refusals_are_clear(scrapyd):
    with pytest.raises(
        HandoffError,
        match=r"refused to schedule image_backfill: project "
        r"'elsewhere' not found \(scrapyd needs the project",
    ):
        schedule_scrapyd(scrapyd.url, "elsewhere", {"limit": "1"})
    with pytest.raises(HandoffError, match="refused to schedule nope: spider 'nope' not found"):
        schedule_scrapyd(scrapyd.url, "nuke_crawl", {}, spider="nope")
    with pytest.raises(HandoffError, match="answered HTTP 404"):
        schedule_scrapyd(scrapyd.url + "/not-scrapyd", "nuke_crawl", {})
    assert scrapyd.listjobs()["finished"] == [] and scrapyd.listjobs()["pending"] == []


@pytest.mark.slow
def test_org_crawl_hands_off_through_scrapyd(tmp_path, scrapyd):
    # a relative SQLite path: the scrapyd job runs in scrapyd's directory, not here
    work = tmp_path / "work"
    work.mkdir()
    with launch("jsonld", n_vehicles=3, per_page=10, images_per_vehicle=2) as demo:
        store = tmp_path / "images"
        result = run_scrapy(
            [
                "crawl",
                "org",
                "-a",
                f"url={demo.url}",
                "-s",
                "NUKE_TRIGGER_BACKFILL=1",
                "-s",
                f"NUKE_SCRAPYD_URL={scrapyd.url}",
                "-s",
                f"IMAGES_STORE={store}",
                "-s",
                "AUTOTHROTTLE_START_DELAY=0.01",
                "-s",
                "NUKE_DB_BATCH_WAIT=0.05",
            ],
            "sqlite:///nuke.db",
            cwd=work,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"Scheduled image_backfill for 3 vehicles on scrapyd {scrapyd.url}" in (
            result.stderr
        )
        (job,) = scrapyd.wait_finished(1)
    assert job["spider"] == "image_backfill" and job["id"] in result.stderr
    assert f"'DATABASE_URL=sqlite:///{work}/nuke.db'" in scrapyd.everything_written()
    db = Database(f"sqlite:///{work}/nuke.db")
    try:
        metas = [
            loads_json(r["origin_metadata"])
            for r in db.fetchall("SELECT origin_metadata FROM vehicles")
        ]
    finally:
        db.close()
    assert [m.get("images_backfilled") for m in metas] == [True] * 3, scrapyd.job_logs()
    assert len(list(store.rglob("*.jpg"))) >= 6
    assert not (scrapyd.home / "nuke.db").exists()


def test_unreachable_scrapyd_after_org_crawl(sqlite_url, tmp_path):
    port = free_port()
    with launch("jsonld", n_vehicles=1, per_page=10, images_per_vehicle=1) as demo:
        result = run_scrapy(
            [
                "crawl",
                "org",
                "-a",
                f"url={demo.url}",
                "-s",
                "NUKE_TRIGGER_BACKFILL=1",
                "-s",
                f"NUKE_SCRAPYD_URL=http://127.0.0.1:{port}",
                "-s",
                "AUTOTHROTTLE_START_DELAY=0.01",
                "-s",
                "NUKE_DB_BATCH_WAIT=0.05",
            ],
            sqlite_url,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"Could not start image_backfill: scrapyd at http://127.0.0.1:{port} is "
        "unreachable (Connection refused)"
    ) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_org_crawl_starts_a_detached_backfill(db_url, tmp_path):
    with launch("jsonld", n_vehicles=3, per_page=10, images_per_vehicle=2) as demo:
        store = tmp_path / "images"
        result = run_scrapy(
            [
                "crawl",
                "org",
                "-a",
                f"url={demo.url}",
                "-s",
                "NUKE_TRIGGER_BACKFILL=1",
                "-s",
                f"IMAGES_STORE={store}",
                "-s",
                f"NUKE_BACKFILL_LOG_FILE={tmp_path / 'bf.log'}",
                "-s",
                "AUTOTHROTTLE_START_DELAY=0.01",
                "-s",
                "NUKE_DB_BATCH_WAIT=0.05",
            ],
            db_url,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Started image_backfill for 3 vehicles" in result.stderr
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline:
            db = Database(db_url)
            try:
                metas = [
                    loads_json(r["origin_metadata"])
                    for r in db.fetchall("SELECT origin_metadata FROM vehicles")
                ]
            finally:
                db.close()
            done = sum(1 for m in metas if m.get("images_backfilled") is True)
            if done == 3:
                break
            time.sleep(0.3)
        assert done == 3, (tmp_path / "bf.log").read_text()[-3000:]
        assert len(list(store.rglob("*.jpg"))) >= 6
