"""The pieces both image phases share: the reason-carrying exception, the Retry-After
parser, the download-failure classifier, the timed write batcher, the leased-work
helpers, and the backfill pipeline's guard on its result cache."""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest
from scrapy.exceptions import DownloadTimeoutError, IgnoreRequest
from scrapy.utils.test import get_crawler
from twisted.internet import error as twisted_error

from nuke_crawl.exceptions import ReasonError
from nuke_crawl.imaging import ImageRejected
from nuke_crawl.spiders.leased import duration, eta_seconds
from nuke_crawl.utils.batching import TimedBatcher
from nuke_crawl.utils.downloads import download_failure_reason
from nuke_crawl.utils.http import parse_retry_after


def test_reason_errors_carry_and_pickle_their_reason() -> None:
    err = ReasonError("missing_file", "gone")
    assert (err.reason, err.detail, str(err)) == ("missing_file", "gone", "missing_file: gone")
    again = pickle.loads(pickle.dumps(ImageRejected("truncated", "cut short")))
    assert isinstance(again, ImageRejected) and again.reason == "truncated"
    with pytest.raises(ValueError, match="unknown rejection reason"):
        ImageRejected("nonsense", "x")


def test_retry_after_fractions_dates_and_garbage() -> None:
    assert parse_retry_after("0.25") == 0.25  # the OpenAI API sends fractions
    assert parse_retry_after(b" 3 ") == 3.0
    assert parse_retry_after("1.2.3") is None
    assert parse_retry_after("") is None and parse_retry_after("-1") is None
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 -0000") is None  # no zone: refused
    later = time.time() + 30
    header = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    assert 25 < (parse_retry_after(header) or 0) <= 30


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (IgnoreRequest("private address"), "refused"),
        (DownloadTimeoutError("took too long"), "timeout"),
        (twisted_error.DNSLookupError("no such host"), "dns"),
        (ConnectionRefusedError("refused"), "connection"),
        (ValueError("Missing scheme in request url: x"), "bad_url"),
        (RuntimeError("Cancelling download: maxsize exceeded"), "too_large"),
        (ReasonError("http_404", "HTTP 404"), "http_404"),
    ],
)
def test_download_failures_are_named(exc: BaseException, reason: str) -> None:
    assert download_failure_reason(exc)[0] == reason


def test_download_failure_fallback_names_the_type() -> None:
    assert download_failure_reason(KeyError("x")) == ("connection", "KeyError: 'x'")
    reason, detail = download_failure_reason(KeyError("x"), fallback="download_error")
    assert reason == "download_error" and detail.startswith("KeyError")


@pytest.mark.serial
def test_timed_batcher_batches_by_size_and_by_time() -> None:
    writes: list[list[int]] = []

    async def write(batch: list[tuple[int, asyncio.Future[int]]]) -> None:
        writes.append([value for value, _ in batch])
        for value, future in batch:
            if value < 0:
                future.set_exception(ValueError(f"bad {value}"))
            else:
                future.set_result(value * 10)

    async def go() -> None:
        batcher: TimedBatcher[int, int] = TimedBatcher(write, size=3, wait=0.05)
        # three arrive together: one write, at once (not after the wait)
        started = time.monotonic()
        assert await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3))) == [10, 20, 30]
        assert time.monotonic() - started < 0.04
        # two: written together when the wait is over
        started = time.monotonic()
        assert await asyncio.gather(batcher.submit(4), batcher.submit(5)) == [40, 50]
        assert time.monotonic() - started >= 0.04
        # a failure reaches only its own caller
        results = await asyncio.gather(
            batcher.submit(-1), batcher.submit(6), return_exceptions=True
        )
        assert isinstance(results[0], ValueError) and results[1] == 60
        # drain writes what waits without waiting for the timer
        task = asyncio.ensure_future(batcher.submit(7))
        await asyncio.sleep(0)
        await batcher.drain()
        assert task.done() and task.result() == 70

    asyncio.run(go())
    assert writes == [[1, 2, 3], [4, 5], [-1, 6], [7]]


@pytest.mark.serial
def test_timed_batcher_writes_a_partial_batch_once_idle_says_so() -> None:
    writes: list[list[int]] = []
    busy = True

    async def write(batch: list[tuple[int, asyncio.Future[None]]]) -> None:
        writes.append([value for value, _ in batch])
        for _, future in batch:
            future.set_result(None)

    async def go() -> None:
        nonlocal busy
        batcher: TimedBatcher[int, None] = TimedBatcher(
            write, size=10, wait=5.0, idle=lambda: not busy
        )
        # while busy, a partial batch waits for company
        task = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(3 * TimedBatcher.IDLE_POLL)
        assert not task.done() and writes == []
        # idle: written within one poll, not after the 5 s wait
        busy = False
        started = time.monotonic()
        await task
        assert time.monotonic() - started < 3 * TimedBatcher.IDLE_POLL
        # without an idle check the wait is the only timer
        plain: TimedBatcher[int, None] = TimedBatcher(write, size=10, wait=0.2)
        started = time.monotonic()
        await plain.submit(2)
        assert time.monotonic() - started >= 0.19

    asyncio.run(go())
    assert writes == [[1], [2]]


def test_eta_and_durations() -> None:
    assert eta_seconds(0, 10, 5.0) == 0.0
    assert eta_seconds(5, 10, 5.0) == 5.0
    assert eta_seconds(12, 10, 5.0) == 0.0
    assert [duration(s) for s in (4.4, 61, 3600 + 125)] == ["4s", "1m01s", "1h02m"]


def test_backfill_pipeline_refuses_a_url_keyed_cache() -> None:
    from nuke_crawl.pipelines.images import ImageBackfillPipeline, PerImageFingerprinter

    crawler = get_crawler(settings_dict={"NUKE_IMAGE_PROCESSES": 0})
    with pytest.raises(TypeError, match="REQUEST_FINGERPRINTER_CLASS"):
        ImageBackfillPipeline.from_crawler(crawler)
    crawler = get_crawler(
        settings_dict={
            "NUKE_IMAGE_PROCESSES": 0,
            "REQUEST_FINGERPRINTER_CLASS": "nuke_crawl.pipelines.images.PerImageFingerprinter",
        }
    )
    pipeline = ImageBackfillPipeline.from_crawler(crawler)
    fingerprinter = crawler.request_fingerprinter
    assert isinstance(fingerprinter, PerImageFingerprinter)
    from scrapy import Request

    one = Request("http://a.example/x.jpg", meta={"nuke_image_id": "1"})
    two = Request("http://a.example/x.jpg", meta={"nuke_image_id": "2"})
    plain = Request("http://a.example/x.jpg")
    assert fingerprinter.fingerprint(one) != fingerprinter.fingerprint(two)
    assert fingerprinter.fingerprint(plain) == fingerprinter.fingerprint(
        Request("http://a.example/x.jpg")
    )
    assert pipeline.image_store is not None
