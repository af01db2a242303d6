"""Spider runs started by the service: supervised ``scrapy crawl`` processes, or scrapyd jobs.

Every run is a row of ``nuke_service_jobs`` (migration 6), written before the run starts
and updated as it goes, so a run survives a restart of the service in the records:

- ``process`` backend (no ``NUKE_SCRAPYD_URL``): ``python -m scrapy crawl SPIDER -a ...``
  in its own session (it outlives the service), output appended to
  ``<NUKE_SERVICE_LOG_DIR>/<job id>.log``, ``DATABASE_URL`` through its environment (it may
  hold a password: never on a command line). Its pid and the pid's start time (from
  ``/proc``) are recorded; a restarted service adopts a run whose process still lives and
  marks ``lost`` one whose process is gone without a summary in its log.
- ``scrapyd`` backend: ``schedule.json`` through
  :func:`nuke_crawl.extensions.handoff.schedule_scrapyd` (the same settings as a hand-off:
  ``DATABASE_URL`` without its password), states read back from ``listjobs.json``, the
  summary from the job's log, cancel through ``cancel.json``.

States: ``pending`` (recorded; queued in scrapyd), ``running``, ``finished``, ``failed``,
``cancelled``, ``lost``, and ``skipped`` (a schedule's run not started because its spider
was running). A run's summary is the JSON line the
:class:`~nuke_crawl.extensions.notify.RunReport` extension logs when the run closes.
The admin token is never given to a run (not in its arguments, not in its environment).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nuke_crawl.db import Database, Json, loads_json, new_id, redact_url
from nuke_crawl.extensions.handoff import HandoffError, schedule_scrapyd
from nuke_crawl.extensions.notify import SUMMARY_MARKER

from .dbpool import DatabasePool

logger = logging.getLogger(__name__)

SPIDERS = ("image_backfill", "image_analysis", "org")
ACTIVE_STATES = ("pending", "running")
FINAL_STATES = ("finished", "failed", "cancelled", "lost", "skipped")
# Environment a run never inherits from the service.
SECRET_ENV = ("NUKE_ADMIN_TOKEN",)
SCRAPYD_FORGOTTEN = 15.0  # seconds a scrapyd job may be missing from listjobs.json

_LOGSTATS = re.compile(r"Crawled (\d+) pages? \(at [^)]*\), scraped (\d+) items?")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


@dataclass
class Job:
    id: str
    spider: str
    args: dict[str, str]
    state: str
    backend: str
    external_id: str | None = None
    process_start: str | None = None
    schedule: str | None = None
    log_path: str | None = None
    exit_code: int | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    created_at: Any = None
    started_at: Any = None
    finished_at: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        return cls(
            id=str(row["id"]),
            spider=row["spider"],
            args=loads_json(row["args"]) or {},
            state=row["state"],
            backend=row["backend"] or "process",
            external_id=row["external_id"],
            process_start=row["process_start"],
            schedule=row["schedule"],
            log_path=row["log_path"],
            exit_code=row["exit_code"],
            summary=loads_json(row["summary"]),
            error=row["error"],
            cancel_requested=row["cancel_requested"] in (True, 1),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    def public(self, *, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "spider": self.spider,
            "args": self.args,
            "state": self.state,
            "backend": self.backend,
            "schedule": self.schedule,
            "createdAt": _iso(self.created_at),
            "startedAt": _iso(self.started_at),
            "finishedAt": _iso(self.finished_at),
            "exitCode": self.exit_code,
            "error": self.error,
            "summary": self.summary,
            "progress": progress(self),
        }
        if detail:
            out["logTail"] = log_tail(self)
        return out


# -- records --------------------------------------------------------------------------

_COLUMNS = (
    "id, spider, args, state, backend, external_id, process_start, schedule, "
    "log_path, exit_code, summary, error, cancel_requested, created_at, started_at, "
    "finished_at"
)


def insert_job(db: Database, job: Job) -> None:
    db.execute(
        f"INSERT INTO nuke_service_jobs ({_COLUMNS}) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            job.id,
            job.spider,
            Json(job.args),
            job.state,
            job.backend,
            job.external_id,
            job.process_start,
            job.schedule,
            job.log_path,
            job.exit_code,
            Json(job.summary) if job.summary is not None else None,
            job.error,
            job.cancel_requested,
            job.created_at,
            job.started_at,
            job.finished_at,
        ],
    )


_UPDATABLE = {
    "state",
    "external_id",
    "process_start",
    "exit_code",
    "summary",
    "error",
    "cancel_requested",
    "started_at",
    "finished_at",
    "log_path",
}


def update_job(db: Database, job_id: str, **fields: Any) -> None:
    bad = set(fields) - _UPDATABLE
    if bad:
        raise ValueError(f"not updatable: {sorted(bad)}")
    names = list(fields)
    values = [Json(v) if n == "summary" and v is not None else v for n, v in fields.items()]
    db.execute(
        f"UPDATE nuke_service_jobs SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
        [*values, job_id],
    )


def get_job(db: Database, job_id: str) -> Job | None:
    row = db.fetchone(f"SELECT {_COLUMNS} FROM nuke_service_jobs WHERE id = ?", [job_id])
    return Job.from_row(row) if row else None


def active_jobs(db: Database, spider: str | None = None) -> list[Job]:
    sql = f"SELECT {_COLUMNS} FROM nuke_service_jobs WHERE state IN ('pending', 'running')"
    params: list[Any] = []
    if spider:
        sql += " AND spider = ?"
        params.append(spider)
    return [Job.from_row(r) for r in db.fetchall(sql + " ORDER BY created_at", params)]


def list_jobs(db: Database, *, limit: int = 50, state: str | None = None) -> list[Job]:
    sql = f"SELECT {_COLUMNS} FROM nuke_service_jobs"
    params: list[Any] = []
    if state:
        sql += " WHERE state = ?"
        params.append(state)
    sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
    return [Job.from_row(r) for r in db.fetchall(sql, [*params, limit])]


# -- logs: progress, summary, tail -----------------------------------------------------


def _read_tail(path: str | None, size: int = 64 * 1024) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def log_tail(job: Job, lines: int = 40) -> list[str]:
    text = job.extra.get("log_text") if "log_text" in job.extra else _read_tail(job.log_path)
    return str(text or "").splitlines()[-lines:]


def summary_from_log(text: str) -> dict[str, Any] | None:
    """The run summary the :class:`~nuke_crawl.extensions.notify.RunReport` extension
    logged (its last one), or None."""
    at = text.rfind(SUMMARY_MARKER)
    if at < 0:
        return None
    line = text[at + len(SUMMARY_MARKER) :].split("\n", 1)[0].strip()
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _target(job: Job) -> int | None:
    key = {"image_backfill": "limit", "image_analysis": "limit"}.get(job.spider)
    try:
        return int(job.args[key]) if key and key in job.args else None
    except ValueError:
        return None


def progress(job: Job) -> dict[str, Any]:
    """Items done so far (from the run's summary when finished, else the last log-stats
    line of its log) against its ``limit`` argument. A finished job is done, however
    few items it found: its ``limit`` is a most, not a goal."""
    items: int | None = None
    if job.summary:
        items = int(job.summary.get("items") or 0)
    elif job.state == "running" and job.log_path:
        found = _LOGSTATS.findall(_read_tail(job.log_path, 16 * 1024))
        if found:
            items = int(found[-1][1])
    target = _target(job)
    out: dict[str, Any] = {"items": items, "target": target}
    if job.state == "finished":
        out["percent"] = 100.0
    elif items is not None and target:
        out["percent"] = round(min(100.0, 100.0 * items / target), 1)
    return out


# -- processes ------------------------------------------------------------------------


def process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` (field 22 of ``/proc/<pid>/stat``), or None if it is
    gone or a zombie: with the pid it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def crawl_command(spider: str, args: Mapping[str, str], settings: Mapping[str, str]) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider]
    for name, value in args.items():
        cmd += ["-a", f"{name}={value}"]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


# -- scrapyd --------------------------------------------------------------------------


def scrapyd_call(
    url: str,
    endpoint: str,
    fields: Mapping[str, str] | None = None,
    *,
    post: bool = False,
    timeout: float = 10,
) -> Any:
    """GET or POST one scrapyd endpoint (basic auth from ``user:password@`` in ``url``,
    never shown); the decoded JSON, or raw text for a log. Blocking: call it in a thread.
    Raises :class:`~nuke_crawl.extensions.handoff.HandoffError` with a reason."""
    parts = urllib.parse.urlsplit(url)
    shown = redact_url(url)
    headers: dict[str, str] = {}
    if parts.username is not None:
        token = base64.b64encode(
            f"{urllib.parse.unquote(parts.username)}:"
            f"{urllib.parse.unquote(parts.password or '')}".encode()
        ).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    target = url.rstrip("/") + "/" + endpoint.lstrip("/")
    data = urllib.parse.urlencode(fields or {}).encode()
    if not post and fields:
        target += "?" + data.decode()
    request = urllib.request.Request(target, data=data if post else None, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise HandoffError(f"scrapyd at {shown} answered HTTP {exc.code} on {endpoint}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise HandoffError(f"scrapyd at {shown} is unreachable ({exc})") from None
    if endpoint.endswith(".json"):
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise HandoffError(f"{shown} did not answer like scrapyd on {endpoint}") from None
    return raw.decode("utf-8", "replace")


# -- the manager ----------------------------------------------------------------------


@dataclass
class RunnerConfig:
    """How the service starts runs. ``settings`` are given to every run with ``-s``
    (the service's forwarded settings); ``scrapyd_settings`` likewise for scrapyd jobs."""

    database_url: str
    log_dir: Path
    cwd: Path
    settings: dict[str, str] = field(default_factory=dict)
    scrapyd_url: str | None = None
    scrapyd_project: str = "nuke_crawl"
    scrapyd_settings: dict[str, str] = field(default_factory=dict)
    poll_interval: float = 1.0
    cancel_grace: float = 10.0  # a cancelled process still alive then gets SIGTERM again,
    #                             then SIGKILL after as long again


class Conflict(Exception):
    """A run of the spider is active; ``job`` is that run."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"{job.spider} is already running (job {job.id})")
        self.job = job


class JobManager:
    """Starts, cancels and supervises runs; see the module doc."""

    def __init__(self, pool: DatabasePool, config: RunnerConfig) -> None:
        self.pool = pool
        self.config = config
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled_at: dict[str, float] = {}  # job id -> monotonic time of the cancel
        self._escalated: dict[str, int] = {}
        self._missing: dict[str, float] = {}  # scrapyd jobs not listed: since when
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set when a run's state changes
        self.backend = "scrapyd" if config.scrapyd_url else "process"

    # -- starting --------------------------------------------------------------------

    async def start(
        self,
        spider: str,
        args: Mapping[str, str],
        *,
        schedule: str | None = None,
        allow_concurrent: bool = False,
    ) -> Job:
        """Record and start a run; :class:`Conflict` if one of ``spider`` is active and
        ``allow_concurrent`` is false. A run that cannot start is recorded ``failed``
        with the reason."""
        async with self._lock:
            if not allow_concurrent:
                active = await self.pool.run(active_jobs, spider)
                if active:
                    raise Conflict(active[0])
            now = datetime.now(UTC)
            job = Job(
                id=new_id(),
                spider=spider,
                args=dict(args),
                state="pending",
                backend=self.backend,
                schedule=schedule,
                created_at=now,
            )
            if self.backend == "process":
                self.config.log_dir.mkdir(parents=True, exist_ok=True)
                job.log_path = str((self.config.log_dir / f"{job.id}.log").absolute())
            await self.pool.run(insert_job, job)
            try:
                if self.backend == "scrapyd":
                    await self._start_scrapyd(job)
                else:
                    self._start_process(job)
            except (HandoffError, OSError) as exc:
                job.state, job.error, job.finished_at = "failed", str(exc), datetime.now(UTC)
                logger.error("Could not start %s (job %s): %s", spider, job.id, exc)
            await self.pool.run(
                update_job,
                job.id,
                state=job.state,
                external_id=job.external_id,
                process_start=job.process_start,
                started_at=job.started_at,
                finished_at=job.finished_at,
                error=job.error,
            )
        self.changed.set()
        return job

    def _start_process(self, job: Job) -> None:
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env["DATABASE_URL"] = self.config.database_url
        settings = {"LOGSTATS_INTERVAL": "2", **self.config.settings}
        assert job.log_path is not None
        with open(job.log_path, "ab") as out:
            proc = subprocess.Popen(
                crawl_command(job.spider, job.args, settings),
                cwd=self.config.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[job.id] = proc
        job.external_id = str(proc.pid)
        job.process_start = process_start_time(proc.pid)
        job.state, job.started_at = "running", datetime.now(UTC)
        logger.info("Started %s as pid %d (job %s)", job.spider, proc.pid, job.id)

    async def _start_scrapyd(self, job: Job) -> None:
        assert self.config.scrapyd_url
        job.external_id = await asyncio.to_thread(
            schedule_scrapyd,
            self.config.scrapyd_url,
            self.config.scrapyd_project,
            job.args,
            spider=job.spider,
            settings=self.config.scrapyd_settings,
        )
        job.started_at = datetime.now(UTC)
        logger.info(
            "Scheduled %s on scrapyd (job %s, scrapyd job %s)", job.spider, job.id, job.external_id
        )

    async def record_skip(
        self, spider: str, args: Mapping[str, str], schedule: str, running: Job
    ) -> Job:
        now = datetime.now(UTC)
        job = Job(
            id=new_id(),
            spider=spider,
            args=dict(args),
            state="skipped",
            backend=self.backend,
            schedule=schedule,
            created_at=now,
            finished_at=now,
            error=f"{spider} was still running (job {running.id})",
        )
        await self.pool.run(insert_job, job)
        self.changed.set()
        return job

    # -- cancelling --------------------------------------------------------------------

    async def cancel(self, job: Job) -> Job:
        """Ask an active run to stop (SIGTERM to its process group: Scrapy closes the
        spider cleanly; or scrapyd's ``cancel.json``). A final run is returned as it is."""
        if job.state not in ACTIVE_STATES:
            return job
        if job.backend == "scrapyd" and self.config.scrapyd_url and job.external_id:
            await asyncio.to_thread(
                scrapyd_call,
                self.config.scrapyd_url,
                "cancel.json",
                {"project": self.config.scrapyd_project, "job": job.external_id},
                post=True,
            )
        elif job.external_id and self._alive(job):
            self._signal(job, signal.SIGTERM)
            self._cancelled_at.setdefault(job.id, time.monotonic())
        await self.pool.run(update_job, job.id, cancel_requested=True)
        job.cancel_requested = True
        return job

    # -- supervising -------------------------------------------------------------------

    @staticmethod
    def _signal(job: Job, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.killpg(int(str(job.external_id)), sig)

    def _escalate(self, job: Job) -> None:
        """A cancelled run that has not stopped within the grace period: Scrapy's
        second SIGTERM forces its shutdown; after as long again, SIGKILL."""
        since = self._cancelled_at.get(job.id)
        if since is None:
            return
        waited = time.monotonic() - since
        step = (
            2
            if waited > 2 * self.config.cancel_grace
            else 1
            if waited > self.config.cancel_grace
            else 0
        )
        if step > self._escalated.get(job.id, 0):
            self._escalated[job.id] = step
            logger.warning(
                "Job %s did not stop after cancel: %s",
                job.id,
                "SIGKILL" if step == 2 else "forcing (SIGTERM again)",
            )
            self._signal(job, signal.SIGKILL if step == 2 else signal.SIGTERM)

    def _alive(self, job: Job) -> bool:
        if not job.external_id or not job.external_id.isdigit():
            return False
        child = self._children.get(job.id)
        if child is not None:
            return child.poll() is None
        start = process_start_time(int(job.external_id))
        return start is not None and start == job.process_start

    def _outcome(self, job: Job, exit_code: int | None, log_text: str) -> dict[str, Any]:
        summary = summary_from_log(log_text)
        reason = (summary or {}).get("finishReason")
        if job.cancel_requested:
            state = "cancelled"
        elif exit_code is None and summary is None:
            state = "lost"
        elif exit_code not in (None, 0) or reason not in (None, "finished"):
            state = "failed"
        else:
            state = "finished"
        error = None
        if state == "lost":
            error = (
                "the run's process ended while the service was not watching, "
                "and its log has no summary"
            )
        elif state == "failed":
            error = f"exit code {exit_code}" if exit_code else f"finish reason {reason}"
        return {
            "state": state,
            "exit_code": exit_code,
            "summary": summary,
            "error": error,
            "finished_at": datetime.now(UTC),
        }

    async def poll_once(self) -> int:
        """Bring every active run's record up to date; the number of runs that changed.
        Under the start lock: a run being started is never taken for a lost one."""
        async with self._lock:
            changed = await self._poll()
        if changed:
            self.changed.set()
        return changed

    async def _poll(self) -> int:
        changed = 0
        active = await self.pool.run(active_jobs)
        scrapyd_jobs: dict[str, tuple[str, dict[str, Any]]] | None = None
        for job in active:
            if job.backend == "scrapyd":
                if scrapyd_jobs is None:
                    scrapyd_jobs = await self._scrapyd_states()
                if scrapyd_jobs is None:  # scrapyd unreachable: leave the records as they are
                    continue
                changed += await self._poll_scrapyd(job, scrapyd_jobs)
                continue
            child = self._children.get(job.id)
            if child is not None:
                code = child.poll()
                if code is None:
                    self._escalate(job)
                    continue
                del self._children[job.id]
            elif self._alive(job):
                self._escalate(job)
                continue  # adopted: a run started before this service (re)started
            else:
                code = None
            text = await asyncio.to_thread(_read_tail, job.log_path)
            fields = self._outcome(job, code, text)
            await self.pool.run(update_job, job.id, **fields)
            logger.info("Job %s (%s) %s", job.id, job.spider, fields["state"])
            changed += 1
        return changed

    async def _scrapyd_states(self) -> dict[str, tuple[str, dict[str, Any]]] | None:
        assert self.config.scrapyd_url
        try:
            answer = await asyncio.to_thread(
                scrapyd_call,
                self.config.scrapyd_url,
                "listjobs.json",
                {"project": self.config.scrapyd_project},
            )
        except HandoffError as exc:
            logger.warning("Cannot read scrapyd's jobs: %s", exc)
            return None
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for state in ("pending", "running", "finished"):
            for entry in answer.get(state) or []:
                out[str(entry.get("id"))] = (state, entry)
        return out

    async def _poll_scrapyd(self, job: Job, jobs: dict[str, tuple[str, dict[str, Any]]]) -> int:
        assert self.config.scrapyd_url
        found = jobs.get(str(job.external_id))
        if found is None:
            # Between scrapyd's queue and its process list a job is briefly in neither;
            # one missing for SCRAPYD_FORGOTTEN seconds was forgotten (scrapyd restarted,
            # or jobs_to_keep passed): never silently gone.
            first = self._missing.setdefault(job.id, time.monotonic())
            if time.monotonic() - first < SCRAPYD_FORGOTTEN:
                return 0
            del self._missing[job.id]
            if job.cancel_requested:  # cancelled while still in scrapyd's queue
                await self.pool.run(
                    update_job, job.id, state="cancelled", finished_at=datetime.now(UTC)
                )
                return 1
            await self.pool.run(
                update_job,
                job.id,
                state="lost",
                finished_at=datetime.now(UTC),
                error="scrapyd no longer knows this job",
            )
            return 1
        self._missing.pop(job.id, None)
        state, entry = found
        if state == job.state:
            return 0
        if state == "running":
            await self.pool.run(update_job, job.id, state="running")
            return 1
        if state == "finished":
            text = ""
            if entry.get("log_url"):
                try:
                    text = await asyncio.to_thread(
                        scrapyd_call, self.config.scrapyd_url, str(entry["log_url"])
                    )
                except HandoffError:
                    text = ""
            fields = self._outcome(job, 0, text)
            await self.pool.run(update_job, job.id, **fields)
            return 1
        return 0

    async def run_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                logger.exception("Job supervision failed; retrying")
            await asyncio.sleep(self.config.poll_interval)

    def start_supervising(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run_forever())

    async def stop(self) -> None:
        """Stop supervising. Runs go on (their own sessions); a restarted service
        adopts them."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
