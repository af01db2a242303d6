"""Phase two hands newly stored images to phase three (NUKE_ANALYZE_AFTER_BACKFILL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from nuke_crawl.db import Database
from nuke_crawl.demo import ImageHost, serve
from nuke_crawl.extensions.handoff import without_password
from tests.conftest import scrapy_env
from tests.openai_server import API_KEY, FakeOpenAI
from tests.scrapyd_server import Scrapyd, free_port
from tests.test_backfill_crawl import crawl, seed

pytestmark = pytest.mark.slow


def _analysed(db_url: str) -> tuple[int, int]:
    db = Database(db_url)
    try:
        stored = db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE storage_path IS NOT NULL")
        done = db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE ai_last_scanned IS NOT NULL")
        return int(stored or 0), int(done or 0)
    finally:
        db.close()


def test_backfill_hands_stored_images_to_analysis(db_url: str, tmp_path: Path) -> None:
    host = ImageHost()
    with serve(host) as server:
        seed(
            db_url,
            [
                ("http://dealer.example/a", [f"{server.url}/img/a{i}.jpg" for i in range(3)]),
                ("http://dealer.example/b", [f"{server.url}/img/b{i}.jpg" for i in range(2)]),
            ],
        )
        log = tmp_path / "analysis.log"
        result = crawl(
            db_url,
            tmp_path / "images",
            "-s",
            "NUKE_ANALYZE_AFTER_BACKFILL=1",
            "-s",
            f"NUKE_ANALYSIS_LOG_FILE={log}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Handed 5 stored images to image_analysis" in result.stderr
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _analysed(db_url) != (5, 5):
            time.sleep(0.5)
        assert _analysed(db_url) == (5, 5), log.read_text() if log.exists() else "no log"


def test_without_the_setting_nothing_is_handed_off(sqlite_url: str, tmp_path: Path) -> None:
    host = ImageHost()
    with serve(host) as server:
        seed(sqlite_url, [("http://dealer.example/a", [f"{server.url}/img/a0.jpg"])])
        result = crawl(sqlite_url, tmp_path / "images")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "image_analysis" not in result.stderr
        time.sleep(1)
        assert _analysed(sqlite_url) == (1, 0)


# -- through a real scrapyd (NUKE_SCRAPYD_URL) ------------------------------------------

SECRET = "Sd-s3cret-PW-42"


def _with_password(url: str) -> tuple[str, str]:
    """``url`` with a password (PostgreSQL here trusts loopback, so any password
    connects) and the password to look for in what scrapyd wrote."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user or 'postgres'}:{SECRET}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), SECRET


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def scrapyd(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[Scrapyd]:
    env = scrapy_env("", OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=fake_openai.url + "/v1")
    with Scrapyd(tmp_path / "scrapyd", env) as server:
        yield server


@pytest.mark.postgres
def test_backfill_hands_off_through_scrapyd(
    pg_url: str, tmp_path: Path, scrapyd: Scrapyd, fake_openai: FakeOpenAI
) -> None:
    db_url, password = _with_password(pg_url)
    host = ImageHost()
    with serve(host) as server:
        seed(
            db_url,
            [
                ("http://dealer.example/a", [f"{server.url}/img/a{i}.jpg" for i in range(3)]),
                ("http://dealer.example/b", [f"{server.url}/img/b{i}.jpg" for i in range(2)]),
            ],
        )
        result = crawl(
            db_url,
            tmp_path / "images",
            "-s",
            "NUKE_ANALYZE_AFTER_BACKFILL=1",
            "-s",
            f"NUKE_SCRAPYD_URL={scrapyd.url}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Handed 5 stored images to image_analysis" in result.stderr
        assert "DATABASE_URL goes to scrapyd without its password" in result.stderr
        (job,) = scrapyd.wait_finished(1)
    assert job["spider"] == "image_analysis" and job["project"] == "nuke_crawl"
    assert job["id"] in result.stderr  # the job id the hand-off logged
    assert _analysed(db_url) == (5, 5), scrapyd.job_logs()
    assert fake_openai.chat_requests == 5 and set(fake_openai.images_seen.values()) == {1}
    # the database reached the job (scrapyd's environment has none) without its password
    assert f"'DATABASE_URL={without_password(db_url)[0]}'" in scrapyd.everything_written()
    for text in (result.stderr, result.stdout, scrapyd.everything_written(), scrapyd.jobs_dump()):
        assert password not in text


def test_unreachable_scrapyd_is_a_clear_message(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    host = ImageHost()
    with serve(host) as server:
        seed(sqlite_url, [("http://dealer.example/a", [f"{server.url}/img/a0.jpg"])])
        result = crawl(
            sqlite_url,
            tmp_path / "images",
            "-s",
            "NUKE_ANALYZE_AFTER_BACKFILL=1",
            "-s",
            f"NUKE_SCRAPYD_URL=http://admin:pw-xyz@127.0.0.1:{port}",
        )
    assert result.returncode == 0, result.stderr[-3000:]  # the backfill itself succeeded
    assert (
        f"Could not start image_analysis: scrapyd at http://admin:***@127.0.0.1:{port} "
        "is unreachable (Connection refused)"
    ) in result.stderr
    assert "Traceback" not in result.stderr and "pw-xyz" not in result.stderr
    assert _analysed(sqlite_url) == (1, 0)


# -- the whole chain: org -> image_backfill -> image_analysis, through scrapyd ----------


def test_org_job_goes_on_to_backfill_and_analysis_through_scrapyd(
    tmp_path: Path,
    scrapyd: Scrapyd,
    fake_openai: FakeOpenAI,
) -> None:
    """The org crawl is given NUKE_TRIGGER_BACKFILL, NUKE_ANALYZE_AFTER_BACKFILL and
    NUKE_SCRAPYD_URL: scrapyd runs image_backfill, which hands its stored images to
    image_analysis through scrapyd too (the hand-offs pass both settings on)."""
    from nuke_crawl.demo import launch
    from tests.conftest import run_scrapy

    work = tmp_path / "work"  # a relative SQLite path, made absolute for the jobs
    work.mkdir()
    with launch("jsonld", n_vehicles=3, per_page=10, images_per_vehicle=2) as demo:
        result = run_scrapy(
            [
                "crawl",
                "org",
                "-a",
                f"url={demo.url}",
                "-s",
                "NUKE_TRIGGER_BACKFILL=1",
                "-s",
                "NUKE_ANALYZE_AFTER_BACKFILL=1",
                "-s",
                f"NUKE_SCRAPYD_URL={scrapyd.url}",
                "-s",
                f"IMAGES_STORE={tmp_path / 'images'}",
                "-s",
                "AUTOTHROTTLE_START_DELAY=0.01",
                "-s",
                "NUKE_DB_BATCH_WAIT=0.05",
            ],
            "sqlite:///nuke.db",
            cwd=work,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Scheduled image_backfill for 3 vehicles on scrapyd" in result.stderr
        jobs = scrapyd.wait_finished(2)
    assert sorted(j["spider"] for j in jobs) == ["image_analysis", "image_backfill"], jobs
    backfill_log = next(
        p for p in (scrapyd.home / "logs").rglob("*.log") if "image_backfill" in str(p)
    ).read_text()
    assert "Handed 6 stored images to image_analysis" in backfill_log
    assert "Scheduled image analysis of 6 images" in backfill_log
    assert _analysed(f"sqlite:///{work}/nuke.db") == (6, 6), scrapyd.job_logs()
    assert fake_openai.chat_requests == 6


def test_a_scrapyd_password_is_not_passed_on(caplog: pytest.LogCaptureFixture) -> None:
    from scrapy.settings import Settings

    from nuke_crawl.extensions.handoff import forwarded_settings, scrapyd_settings

    settings = Settings({"DATABASE_URL": "sqlite:////abs/x.db"})
    for name, value in (
        ("NUKE_SCRAPYD_URL", "http://admin:pw-xyz@127.0.0.1:6800"),
        ("NUKE_ANALYZE_AFTER_BACKFILL", "1"),
        ("NUKE_SCRAPYD_PROJECT", "p"),
    ):
        settings.set(name, value, priority="cmdline")
    with caplog.at_level("INFO"):
        assert forwarded_settings(settings) == {
            "NUKE_ANALYZE_AFTER_BACKFILL": "1",
            "NUKE_SCRAPYD_PROJECT": "p",
        }
        assert "NUKE_SCRAPYD_URL" not in scrapyd_settings(settings)
    assert "pw-xyz" not in caplog.text and "http://admin:***@127.0.0.1:6800" in caplog.text
    settings.set("NUKE_SCRAPYD_URL", "http://127.0.0.1:6800", priority="cmdline")
    assert forwarded_settings(settings)["NUKE_SCRAPYD_URL"] == "http://127.0.0.1:6800"
