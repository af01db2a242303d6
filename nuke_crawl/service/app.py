"""The Starlette application of ``scrapy serve``: JSON API, admin page, job supervision.

Reads: ``GET /api/image-status``, ``/api/jobs``, ``/api/jobs/{id}``, ``/api/organizations``,
``/api/failures``, ``/api/vehicles/{id}``, ``/api/schedules``, ``/api/thumbnails``,
``/api/health``; the page at ``/``. Writes (``Authorization: Bearer <NUKE_ADMIN_TOKEN>``;
403 when no token is configured, 401 without the right one; no cookies):
``POST /api/process-images``, ``/api/analyze-images``, ``/api/crawl-organizations``,
``/api/jobs`` and ``/api/jobs/{id}/cancel``. With ``NUKE_REDIS_URL`` configured,
``/api/crawl-organizations`` queues the selected organizations in Redis for
``scrapy crawl org -a from_queue=1`` workers (docs/scale.md) instead of starting a run.

The image status and the first page of organizations count over every vehicle and image,
which takes seconds on a large database: they are computed in the background (every
``NUKE_SERVICE_STATUS_REFRESH`` seconds, or longer when a computation is slow; at once
when a job changes state) and answered from the latest result, whose time is ``asOf``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nuke_crawl.db import store
from nuke_crawl.distributed import enqueue_organizations, redact_redis_url
from nuke_crawl.params import OrgSelection

from . import page, queries, validate
from .dbpool import DatabasePool
from .jobs import Conflict, JobManager, RunnerConfig, get_job, list_jobs
from .schedules import Schedule, Scheduler

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
JOB_STATES = ("pending", "running", "finished", "failed", "cancelled", "lost", "skipped")


@dataclass(frozen=True)
class OrgQueue:
    """The Redis queue of organizations for ``from_queue`` org workers: ``redis_url``
    (``NUKE_REDIS_URL``) and ``key`` (:attr:`nuke_crawl.distributed.Keys.org_queue`)."""

    redis_url: str
    key: str

    def push(self, org_ids: list[str]) -> tuple[int, int]:
        """Queue the ids (blocking: run it in a thread); how many were new, and how
        many wait in the queue now. Raises ``redis.RedisError``."""
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=3)
        try:
            new = enqueue_organizations(client, self.key, org_ids)
            return new, int(client.zcard(self.key))  # type: ignore[arg-type]
        finally:
            client.close()


@dataclass
class ServiceConfig:
    database_url: str
    runner: RunnerConfig
    token: str | None = None
    schedules: list[Schedule] = field(default_factory=list)
    images_dir: Path | None = None  # a local IMAGES_STORE, served at /store/
    refresh: float = 2.0
    db_threads: int = 4
    org_queue: OrgQueue | None = None  # crawl-organizations queues in Redis (NUKE_REDIS_URL)


class NotReady(Exception):
    """The first status figures are still being computed."""


class Refresher:
    """Keeps the latest image status and first organizations page (see module doc)."""

    def __init__(self, pool: DatabasePool, interval: float, wake: asyncio.Event) -> None:
        self.pool = pool
        self.interval = interval
        self.wake = wake
        self.status: dict[str, Any] | None = None
        self.orgs: dict[str, Any] | None = None
        self.seconds = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set once the first figures are there

    async def refresh(self) -> None:
        async with self._lock:
            started = time.perf_counter()
            self.status = await self.pool.run(queries.image_status)
            self.orgs = await self.pool.run(queries.organizations)
            self.seconds = time.perf_counter() - started
            self.ready.set()

    async def _first(self, timeout: float) -> None:
        if self.status is None or self.orgs is None:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                raise NotReady from None

    async def get_status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The latest image status; :class:`NotReady` if the first computation (seconds
        to a minute on a large database) has not ended within ``timeout``."""
        await self._first(timeout)
        assert self.status is not None
        return self.status

    async def get_orgs(self, timeout: float = 10.0) -> dict[str, Any]:
        await self._first(timeout)
        assert self.orgs is not None
        return self.orgs

    async def run_forever(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.refresh()
            except Exception:
                logger.exception("Refreshing the status failed")
            # a slow database is not asked more than a fifth of the time
            wait = max(self.interval, 4 * self.seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run_forever())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"success": False, "error": message, **extra}, status_code=status)


