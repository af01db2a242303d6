"""Cron schedules: ``NUKE_SCHEDULES`` (a setting) or ``scrapy serve --schedules FILE``.

Each schedule is ``{"name"?, "cron", "spider", "args"?}``: a cron expression parsed by
croniter (five fields; a sixth gives seconds), one of the project's spiders and its
arguments (checked by the spider's own declarations when the service starts). For
example the original's nightly image run and a steady trickle::

    [{"name": "nightly", "cron": "0 2 * * *", "spider": "image_backfill",
      "args": {"limit": 1000}},
     {"cron": "*/10 * * * *", "spider": "image_backfill", "args": {"limit": 100}}]

Times are UTC. The :class:`Scheduler` starts each due schedule through the service's
:class:`~nuke_crawl.service.jobs.JobManager` (so through scrapyd when configured); a
schedule whose spider still runs is skipped, and the skip is recorded as a ``skipped``
job. A run missed while the service was down is not made up: the next one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from croniter import croniter

from .jobs import Conflict, Job, JobManager
from .validate import Invalid, check_spider_args

logger = logging.getLogger(__name__)


class ScheduleError(ValueError):
    """A schedule is invalid; the message names it and the field."""


@dataclass
class Schedule:
    name: str
    cron: str
    spider: str
    args: dict[str, str]
    next_run: datetime | None = None
    last_run: datetime | None = None
    last_outcome: str | None = None  # started, skipped, failed
    last_job: str | None = None
    runs: int = 0
    skips: int = 0

    def advance(self, after: datetime) -> datetime:
        self.next_run = croniter(self.cron, after).get_next(datetime)
        return self.next_run

    def public(self) -> dict[str, Any]:
        def iso(v: datetime | None) -> str | None:
            return v.isoformat().replace("+00:00", "Z") if v else None

        return {
            "name": self.name,
            "cron": self.cron,
            "spider": self.spider,
            "args": self.args,
            "nextRun": iso(self.next_run),
            "lastRun": iso(self.last_run),
            "lastOutcome": self.last_outcome,
            "lastJob": self.last_job,
            "runs": self.runs,
            "skips": self.skips,
        }


def parse_schedules(value: Any, source: str = "NUKE_SCHEDULES") -> list[Schedule]:
    """Schedules from a list of dicts (or its JSON text); :class:`ScheduleError` naming
    the schedule and the field for anything wrong."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ScheduleError(f"{source}: not valid JSON ({exc})") from None
    if isinstance(value, dict) and "schedules" in value:
        value = value["schedules"]
    if not isinstance(value, list):
        raise ScheduleError(f"{source}: expected a list of schedules")
    out: list[Schedule] = []
    names: set[str] = set()
    for i, entry in enumerate(value):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict):
            raise ScheduleError(f"{where}: expected an object with cron, spider, args")
        unknown = sorted(set(entry) - {"name", "cron", "spider", "args"})
        if unknown:
            raise ScheduleError(f"{where}.{unknown[0]}: unknown field")
        cron = str(entry.get("cron") or "").strip()
        if not cron or not croniter.is_valid(cron):
            raise ScheduleError(f"{where}.cron: {cron!r} is not a cron expression")
        spider = str(entry.get("spider") or "")
        try:
            args = check_spider_args(spider, entry.get("args") or {})
        except Invalid as exc:
            raise ScheduleError(f"{where}.{exc}") from None
        name = str(entry.get("name") or f"{spider} {cron}")
        if name in names:
            raise ScheduleError(f"{where}.name: {name!r} is used twice")
        names.add(name)
        out.append(Schedule(name=name, cron=cron, spider=spider, args=args))
    return out


def load_schedules_file(path: Path) -> list[Schedule]:
    """A JSON file (a list, or ``{"schedules": [...]}``) or a TOML file
    (``[[schedules]]`` tables)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScheduleError(f"--schedules {path}: cannot read it ({exc.strerror})") from None
    if path.suffix == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScheduleError(f"--schedules {path}: not valid TOML ({exc})") from None
        return parse_schedules(data.get("schedules", []), str(path))
    return parse_schedules(text, str(path))


class Scheduler:
    """Fires due schedules. ``clock`` (UTC now) is injectable for tests."""

    def __init__(
        self,
        schedules: list[Schedule],
        jobs: JobManager,
        *,
        clock: Callable[[], datetime] | None = None,
        tick: float = 1.0,
    ) -> None:
        self.schedules = schedules
        self.jobs = jobs
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tick = tick
        self._task: asyncio.Task[None] | None = None
        now = self.clock()
        for schedule in schedules:
            schedule.advance(now)

    async def fire_due(self) -> list[Job]:
        """Start (or skip) every schedule that is due; advance it past now."""
        now = self.clock()
        out: list[Job] = []
        for schedule in self.schedules:
            if schedule.next_run is None or schedule.next_run > now:
                continue
            schedule.last_run = now
            schedule.advance(now)
            try:
                job = await self.jobs.start(schedule.spider, schedule.args, schedule=schedule.name)
            except Conflict as conflict:
                job = await self.jobs.record_skip(
                    schedule.spider, schedule.args, schedule.name, conflict.job
                )
                schedule.skips += 1
                schedule.last_outcome = "skipped"
                logger.info(
                    "Schedule %r skipped: %s still runs (job %s)",
                    schedule.name,
                    schedule.spider,
                    conflict.job.id,
                )
            else:
                schedule.runs += 1
                schedule.last_outcome = "failed" if job.state == "failed" else "started"
                logger.info(
                    "Schedule %r started %s (job %s)", schedule.name, schedule.spider, job.id
                )
            schedule.last_job = job.id
            out.append(job)
        return out

    async def run_forever(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:
                logger.exception("Schedules failed; retrying")
            await asyncio.sleep(self.tick)

    def start(self) -> None:
        if self.schedules:
            self._task = asyncio.get_running_loop().create_task(self.run_forever())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
