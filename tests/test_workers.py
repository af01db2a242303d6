"""The crawler's worker processes (nuke_crawl.workers): real subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from nuke_crawl.db import Database, migrate, store
from nuke_crawl.workers.pool import WorkerError, WorkerPool


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value * 2


def _stamp(delay: float) -> float:
    import time

    time.sleep(delay)
    return time.monotonic()


def _boom(message: str) -> None:
    raise ValueError(message)


def _unpicklable() -> object:
    return lambda: None


def _slow_db_call(db: Database, delay: float) -> tuple[str, float]:
    import threading
    import time

    time.sleep(delay)  # like waiting for the database server: the GIL is free meanwhile
    return threading.current_thread().name, time.monotonic()


def _thread_and_time() -> tuple[str, float]:
    import threading
    import time

    return threading.current_thread().name, time.monotonic()


def _count_orgs(db: Database) -> int:
    return int(db.scalar("SELECT COUNT(*) FROM businesses"))


def run(coro):
    return asyncio.run(coro)


def test_calls_run_in_other_processes_and_results_come_back() -> None:
    async def go() -> list[tuple[int, int]]:
        pool = WorkerPool(2)
        try:
            return await asyncio.gather(*(pool.call(_pid_and, i) for i in range(40)))
        finally:
            await pool.close()

    results = run(go())
    assert [v for _, v in results] == [i * 2 for i in range(40)]
    pids = {pid for pid, _ in results}
    assert os.getpid() not in pids and len(pids) == 2


def test_exceptions_and_unpicklable_results_reach_the_caller() -> None:
    async def go() -> None:
        pool = WorkerPool(1)
        try:
            with pytest.raises(ValueError, match="bad page"):
                await pool.call(_boom, "bad page")
            with pytest.raises(RuntimeError, match="not picklable"):
                await pool.call(_unpicklable)
            assert await pool.call(_pid_and, 3) == (await pool.call(_pid_and, 0))[0:1] + (6,)
        finally:
            await pool.close()

    run(go())


def test_a_dead_worker_fails_its_calls_and_is_replaced() -> None:
    async def go() -> None:
        pool = WorkerPool(1)
        try:
            pid, _ = await pool.call(_pid_and, 1)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(WorkerError):
                for _ in range(50):  # until the death is seen
                    await pool.call(_pid_and, 1)
                    await asyncio.sleep(0.05)
            new_pid, value = await pool.call(_pid_and, 2)
            assert new_pid != pid and value == 4
        finally:
            await pool.close()

    run(go())


@pytest.mark.parametrize("processes", [1, 0])
def test_run_db_uses_the_workers_own_connection(db_url: str, processes: int) -> None:
    database = Database(db_url)
    migrate(database)
    store.add_organization(database, "https://one.example")
    database.close()

    async def go() -> int:
        pool = WorkerPool(processes)
        try:
            return await pool.run_db(db_url, _count_orgs)
        finally:
            await pool.close()

    assert run(go()) == 1


def test_a_call_the_worker_cannot_load_fails_alone(tmp_path, monkeypatch) -> None:
    async def go() -> None:
        pool = WorkerPool(1)
        try:
            await pool.call(_pid_and, 1)  # the worker starts with today's sys.path
            (tmp_path / "nuke_late_module.py").write_text("def f():\n    return 1\n")
            monkeypatch.syspath_prepend(str(tmp_path))
            import nuke_late_module  # type: ignore[import-not-found]

            with pytest.raises(ModuleNotFoundError, match="nuke_late_module"):
                await pool.call(nuke_late_module.f)
            with pytest.raises(Exception, match="[Pp]ickl"):
                await pool.call(_pid_and, lambda: None)  # refused before it is sent
            assert (await pool.call(_pid_and, 5))[1] == 10
        finally:
            await pool.close()

    run(go())


def test_waiting_calls_go_highest_priority_first() -> None:
    async def go() -> tuple[list[float], float]:
        pool = WorkerPool(1, depth=1)
        try:
            await pool.call(_stamp, 0)  # started
            first = asyncio.ensure_future(pool.call(_stamp, 0.3))
            await asyncio.sleep(0.05)  # the worker is busy: the next calls wait
            low = [asyncio.ensure_future(pool.call(_stamp, 0.01)) for _ in range(5)]
            await asyncio.sleep(0.05)
            high = asyncio.ensure_future(pool.call(_stamp, 0.01, priority=10))
            await first
            return list(await asyncio.gather(*low)), await high
        finally:
            await pool.close()

    low, high = run(go())
    assert high < min(low)  # queued last, run first
    assert low == sorted(low)  # equal priorities keep their order


def test_waiting_counts_the_calls_beyond_the_pipes_and_listeners_hear_each_one_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> tuple[list[int], list[int]]:
        pool = WorkerPool(1, depth=2)
        heard: list[int] = []

        def broken() -> None:
            raise RuntimeError("a listener's bug")

        pool.add_listener(lambda: heard.append(pool.waiting))
        pool.add_listener(broken)  # logged; the pool goes on
        try:
            await pool.start()
            calls = [asyncio.ensure_future(pool.call(_stamp, 0.1)) for _ in range(5)]
            await asyncio.sleep(0.05)
            seen = [pool.waiting]  # two in the worker's pipe, three waiting
            await asyncio.gather(*calls)
            seen.append(pool.waiting)
            return seen, heard
        finally:
            await pool.close()

    seen, heard = run(go())
    assert seen == [3, 0]
    assert heard[:5] == [2, 1, 0, 0, 0]  # after each call done, its room handed on
    assert "Error in a worker pool listener" in caplog.text


def test_database_calls_run_beside_the_others(db_url: str) -> None:
    """A call sent after a slow database call is answered first: database calls have
    a thread of their own in the worker, in order, so extraction does not wait on them."""

    async def go() -> tuple[tuple[str, float], tuple[str, float], tuple[str, float]]:
        pool = WorkerPool(1)
        try:
            await pool.call(_thread_and_time)  # started
            slow = asyncio.ensure_future(pool.run_db(db_url, _slow_db_call, 0.5))
            await asyncio.sleep(0.05)
            then = asyncio.ensure_future(pool.run_db(db_url, _slow_db_call, 0))
            quick = await pool.call(_thread_and_time)
            return await slow, await then, quick
        finally:
            await pool.close()

    (slow_thread, slow_done), (then_thread, then_done), (quick_thread, quick_done) = run(go())
    assert quick_done < slow_done <= then_done  # database calls stay in order
    assert slow_thread == then_thread != quick_thread == "MainThread"


def _niceness() -> int:
    return os.nice(0)


def test_workers_run_at_the_pools_lower_priority() -> None:
    async def go() -> tuple[int, int]:
        default, lowered = WorkerPool(1), WorkerPool(1, nice=7)
        try:
            return await default.call(_niceness), await lowered.call(_niceness)
        finally:
            await default.close()
            await lowered.close()

    mine = os.nice(0)
    assert run(go()) == (mine, min(19, mine + 7))
    with pytest.raises(ValueError, match="nice=20"):
        WorkerPool(1, nice=20)


def test_the_crawlers_pool_takes_its_priority_from_the_settings() -> None:
    from scrapy.exceptions import NotConfigured
    from scrapy.utils.test import get_crawler

    from nuke_crawl.extensions.workers import WorkerPoolExtension

    def crawler_workers(crawler):
        return WorkerPoolExtension.from_crawler(crawler).pool

    assert crawler_workers(get_crawler(settings_dict={})).nice == 10
    assert crawler_workers(get_crawler(settings_dict={"NUKE_WORKER_NICE": 0})).nice == 0
    with pytest.raises(NotConfigured, match="NUKE_WORKER_NICE=25"):
        crawler_workers(get_crawler(settings_dict={"NUKE_WORKER_NICE": 25}))


def _gc_state(module: str) -> tuple[int, bool, int]:
    import gc
    import sys

    return gc.get_threshold()[0], module in sys.modules, gc.get_freeze_count()


def test_workers_preload_their_modules_and_tune_their_collector() -> None:
    async def go() -> tuple[tuple[int, bool, int], tuple[int, bool, int]]:
        plain = WorkerPool(1)
        tuned = WorkerPool(1, gc_threshold=12_345, preload=("nuke_crawl.extraction",))
        try:
            await tuned.start()  # started before its first call
            assert len(tuned._workers) == 1
            return (
                await plain.call(_gc_state, "nuke_crawl.extraction"),
                await tuned.call(_gc_state, "nuke_crawl.extraction"),
            )
        finally:
            await plain.close()
            await tuned.close()

    plain, tuned = run(go())
    assert plain[0] == 700 and not plain[1] and plain[2] == 0
    assert tuned[0] == 12_345 and tuned[1] and tuned[2] > 0  # start-up's objects frozen
    with pytest.raises(ValueError, match="gc_threshold=-1"):
        WorkerPool(1, gc_threshold=-1)


def test_the_crawlers_pool_takes_its_collector_threshold_from_the_settings() -> None:
    from scrapy.exceptions import NotConfigured
    from scrapy.utils.test import get_crawler

    from nuke_crawl.extensions.workers import WorkerPoolExtension

    def crawler_workers(crawler):
        return WorkerPoolExtension.from_crawler(crawler).pool

    assert crawler_workers(get_crawler(settings_dict={})).gc_threshold == 20_000
    assert crawler_workers(get_crawler(settings_dict={"NUKE_GC_THRESHOLD": 0})).gc_threshold == 0
    with pytest.raises(NotConfigured, match="NUKE_GC_THRESHOLD=-5"):
        crawler_workers(get_crawler(settings_dict={"NUKE_GC_THRESHOLD": -5}))


def _imports(*modules: str) -> list[bool]:
    import sys

    return [module in sys.modules for module in modules]


def test_one_pool_configured_per_spider_for_extraction_or_image_decoding() -> None:
    """The org crawl's and the image backfill's workers are the same extension's pool,
    started the way each spider needs: extraction at nice 10, one process, preloading
    the extraction code; image decoding at the crawler's priority, a process per CPU
    (NUKE_IMAGE_PROCESSES), importing Pillow and numpy but no Scrapy."""
    from scrapy.crawler import Crawler
    from scrapy.settings import Settings

    from nuke_crawl import settings as project
    from nuke_crawl.extensions.workers import WorkerPoolExtension
    from nuke_crawl.spiders.image_backfill import ImageBackfillSpider
    from nuke_crawl.spiders.org import OrgSpider

    def pool_for(spidercls: type, **given: object) -> WorkerPool:
        settings = Settings()
        settings.setmodule(project, priority="project")
        settings.setdict(given, priority="cmdline")  # -s NAME=value
        return WorkerPoolExtension.from_crawler(Crawler(spidercls, settings)).pool

    org = pool_for(OrgSpider)
    assert (org.processes, org.nice, org.preload) == (1, 10, ("nuke_crawl.spiders.orgpage",))
    images = pool_for(ImageBackfillSpider)
    assert (images.processes, images.nice, images.preload) == (
        os.cpu_count() or 1,
        0,
        ("nuke_crawl.pipelines._imageworker",),
    )
    assert images.gc_threshold == org.gc_threshold == 20_000
    assert pool_for(ImageBackfillSpider, NUKE_IMAGE_PROCESSES=0).processes == 0
    assert pool_for(ImageBackfillSpider, NUKE_IMAGE_PROCESSES="3").processes == 3
    # the spider's choices are defaults: the command line still wins
    assert pool_for(ImageBackfillSpider, NUKE_WORKER_NICE=5).nice == 5

    async def go() -> list[bool]:
        pool = WorkerPool(1, nice=images.nice, preload=images.preload)
        try:
            return await pool.call(_imports, "PIL.Image", "numpy", "scrapy", "twisted")
        finally:
            await pool.close()

    assert run(go()) == [True, True, False, False]


def _pid() -> int:
    return os.getpid()


def test_an_image_worker_dying_mid_image_fails_that_image_as_storage(tmp_path: Path) -> None:
    """The backfill pipeline decodes in the crawl's pool: a worker that dies while it
    decodes fails that image with reason ``storage`` (no traceback), and the next image
    gets a new worker."""
    from scrapy import Request
    from scrapy.http import Response
    from scrapy.utils.test import get_crawler

    from nuke_crawl.db import backfill
    from nuke_crawl.demo.images import image_bytes
    from nuke_crawl.items import VehicleImagesItem
    from nuke_crawl.pipelines.images import ImageBackfillPipeline, ImageFailed

    crawler = get_crawler(
        settings_dict={
            "REQUEST_FINGERPRINTER_CLASS": "nuke_crawl.pipelines.images.PerImageFingerprinter",
            "IMAGES_STORE": str(tmp_path),
            "NUKE_IMAGE_VARIANTS": {"a": (4000, 3000)},
        }
    )
    pipeline = ImageBackfillPipeline.from_crawler(crawler)
    image = backfill.ImageWork("i1", "http://img.example/1.jpg", 0, True)
    item = VehicleImagesItem(work=backfill.VehicleWork("v1", None, [image]), owner="me")
    request = Request(image.url, meta={"nuke_image": image, "nuke_image_id": "i1"})
    big = image_bytes("big", width=6000, height=4500, quality=95, unique=True)
    response = Response(
        image.url, body=big, headers={"Content-Type": "image/jpeg"}, request=request
    )

    async def go() -> tuple[str, int, int]:
        pool = pipeline._pool = WorkerPool(1, preload=("nuke_crawl.pipelines._imageworker",))
        try:
            pid = await pool.call(_pid)
            decoding = asyncio.ensure_future(pipeline._store_response(response, request, item))
            await asyncio.sleep(0.2)  # the worker is decoding a 27-megapixel JPEG
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(ImageFailed) as failed:
                await decoding
            assert "worker process" in failed.value.detail
            return failed.value.reason, pid, await pool.call(_pid)
        finally:
            await pool.close()

    reason, dead, replacement = run(go())
    assert reason == "storage" and replacement != dead
