"""The org crawl spread over several processes and machines through Redis.

With ``NUKE_REDIS_URL`` set (the environment variable first, then the setting), the
``org`` spider runs on scrapy-redis's scheduler and duplicate filter
(:mod:`nuke_crawl.distributed.scheduler`), organizations are fed through a Redis queue
(``scrapy org-enqueue``, ``scrapy crawl org -a from_queue=1``), per-domain politeness is
shared (:mod:`nuke_crawl.distributed.politeness`) and per-organization bookkeeping is
kept right across workers (:mod:`nuke_crawl.distributed.coordinator`). Without it
nothing here is imported by a crawl. See docs/scale.md.

Settings (defaults in ``nuke_crawl/settings.py``): ``NUKE_REDIS_URL`` (None),
``NUKE_REDIS_NAMESPACE`` ("nuke"), ``NUKE_REDIS_ORGS_PER_WORKER`` (8),
``NUKE_REDIS_HEARTBEAT`` (2.0 s), ``NUKE_REDIS_WORKER_TIMEOUT`` (30 s).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from nuke_crawl import settings as defaults

SCHEDULER = "nuke_crawl.distributed.scheduler.OrgRedisScheduler"
DUPEFILTER = "nuke_crawl.distributed.scheduler.OrgDupeFilter"
QUEUE = "nuke_crawl.distributed.queue.LeasedPriorityQueue"
COORDINATOR = "nuke_crawl.distributed.coordinator.Coordinator"
POLITENESS = "nuke_crawl.distributed.politeness.SharedPolitenessMiddleware"
PROGRESS = "nuke_crawl.distributed.coordinator.OrgProgressMiddleware"

# What Coordinator.claim_vehicles says of each vehicle page: a slot of max_vehicles
# refused (all taken), granted to this worker, or held already (given to a worker before).
REFUSED, GRANTED, HELD = 0, 1, 2

# The keys of one organization's crawl under way (Keys.org), reset when it starts and
# deleted when it is finished: pending first.
ORG_STATE = ("pending", "seen", "summary", "vehicles", "inventory")


class DistributedError(Exception):
    """Redis is unreachable or the distributed crawl is misconfigured; the message says
    which."""


def redis_url(settings: Any) -> str | None:
    """``NUKE_REDIS_URL`` from the environment, then the setting; None when unset."""
    url = os.environ.get("NUKE_REDIS_URL") or settings.get("NUKE_REDIS_URL")
    return str(url) if url else None


def redact_redis_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


@dataclass(frozen=True)
class Keys:
    """Every Redis key of one deployment, under its namespace (``NUKE_REDIS_NAMESPACE``),
    so that two deployments can share one Redis."""

    ns: str

    def requests(self, spider: str) -> str:
        return f"{self.ns}:{spider}:requests"

    @property
    def org_queue(self) -> str:
        return f"{self.ns}:org:queue"

    def org(self, org_id: str, what: str) -> str:
        """``pending`` (requests queued or in flight), ``seen`` (fingerprints),
        ``summary`` (counts added by every worker), ``vehicles`` (the vehicle pages given
        one of the ``max_vehicles`` slots), ``inventory`` (set once a worker found the
        inventory)."""
        return f"{self.ns}:org:{org_id}:{what}"

    def org_keys(self, org_id: str) -> list[str]:
        """Every key of one organization's crawl under way, ``pending`` first."""
        return [self.org(org_id, what) for what in ORG_STATE]

    def claimed(self, worker: str) -> str:
        """The organizations worker popped from the queue and has not started yet."""
        return f"{self.ns}:claimed:{worker}"

    @property
    def workers(self) -> str:
        return f"{self.ns}:workers"

    def inflight(self, worker: str) -> str:
        return f"{self.ns}:inflight:{worker}"

    def inflight_scores(self, worker: str) -> str:
        return f"{self.ns}:inflight:{worker}:score"

    def slot(self, host: str, what: str) -> str:
        """``leases`` (requests in flight on the host), ``next`` (earliest next start),
        ``delay`` (AutoThrottle's latest delay, in ms), ``held`` (leases by worker),
        ``wanting`` (workers waiting for a slot, for fair shares)."""
        return f"{self.ns}:slot:{host}:{what}"

    def hosts_of(self, worker: str) -> str:
        """The hosts a worker took slot leases on (to free them if it dies)."""
        return f"{self.ns}:hosts:{worker}"


def keys_from_settings(settings: Any) -> Keys:
    ns = str(settings.get("NUKE_REDIS_NAMESPACE") or defaults.NUKE_REDIS_NAMESPACE).strip(":")
    return Keys(ns)


def configure(settings: Any) -> bool:
    """Switch the crawl onto Redis when ``NUKE_REDIS_URL`` is set (called from the org
    spider's ``update_settings``); returns whether it did. Nothing changes otherwise."""
    if not redis_url(settings):
        return False
    settings.set("SCHEDULER", SCHEDULER, priority="spider")
    settings.set("DUPEFILTER_CLASS", DUPEFILTER, priority="spider")
    settings.set("SCHEDULER_QUEUE_CLASS", QUEUE, priority="spider")
    settings.set("SCHEDULER_PERSIST", True, priority="spider")  # a stopped cluster resumes
    extensions = dict(settings.getdict("EXTENSIONS"))
    extensions[COORDINATOR] = 20
    settings.set("EXTENSIONS", extensions, priority="spider")
    middlewares = dict(settings.getdict("DOWNLOADER_MIDDLEWARES"))
    middlewares[PROGRESS] = 5  # first: other workers' organizations are loaded
    middlewares[POLITENESS] = 950  # last before the download: leases held while fetching
    settings.set("DOWNLOADER_MIDDLEWARES", middlewares, priority="spider")
    return True


def enqueue_organizations(client: Any, queue_key: str, org_ids: list[str]) -> int:
    """Queue organization ids for ``from_queue`` workers (first queued, first crawled);
    ids already waiting keep their place. Returns how many were new. ``client`` is a
    ``redis.Redis``; ``queue_key`` is :attr:`Keys.org_queue`. Used by ``scrapy
    org-enqueue``, and meant for anything else that queues organizations (a service)."""
    if not org_ids:
        return 0
    base = int(time.time() * 1000) * 1000  # exact in a double up to 2^53
    added: Any = client.zadd(
        queue_key, {org_id: base + i for i, org_id in enumerate(org_ids)}, nx=True
    )
    return int(added)