def create_app(config: ServiceConfig) -> Starlette:
    pool = DatabasePool(config.database_url, size=config.db_threads)
    jobs = JobManager(pool, config.runner)
    refresher = Refresher(pool, config.refresh, jobs.changed)
    scheduler = Scheduler(config.schedules, jobs)

    Handler = Callable[[Request], Awaitable[Response]]

    def guarded(handler: Handler) -> Handler:
        """Bad input -> 422 naming the field; an active run -> 409 with it."""

        async def wrapper(request: Request) -> Response:
            try:
                return await handler(request)
            except validate.Invalid as exc:
                return _error(422, str(exc), field=exc.field)
            except Conflict as exc:
                return _error(409, str(exc), job=exc.job.public())
            except NotReady:
                return JSONResponse(
                    {
                        "success": False,
                        "error": "the status figures are being computed for "
                        "the first time (a large database takes a while); retry shortly",
                    },
                    status_code=503,
                    headers={"Retry-After": "5"},
                )

        return wrapper

    def write(handler: Handler) -> Handler:
        """A write endpoint: the admin token, then :func:`guarded`."""
        inner = guarded(handler)

        async def wrapper(request: Request) -> Response:
            if not config.token:
                return _error(403, "writes are disabled: the service has no NUKE_ADMIN_TOKEN")
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), config.token.encode()
            ):
                return JSONResponse(
                    {
                        "success": False,
                        "error": "a valid Bearer token is "
                        "required (Authorization: Bearer <NUKE_ADMIN_TOKEN>)",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return await inner(request)

        return wrapper

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise validate.Invalid("body", "not valid JSON") from None
        if not isinstance(value, dict):
            raise validate.Invalid("body", "expected a JSON object")
        return value

    async def start_job(spider: str, args: dict[str, str], body: dict[str, Any]) -> Response:
        job = await jobs.start(spider, args, allow_concurrent=validate.allow_concurrent(body))
        status = 502 if job.state == "failed" else 200
        return JSONResponse(
            {"success": job.state != "failed", "job": job.public()}, status_code=status
        )

    # -- reads ------------------------------------------------------------------------

    async def image_status(request: Request) -> Response:
        return JSONResponse(await refresher.get_status())

    async def organizations(request: Request) -> Response:
        limit = validate.query_int(request.query_params, "limit", 50, 1, 500)
        offset = validate.query_int(request.query_params, "offset", 0, 0, 10**9)
        if limit == 50 and offset == 0:
            return JSONResponse(await refresher.get_orgs())
        return JSONResponse(await pool.run(queries.organizations, limit=limit, offset=offset))

    async def failures(request: Request) -> Response:
        limit = validate.query_int(request.query_params, "limit", 50, 1, 500)
        reason = request.query_params.get("reason") or None
        if reason is not None and (len(reason) > 64 or not reason.replace("_", "").isalnum()):
            raise validate.Invalid("reason", "expected a failure reason such as http_404")
        out = await pool.run(queries.failures, reason=reason, limit=limit)
        status = await refresher.get_status()
        out["byReason"] = status["images"]["failedByReason"]
        return JSONResponse(out)

    async def vehicle(request: Request) -> Response:
        vid = validate.uuid_text("id", request.path_params["id"])
        found = await pool.run(queries.vehicle, vid)
        if found is None:
            return _error(404, f"no vehicle {vid}")
        return JSONResponse(found)

    async def jobs_list(request: Request) -> Response:
        limit = validate.query_int(request.query_params, "limit", 50, 1, 500)
        state = request.query_params.get("state") or None
        if state is not None and state not in JOB_STATES:
            raise validate.Invalid("state", f"one of {', '.join(JOB_STATES)}")
        found = await pool.run(list_jobs, limit=limit, state=state)
        return JSONResponse(
            {"success": True, "backend": jobs.backend, "jobs": [j.public() for j in found]}
        )

    async def job_detail(request: Request) -> Response:
        jid = validate.uuid_text("id", request.path_params["id"])
        job = await pool.run(get_job, jid)
        if job is None:
            return _error(404, f"no job {jid}")
        return JSONResponse({"success": True, "job": job.public(detail=True)})

    async def schedules(request: Request) -> Response:
        return JSONResponse(
            {"success": True, "schedules": [s.public() for s in scheduler.schedules]}
        )

    async def thumbnails(request: Request) -> Response:
        limit = validate.query_int(request.query_params, "limit", 12, 1, 60)
        found = await pool.run(queries.thumbnails, limit=limit)
        for thumb in found:
            url = thumb.get("url") or ""
            if config.images_dir is not None and not url.startswith(("http://", "https://")):
                thumb["url"] = f"/store/{thumb['path']}"
        return JSONResponse({"success": True, "thumbnails": found})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"success": True, "backend": jobs.backend, "writes": bool(config.token)}
        )

    async def store_file(request: Request) -> Response:
        if config.images_dir is None:
            return _error(404, "the image store is not a local folder")
        base = config.images_dir.resolve()
        target = (base / request.path_params["path"]).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            return _error(404, "no such stored image")
        return FileResponse(target, headers={"Cache-Control": "max-age=3600"})

    async def index(request: Request) -> Response:
        try:
            status = await refresher.get_status(timeout=2.0)
            orgs = await refresher.get_orgs(timeout=0.1)
        except NotReady:  # the page shows "computing" and fills itself in when ready
            status, orgs = {"stats": {}, "images": {}, "asOf": "computing…"}, {}
        recent = await pool.run(list_jobs, limit=15)
        html = page.render(
            status=status,
            orgs=orgs,
            jobs=[j.public() for j in recent],
            schedules=[s.public() for s in scheduler.schedules],
            writes=bool(config.token),
            backend=jobs.backend,
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    # -- writes -----------------------------------------------------------------------

    async def process_images(request: Request) -> Response:
        body = await body_of(request)
        return await start_job("image_backfill", validate.process_images(body), body)

    async def analyze_images(request: Request) -> Response:
        body = await body_of(request)
        return await start_job("image_analysis", validate.analyze_images(body), body)

    async def crawl_organizations(request: Request) -> Response:
        body = await body_of(request)
        args = validate.crawl_organizations(body)
        if config.org_queue is not None:
            return await enqueue_orgs(config.org_queue, args)
        return await start_job("org", args, body)

    async def enqueue_orgs(queue: OrgQueue, args: dict[str, str]) -> Response:
        """The organizations ``crawl org`` would select with these arguments, queued."""
        import redis

        selection = OrgSelection.parse(args, "org")
        found = await pool.run(store.select_organizations, **selection.as_dict())
        ids = [org.id for org in found.organizations]
        try:
            new, waiting = await asyncio.to_thread(queue.push, ids)
        except redis.RedisError as exc:
            return _error(503, f"Redis at {redact_redis_url(queue.redis_url)} failed: {exc}")
        next_offset = selection.offset + found.page_size
        logger.info(
            "Queued %d organizations for org workers (%d already queued)", new, len(ids) - new
        )
        return JSONResponse(
            {
                "success": True,
                "queued": {
                    "queue": queue.key,
                    "organizationIds": ids,
                    "enqueued": new,
                    "alreadyQueued": len(ids) - new,
                    "waiting": waiting,
                    "total": found.total,
                    "nextOffset": next_offset if next_offset < found.total else None,
                },
            }
        )

    async def new_job(request: Request) -> Response:
        body = await body_of(request)
        spider, args = validate.new_job(body)
        return await start_job(spider, args, body)

    async def cancel(request: Request) -> Response:
        jid = validate.uuid_text("id", request.path_params["id"])
        job = await pool.run(get_job, jid)
        if job is None:
            return _error(404, f"no job {jid}")
        job = await jobs.cancel(job)
        return JSONResponse({"success": True, "job": job.public()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await jobs.poll_once()  # adopt runs that outlived a previous service, or mark them
        jobs.start_supervising()
        refresher.start()
        scheduler.start()
        app.state.jobs, app.state.scheduler, app.state.refresher = jobs, scheduler, refresher
        try:
            yield
        finally:
            await scheduler.stop()
            await refresher.stop()
            await jobs.stop()
            await asyncio.to_thread(pool.close)

    g, w = guarded, write
    routes = [
        Route("/", g(index)),
        Route("/api/health", g(health)),
        Route("/api/image-status", g(image_status)),
        Route("/api/organizations", g(organizations)),
        Route("/api/failures", g(failures)),
        Route("/api/vehicles/{id}", g(vehicle)),
        Route("/api/jobs", g(jobs_list)),
        Route("/api/jobs", w(new_job), methods=["POST"]),
        Route("/api/jobs/{id}", g(job_detail)),
        Route("/api/jobs/{id}/cancel", w(cancel), methods=["POST"]),
        Route("/api/schedules", g(schedules)),
        Route("/api/thumbnails", g(thumbnails)),
        Route("/api/process-images", w(process_images), methods=["POST"]),
        Route("/api/analyze-images", w(analyze_images), methods=["POST"]),
        Route("/api/crawl-organizations", w(crawl_organizations), methods=["POST"]),
        Route("/store/{path:path}", store_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
