"""The ``org`` spider: every organization's vehicle inventory into the database.

``scrapy crawl org -a threshold=1`` visits the websites of organizations that
have fewer than ``threshold`` active vehicles, finds their inventory, follows
pagination, extracts each vehicle detail page and yields one
:class:`~nuke_crawl.items.VehicleItem` per listing. Images are recorded as
URLs only; nothing is downloaded here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import scrapy
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.http import Request, Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.sitemap import Sitemap, sitemap_urls_from_robots
from scrapy_playwright.page import PageMethod
from twisted.python.failure import Failure

from nuke_crawl import settings as defaults
from nuke_crawl.db import DatabaseError, needs_migration, store
from nuke_crawl.distributed import GRANTED, REFUSED, DistributedError
from nuke_crawl.distributed import configure as configure_distributed
from nuke_crawl.extensions.database import SchemaMissing, crawler_database, prepare_database
from nuke_crawl.extensions.workers import worker_pool
from nuke_crawl.extraction import (
    COMMON_INVENTORY_PATHS,
    canonical_listing_url,
    discover_inventory_links,
)
from nuke_crawl.extraction.urls import looks_like_vehicle_url, same_site, sibling_vehicle_urls
from nuke_crawl.items import VehicleItem
from nuke_crawl.middlewares.netguard import RefusedRequest
from nuke_crawl.params import (
    OrgSelection,
    apply_user_agent,
    arg,
    positive_int,
    to_bool,
    to_url,
)
from nuke_crawl.signals import vehicles_stored
from nuke_crawl.spiders.bounds import (
    DETAIL_PRIORITY,
    MAX_NEXT_PAGES_PER_PAGE,
    CrawlBounds,
    OrgBudget,
)
from nuke_crawl.spiders.learning import SelectorLearner
from nuke_crawl.spiders.orgmeta import (
    InvalidOrgConfig,
    InvalidWebsite,
    OrgConfig,
    parse_org_config,
)
from nuke_crawl.spiders.orgpage import extract_for_crawl
from nuke_crawl.spiders.orgwatch import OrgWatch
from nuke_crawl.workers.pool import WorkerError, WorkerPool

logger = logging.getLogger(__name__)

MAX_INVENTORY_ENTRIES = 3  # inventory links followed from a home page


@dataclass(frozen=True)
class OrgArgs(OrgSelection):
    """The org spider's arguments (``-a name=value``): which organizations
    (:class:`~nuke_crawl.params.OrgSelection`, shared with ``scrapy org-enqueue``),
    then these."""

    url: str | None = arg(
        None, "crawl this one website (its organization is found or created)", to_url
    )
    max_vehicles: int = arg(
        500, "vehicles per organization at most (across all workers with Redis)", positive_int
    )
    dry_run: bool = arg(False, "extract and report, write nothing", to_bool)
    from_queue: bool = arg(
        False, "crawl organizations queued in Redis (org-enqueue; needs NUKE_REDIS_URL)", to_bool
    )
    exit_when_empty: bool = arg(False, "with from_queue: exit once the queue is empty", to_bool)


@dataclass
class OrgProgress:
    """What one organization's crawl did, for its summary."""

    org: store.Organization
    pages: int = 0
    vehicles_found: int = 0
    vehicle_requests: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    entry_error: str | None = None
    render_js: bool = False
    seen: set[str] = field(default_factory=set)  # canonical URLs requested this run
    known: set[str] = field(default_factory=set)  # already stored (resumed crawls)
    inventory_found: bool = False  # or the common paths probed: no probing (again)
    written: Counter[str] = field(default_factory=Counter)  # the pipeline's outcomes
    config: OrgConfig | None = None  # None: not crawlable as configured (see entry_error)
    budget: OrgBudget = field(default_factory=lambda: OrgBudget(CrawlBounds()))
    # requests of this run not done yet (callback or errback not run): at 0, with its
    # vehicles written, the organization is finished and reported at once
    pending: int = 0
    started: bool = False  # its first request was made
    interrupted: bool = False  # a request of it was cut short by a stop
    # distributed only: every max_vehicles slot is taken across workers; the vehicle pages
    # whose slot another worker holds (requested here once too, see _claim_shared)
    vehicles_capped: bool = False
    held: set[str] = field(default_factory=set)
    reported: dict[str, Any] | None = None  # the summary recorded as finished


class OrgSpider(scrapy.Spider):
    """Crawls organizations' websites for vehicle listings.

    Arguments (``-a name=value``): :class:`OrgArgs`, as ``self.args``. Settings:
    ``NUKE_MAX_IMAGES_PER_VEHICLE`` (50), ``NUKE_PROBE_COMMON_PATHS`` (True),
    ``NUKE_RENDER_JS`` (True), ``NUKE_WORKER_PROCESSES`` (1: pages are extracted, and
    vehicles written, in a worker process; 0: a thread), the caps of
    :mod:`nuke_crawl.spiders.bounds` (``NUKE_ORG_MAX_PAGES``, ``NUKE_ORG_MAX_SITEMAPS``,
    ``NUKE_ORG_MAX_SITEMAP_ENTRIES``, ``NUKE_SITEMAP_MAX_DEPTH``) and
    ``NUKE_PROGRESS_INTERVAL`` (60 s, the progress line of
    :mod:`nuke_crawl.spiders.orgwatch`).

    Each organization is reported (summary logged, recorded as finished) as soon as
    its requests are all done and its vehicles written (the pipeline's
    :data:`~nuke_crawl.signals.vehicles_stored`); on a stop
    (:mod:`nuke_crawl.extensions.quickstop`), the others are recorded unfinished and
    selected again by the next run.
    """

    name = "org"
    Arguments = OrgArgs
    args: OrgArgs
    stop_quickly = True  # nuke_crawl.extensions.quickstop: within seconds of SIGINT/SIGTERM
    max_images: int
    probe_paths: bool
    render_js: bool
    workers: WorkerPool
    learner: SelectorLearner | None
    bounds: CrawlBounds
    bounds_error: str | None = None
    # nuke_crawl.distributed's coordinator when NUKE_REDIS_URL is set: requests live in
    # Redis, organizations may come from its queue, and it records finished crawls.
    distributed: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = OrgArgs.from_kwargs(kwargs, self.name)
        super().__init__(*args)
        self.progress: dict[str, OrgProgress] = {}
        self.page_info: store.OrganizationPage | None = None
        self.run_id = uuid.uuid4().hex[:12]  # marks this run's requests (not JOBDIR's)
        self.stopping = False  # set by QuickStop when the run is told to stop
        self.watch: OrgWatch | None = None
        self._recording: set[asyncio.Task[None]] = set()

    @classmethod
    def update_settings(cls, settings: Any) -> None:
        super().update_settings(settings)
        apply_user_agent(settings)
        configure_distributed(settings)  # only with NUKE_REDIS_URL
        # Scrapy starts CONCURRENT_ITEMS tasks for every response's output. A page here
        # yields one vehicle or a list of links (scheduled at once), so one is enough.
        settings.set("CONCURRENT_ITEMS", 1, priority="spider")
        if settings.getbool("NUKE_RENDER_JS", defaults.NUKE_RENDER_JS):
            handlers = dict(settings.getdict("PLAYWRIGHT_DOWNLOAD_HANDLERS"))
            handlers.update(settings.getdict("DOWNLOAD_HANDLERS"))
            settings.set("DOWNLOAD_HANDLERS", handlers, priority="spider")
            # the one browser the http and https handlers share (at the spider's
            # priority, like the handlers: `scrapy crawl` merges the project's in again)
            extensions = dict(settings.getdict("EXTENSIONS"))
            extensions.setdefault("nuke_crawl.downloader.browser.Browser", 0)
            settings.set("EXTENSIONS", extensions, priority="spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> OrgSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        if spider.args.dry_run:
            crawler.settings.set("NUKE_DRY_RUN", True, priority="spider")
        settings = crawler.settings
        spider.max_images = settings.getint(
            "NUKE_MAX_IMAGES_PER_VEHICLE", defaults.NUKE_MAX_IMAGES_PER_VEHICLE
        )
        spider.probe_paths = settings.getbool(
            "NUKE_PROBE_COMMON_PATHS", defaults.NUKE_PROBE_COMMON_PATHS
        )
        spider.render_js = settings.getbool("NUKE_RENDER_JS", defaults.NUKE_RENDER_JS)
        spider.learner = SelectorLearner.from_settings(settings)  # NUKE_LEARN_SELECTORS
        try:
            spider.bounds = CrawlBounds.from_settings(settings)
        except ValueError as exc:  # reported by start(), without a traceback
            spider.bounds, spider.bounds_error = CrawlBounds(), str(exc)
        spider.watch = OrgWatch(
            spider, settings.getfloat("NUKE_PROGRESS_INTERVAL", defaults.NUKE_PROGRESS_INTERVAL)
        )
        crawler.signals.connect(spider._on_closed, signal=signals.spider_closed)
        crawler.signals.connect(spider._on_vehicles_stored, signal=vehicles_stored)
        return spider

    # -- selection -------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        try:
            if self.bounds_error:
                raise ValueError(self.bounds_error)
            # the pool is an extension: Scrapy builds them after the spider's from_crawler
            self.workers = worker_pool(self.crawler)
            await self.workers.start()  # its imports overlap the selection and first fetch
            if self.distributed is not None:
                await self.distributed.check()
            elif self.args.from_queue:
                raise DistributedError("from_queue=1 needs NUKE_REDIS_URL (docs/scale.md)")
            orgs = [] if self.args.from_queue else await self._select()
        except (DatabaseError, SchemaMissing, WorkerError, DistributedError, ValueError) as exc:
            logger.error("Cannot start: %s", exc)
            assert self.crawler.stats is not None
            self.crawler.stats.set_value("nuke/error", str(exc))
            self.crawler.stats.set_value("nuke/cannot_start", str(exc))  # printed last
            return
        if self.watch is not None:
            self.watch.start()
        for org in orgs:
            if self.distributed is not None and not self.distributed.adopt(org.id):
                continue
            for request in self._entry_requests(org):
                yield request

    async def _select(self) -> list[store.Organization]:
        args = self.args
        dry = args.dry_run
        adb = crawler_database(self.crawler)
        if not dry:
            await prepare_database(self.crawler)
        orgs: list[store.Organization]
        if args.url:
            found: store.Organization | None = None
            if not dry or not await adb.run(needs_migration):
                found = await adb.run(store.find_organization_by_website, args.url)
            if found is None and dry:
                found = store.Organization("dry-run", None, args.url, None, {})
            elif found is None:
                created, _ = await adb.run(store.add_organization, args.url)
                logger.info("Created organization %s for %s", created.id, args.url)
                found = created
            orgs = [found]
        else:
            if dry and await adb.run(needs_migration):
                raise SchemaMissing("the database has no nuke_crawl schema: run `scrapy migrate`")
            page = await adb.run(
                store.select_organizations,
                threshold=args.threshold,
                limit=args.limit,
                offset=args.offset,
                business_type=args.business_type,
                organization_id=args.organization_id,
            )
            self.page_info = page
            orgs = page.organizations
            logger.info(
                "Selected %d of %d organizations in this page (offset %d, %d matching in all;"
                " threshold %d active vehicles)",
                len(orgs),
                page.page_size,
                args.offset,
                page.total,
                args.threshold,
            )
        if not dry and orgs:
            await adb.run(store.mark_crawls_started, [o.id for o in orgs])
        for org in orgs:
            progress = self.new_progress(org)
            if org.resume and not dry:
                progress.known = await adb.run(store.known_listing_urls, org.id)
                logger.info(
                    "Resuming the unfinished crawl of %s (%d listings already stored)",
                    org.business_name or org.website,
                    len(progress.known),
                )
            self.progress[org.id] = progress
        return orgs

    def new_progress(self, org: store.Organization) -> OrgProgress:
        """A fresh record of ``org``'s crawl: its budget under the crawl's bounds, its
        website and metadata checked (also for :mod:`nuke_crawl.distributed`, which loads
        organizations other workers started)."""
        progress = OrgProgress(org)
        progress.budget = OrgBudget(self.bounds, org.business_name or org.website)
        self._configure(progress)
        return progress

    def _configure(self, progress: OrgProgress) -> None:
        """Validate the organization's website and metadata (:mod:`.orgmeta`); a bad one
        is recorded as its error, once, and the organization is not crawled."""
        org = progress.org
        try:
            progress.config = parse_org_config(org.website, org.metadata)
        except (InvalidWebsite, InvalidOrgConfig) as exc:
            kind = "invalid_website" if isinstance(exc, InvalidWebsite) else "invalid_metadata"
            progress.entry_error = f"{kind}: {exc}"
            progress.errors.append(progress.entry_error)
            self._stat(f"nuke/orgs/{kind}")
            logger.warning("Organization %s not crawled: %s", org.business_name or org.id, exc)

    def _entry_requests(self, org: store.Organization) -> Iterable[Request]:
        progress = self.progress.get(org.id)
        config = progress.config if progress is not None else None
        if config is None:
            return
        assert progress is not None
        progress.budget.pages += 1
        if config.inventory_url:
            yield self._request(org, config.inventory_url, self.parse_page, entry=True)
        else:
            yield self._request(org, config.website, self.parse_home, entry=True)

    def _request(
        self,
        org: store.Organization,
        url: str,
        callback: Any,
        *,
        entry: bool = False,
        render: bool | None = None,
        **meta: Any,
    ) -> Request:
        progress = self.progress.get(org.id)
        if render is None:
            detected = progress is not None and progress.render_js
            configured = (
                progress is not None and progress.config is not None and (progress.config.render_js)
            )
            render = (configured or detected) and self.render_js
        if progress is not None:
            progress.pending += 1
            progress.started = True
        meta = {"org_id": org.id, "entry": entry, "nuke_run": self.run_id, **meta}
        if render:
            meta["playwright"] = True
            # app shells fetch their data after load: wait until the network is quiet
            meta["playwright_page_methods"] = [PageMethod("wait_for_load_state", "networkidle")]
        # dont_filter: de-duplication is ours (per organization, canonical URLs,
        # and the database on resume), so a SIGKILLed JOBDIR's dupefilter can
        # never hide a page whose vehicle was not stored yet. Detail pages first:
        # the vehicles a page links to before more pagination.
        priority = DETAIL_PRIORITY if meta.get("detail") else 0
        return Request(
            url,
            callback=callback,
            errback=self.on_error,
            meta=meta,
            dont_filter=True,
            priority=priority,
        )

    # -- callbacks ---------------------------------------------------------------

    def _progress(self, response_or_request: Response | Request) -> OrgProgress | None:
        return self.progress.get(response_or_request.meta.get("org_id", ""))

    def _done(self, progress: OrgProgress, meta: dict[str, Any]) -> None:
        """A request of ``progress``'s organization is done (its callback or errback
        ran); requests of an earlier run (restored from JOBDIR) were never counted."""
        if meta.get("nuke_run") == self.run_id:
            progress.pending -= 1

    async def parse_home(self, response: Response) -> list[Any]:
        progress = self._progress(response)
        if progress is None:
            return []
        try:
            return await self._parse_home(progress, response)
        finally:
            self._done(progress, response.meta)

    async def _parse_home(self, progress: OrgProgress, response: Response) -> list[Any]:
        if not isinstance(response, TextResponse):
            return []
        progress.pages += 1
        links = discover_inventory_links(response.text, response.url)[:MAX_INVENTORY_ENTRIES]
        # A home page that is itself an inventory (or a vehicle) is parsed too.
        out = await self._parse_page(progress, response)
        if links:
            self._found_inventory(progress)
            for url in links:
                if self._claim_page(progress, url):
                    out.append(self._request(progress.org, url, self.parse_page))
        robots = urljoin(response.url, "/robots.txt")
        out.append(self._request(progress.org, robots, self.parse_robots, render=False))
        return out

    def parse_robots(self, response: Response) -> Iterable[Request]:
        progress = self._progress(response)
        if progress is None:
            return []
        try:
            return list(self._robots_requests(progress, response))
        finally:
            self._done(progress, response.meta)

    def _robots_requests(self, progress: OrgProgress, response: Response) -> Iterable[Request]:
        sitemaps = (
            list(sitemap_urls_from_robots(response.body, base_url=response.url))
            if (isinstance(response, TextResponse))
            else []
        )
        if not sitemaps:
            sitemaps = [urljoin(response.url, "/sitemap.xml")]
        for url in sitemaps:
            if progress.budget.allow_sitemap(url, 0, self.crawler.stats):
                yield self._request(
                    progress.org,
                    url,
                    self.parse_sitemap,
                    render=False,
                    from_robots=True,
                    sitemap_depth=0,
                )

    def parse_sitemap(self, response: Response) -> Iterable[Request]:
        progress = self._progress(response)
        if progress is None:
            return []
        try:
            return list(self._sitemap_requests(progress, response))
        finally:
            self._done(progress, response.meta)

    def _sitemap_requests(self, progress: OrgProgress, response: Response) -> Iterable[Request]:
        try:
            sitemap = Sitemap(response.body)
        except Exception:  # noqa: BLE001 - any unparsable body is "no sitemap"
            sitemap = None
        budget = progress.budget
        budget.seen_sitemap(response.url)
        urls = budget.sitemap_urls(sitemap, self.crawler.stats) if sitemap else []
        if sitemap is not None and sitemap.type == "sitemapindex":
            depth = int(response.meta.get("sitemap_depth", 0)) + 1
            for url in urls:
                if (same_site(url, progress.org.website) or same_site(url, response.url)) and (
                    budget.allow_sitemap(url, depth, self.crawler.stats)
                ):
                    yield self._request(
                        progress.org, url, self.parse_sitemap, render=False, sitemap_depth=depth
                    )
            return
        found = 0
        urls = [url for url in urls if same_site(url, response.url)]
        vehicle_urls = {url for url in urls if looks_like_vehicle_url(url)}
        vehicle_urls |= sibling_vehicle_urls(vehicle_urls, set(urls) - vehicle_urls)
        for url in self._claim_vehicles(progress, [url for url in urls if url in vehicle_urls]):
            found += 1
            yield self._request(progress.org, url, self.parse_page, detail=True)
        if found:
            self._found_inventory(progress)
        elif not progress.inventory_found and self.probe_paths:
            progress.inventory_found = True  # probe once
            # distributed: not once any worker found the inventory (and each path is
            # fetched once across workers: the organization's fingerprints)
            if self.distributed is None or not self.distributed.knows_inventory(progress.org.id):
                for path in COMMON_INVENTORY_PATHS:
                    url = urljoin(response.url, path)
                    if self._claim_page(progress, url):
                        yield self._request(progress.org, url, self.parse_page, probe=True)

    async def parse_page(self, response: Response) -> list[Any]:
        # A coroutine returning a list, not an async generator: Scrapy runs a list
        # through its spider middlewares synchronously, several times cheaper per page.
        progress = self._progress(response)
        if progress is None:
            return []
        progress.pages += 1
        try:
            return await self._parse_page(progress, response)
        finally:
            self._done(progress, response.meta)

    async def _parse_page(self, progress: OrgProgress, response: Response) -> list[Any]:
        if not isinstance(response, TextResponse):
            progress.skipped["not_html"] += 1
            return []
        org = progress.org
        result = await self.workers.call(
            extract_for_crawl,
            response.text,
            response.url,
            selectors=(progress.config.selectors if progress.config else None) or None,
            max_images=self.max_images,
            # pages that lead to more pages (inventory, pagination, home) go first
            priority=0 if response.meta.get("detail") else 10,
        )
        if result.needs_js and not response.meta.get("playwright") and self.render_js:
            progress.render_js = True
            logger.info(
                "%s looks rendered by JavaScript: fetching it through Chromium", response.url
            )
            return [
                self._request(
                    org,
                    response.url,
                    self.parse_page,
                    render=True,
                    detail=bool(response.meta.get("detail")),
                    paged=bool(response.meta.get("paged")),
                )
            ]
        out: list[Any] = []
        if result.vehicle is not None:
            # keyed by the worker with the page (w3lib's canonicalisation is costly)
            item = self._item(
                progress,
                result.vehicle,
                result.url,
                result.canonical_url,
                detail=bool(response.meta.get("detail")),
            )
            if item is not None:
                out.append(item)
        elif (
            result.skip_reason
            and result.skip_reason != "inventory_page"
            and not response.meta.get("probe")
        ):
            progress.skipped[result.skip_reason] += 1
            self._stat(f"nuke/pages/skipped/{result.skip_reason}")
        if self.learner is not None:
            out.extend(await self._learn(progress, response, result))
        if result.skip_reason == "inventory_page":
            self._found_inventory(progress)
            if result.cards_without_url:
                progress.skipped["listing_without_url"] += result.cards_without_url
        seen = len(progress.seen)
        # already in canonical form: their own keys
        for url in self._claim_vehicles(progress, result.vehicle_links, canonical=True):
            out.append(self._request(org, url, self.parse_page, detail=True))
        if result.next_pages and progress.budget.follow_pages(
            bool(response.meta.get("paged")),
            len(progress.seen) - seen,
            self._at_vehicle_cap(progress),
        ):
            taken = 0
            for url in result.next_pages:
                if self._claim_page(progress, url):
                    out.append(self._request(org, url, self.parse_page, paged=True))
                    taken += 1
                    if taken >= MAX_NEXT_PAGES_PER_PAGE:
                        break
        return out

    async def _learn(self, progress: OrgProgress, response: TextResponse, result: Any) -> list[Any]:
        """Selector learning (:mod:`nuke_crawl.spiders.learning`): once a site's detail
        pages gave no vehicle, learned selectors re-read the pages they were learned on."""
        assert self.learner is not None
        adb = None if self.args.dry_run else crawler_database(self.crawler)
        selectors = await self.learner.after_page(
            progress.org,
            progress.vehicles_found,
            response.text,
            response.url,
            result.skip_reason,
            bool(response.meta.get("detail")),
            adb,
        )
        out: list[Any] = []
        for html, url in self.learner.samples(progress.org.id) if selectors else []:
            page = await self.workers.call(
                extract_for_crawl, html, url, selectors=selectors, max_images=self.max_images
            )
            if page.vehicle is not None:
                item = self._item(progress, page.vehicle, page.url, page.canonical_url)
                if item is not None:
                    out.append(item)
        return out

    # -- helpers -----------------------------------------------------------------

    def _claim(self, progress: OrgProgress, url: str, key: str | None = None) -> bool:
        key = key or canonical_listing_url(url)
        if key in progress.seen:
            return False
        progress.seen.add(key)
        return True

    def _claim_page(self, progress: OrgProgress, url: str) -> bool:
        """A listing page not requested yet, within ``NUKE_ORG_MAX_PAGES``."""
        key = canonical_listing_url(url)
        if key in progress.seen:
            return False
        if not progress.budget.allow_page(self.crawler.stats):
            return False
        progress.seen.add(key)
        return True

    def _at_vehicle_cap(self, progress: OrgProgress) -> bool:
        if progress.vehicle_requests >= self.args.max_vehicles or progress.vehicles_capped:
            progress.budget.hit("vehicles", self.args.max_vehicles, self.crawler.stats)
            return True
        return False

    def _claim_vehicles(
        self, progress: OrgProgress, urls: list[str], *, canonical: bool = False
    ) -> list[str]:
        """The vehicle pages among ``urls`` to request, in order: not stored already
        (resumed crawls), not requested yet, within ``max_vehicles``; ``canonical``: the
        URLs are their own keys (:func:`canonical_listing_url`). Distributed, the limit
        holds across workers (:meth:`_claim_shared`)."""
        if self.distributed is not None:
            return self._claim_shared(progress, urls, canonical)
        return [
            url for url in urls if self._claim_vehicle(progress, url, url if canonical else None)
        ]

    def _claim_shared(self, progress: OrgProgress, urls: list[str], canonical: bool) -> list[str]:
        """:meth:`_claim_vehicles` across workers: the pages this worker has not seen go
        to the coordinator in one batch, which gives each a slot of ``max_vehicles``
        unless they are all taken or the page has one already. A page whose slot another
        worker holds is requested here too, once: the organization's fingerprints in
        Redis drop it if that worker pushed it, and fetch it if that worker was killed
        before it could (this page then comes back to a live worker and is read again)."""
        if not urls:
            return []
        # asked even at the cap: a page whose slot a killed worker was given is requested
        candidates: dict[str, str] = {}  # key -> URL
        for url in urls:
            key = url if canonical else canonical_listing_url(url)
            if key in progress.known:
                progress.seen.add(key)
                progress.skipped["already_stored"] += 1
            elif key not in progress.seen and key not in progress.held:
                candidates.setdefault(key, url)
        if not candidates:
            return []
        flags, full = self.distributed.claim_vehicles(
            progress.org.id, list(candidates), self.args.max_vehicles
        )
        claimed = []
        for (key, url), flag in zip(candidates.items(), flags, strict=True):
            if flag == GRANTED:
                progress.seen.add(key)
                progress.vehicle_requests += 1
                claimed.append(url)
            elif flag != REFUSED:
                progress.held.add(key)  # not "added" for the pagination chain
                claimed.append(url)
        if full:
            progress.vehicles_capped = True
            self._at_vehicle_cap(progress)  # in caps_hit
        return claimed

    def _found_inventory(self, progress: OrgProgress) -> None:
        if progress.inventory_found:
            return
        progress.inventory_found = True
        if self.distributed is not None:  # no worker probes the common paths now
            self.distributed.inventory_found(progress.org.id)

    def _claim_vehicle(self, progress: OrgProgress, url: str, key: str | None = None) -> bool:
        if progress.vehicle_requests >= self.args.max_vehicles:
            self._at_vehicle_cap(progress)
            return False
        key = key or canonical_listing_url(url)
        if key in progress.known:
            progress.seen.add(key)
            progress.skipped["already_stored"] += 1
            return False
        if not self._claim(progress, url, key):
            return False
        progress.vehicle_requests += 1
        return True

    def _item(
        self,
        progress: OrgProgress,
        v: dict[str, Any],
        page_url: str,
        key: str,
        *,
        detail: bool = False,
    ) -> VehicleItem | None:
        """The item of the vehicle (:func:`~nuke_crawl.spiders.orgpage.vehicle_payload`)
        of the page at ``page_url`` (``key``: its :func:`canonical_listing_url`;
        ``extract_page`` gives a detail page's vehicle that URL). ``detail``: the page was
        requested as a vehicle page (distributed: it has its slot of ``max_vehicles``;
        another page's vehicle takes one, unless its own page has one)."""
        if progress.vehicles_found >= self.args.max_vehicles:
            progress.skipped["max_vehicles"] += 1
            return None
        if self.distributed is not None and not detail:
            flags, full = self.distributed.claim_vehicles(
                progress.org.id, [key], self.args.max_vehicles
            )
            progress.vehicles_capped = progress.vehicles_capped or full
            if flags[0] == REFUSED:
                progress.skipped["max_vehicles"] += 1
                return None
        progress.seen.add(key)
        progress.vehicles_found += 1
        self._stat("nuke/vehicles/found")
        return VehicleItem(
            organization_id=progress.org.id,
            discovery_url=key,
            listing_url=v["url"] or page_url,
            fields=v["fields"],
            image_urls=v["image_urls"],
            extracted_at=datetime.now(UTC).isoformat(),
            sources=v["sources"],
            extra=v["extra"],
        )

    def _stat(self, key: str, count: int = 1) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(key, count)

    def on_error(self, failure: Failure) -> None:
        request: Request = failure.request  # type: ignore[attr-defined]
        progress = self._progress(request)
        if progress is not None:
            self._done(progress, request.meta)
            if self.stopping:  # cut short by the stop: left for the next run
                progress.interrupted = True
                return
        exc = failure.value
        if isinstance(exc, HttpError):
            reason = f"HTTP {exc.response.status}"
        else:
            reason = f"{type(exc).__name__}: {failure.getErrorMessage() or exc!r}"
        if request.meta.get("from_robots") or request.url.endswith("/robots.txt"):
            return  # no sitemap is not an error
        if request.meta.get("probe"):
            return  # a probed path that does not exist is expected
        self._stat("nuke/pages/errors")
        if progress is None:
            return
        progress.errors.append(f"{request.url}: {reason}")
        if request.meta.get("entry"):
            progress.entry_error = f"{request.url}: {reason}"
            what = (
                "refused by the private-network guard"
                if isinstance(exc, RefusedRequest)
                else "unreachable"
            )
            logger.warning(
                "Organization %s: website %s (%s)",
                progress.org.business_name or progress.org.id,
                what,
                reason,
            )

    # -- closing -------------------------------------------------------------------

    def _on_vehicles_stored(self, outcomes: list[tuple[str, str]]) -> None:
        """The pipeline's :data:`~nuke_crawl.signals.vehicles_stored`: what it wrote."""
        for org_id, outcome in outcomes:
            progress = self.progress.get(org_id)
            if progress is not None:
                progress.written[outcome] += 1

    def summary(self, progress: OrgProgress) -> dict[str, Any]:
        written = progress.written
        return {
            "pages": progress.pages,
            "vehicles_found": progress.vehicles_found,
            "created": written["created"],
            "updated": written["updated"],
            "unchanged": written["unchanged"],
            "failed": written["failed"],
            "skipped": dict(progress.skipped),
            "errors": len(progress.errors),
            "render_js": progress.render_js,
            **progress.budget.summary(),
        } | (
            {"render_js_detected": True}
            if progress.render_js and not (progress.config and progress.config.render_js)
            else {}
        )

    def _is_finished(self, progress: OrgProgress) -> bool:
        """Every request of the organization is done, none cut short by a stop, and
        every vehicle it found has left the database pipeline (its outcomes came back
        through :data:`~nuke_crawl.signals.vehicles_stored` into ``progress.written``)."""
        if not progress.started or progress.pending > 0 or progress.interrupted:
            return False
        return sum(progress.written.values()) >= progress.vehicles_found

    def report_finished(self) -> int:
        """Report (log, stats, database) the organizations finished since the last
        call, while the crawl goes on; return how many are finished in all. Called by
        :class:`~nuke_crawl.spiders.orgwatch.OrgWatch`."""
        if self.distributed is not None:  # its own bookkeeping, across workers
            return int(self.distributed.finished)
        done = 0
        for progress in self.progress.values():
            if progress.reported is not None:
                done += 1
            elif self._is_finished(progress):
                done += 1
                summary = self._report(progress)
                progress.reported = summary
                if not self.args.dry_run:
                    task = asyncio.ensure_future(self._record(progress, summary, True))
                    self._recording.add(task)
                    task.add_done_callback(self._recording.discard)
        return done

    def _report(self, progress: OrgProgress) -> dict[str, Any]:
        """Log the organization's summary and put it in stats; return it."""
        assert self.crawler.stats is not None
        summary = self.summary(progress)
        name = progress.org.business_name or progress.org.website
        caps = summary.get("caps_hit")
        logger.info(
            "Organization %s: %d pages, %d vehicles found, %d created, %d updated, "
            "%d unchanged, skipped %s, %d errors%s%s",
            name,
            summary["pages"],
            summary["vehicles_found"],
            summary["created"],
            summary["updated"],
            summary["unchanged"],
            summary["skipped"] or "nothing",
            summary["errors"],
            f", caps hit {caps}" if caps else "",
            f" ({progress.entry_error})" if progress.entry_error else "",
        )
        org_id = progress.org.id
        for key in ("pages", "vehicles_found", "errors"):
            self.crawler.stats.set_value(f"nuke/org/{org_id}/{key}", summary[key])
        for why, count in progress.skipped.items():
            self.crawler.stats.set_value(f"nuke/org/{org_id}/skipped/{why}", count)
        for outcome, count in progress.written.items():
            self.crawler.stats.set_value(f"nuke/org/{org_id}/vehicles_{outcome}", count)
        return summary

    async def _record(self, progress: OrgProgress, summary: dict[str, Any], finished: bool) -> None:
        try:
            await crawler_database(self.crawler).run(
                store.record_crawl_result,
                progress.org.id,
                summary,
                progress.entry_error,
                finished=finished,
            )
        except DatabaseError as exc:
            logger.error(
                "Could not record the crawl of %s: %s",
                progress.org.business_name or progress.org.website,
                exc,
            )

    async def _on_closed(self, spider: scrapy.Spider, reason: str) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self._recording:
            await asyncio.gather(*list(self._recording))
        assert self.crawler.stats is not None
        for progress in self.progress.values():
            if progress.reported is not None and progress.reported == self.summary(progress):
                continue  # reported when it finished, nothing since
            # "finished" ends only idle runs; after a stop, those whose every request
            # was done are finished too, the rest are selected again by the next run
            finished = reason == "finished" or self._is_finished(progress)
            summary = self._report(progress)
            if not self.args.dry_run and self.distributed is None:
                # distributed: recorded by the worker that finishes its last request
                await self._record(progress, summary, finished)
        self.crawler.stats.set_value("nuke/orgs/crawled", len(self.progress))
        self.crawler.stats.set_value(
            "nuke/orgs/unreachable", sum(1 for p in self.progress.values() if p.entry_error)
        )
        page = self.page_info
        if page is not None:
            next_offset = self.args.offset + page.page_size
            more = next_offset < page.total
            cmd = (
                f"scrapy crawl org -a threshold={self.args.threshold} "
                f"-a limit={self.args.limit} -a offset={next_offset}"
            )
            if more:
                logger.info("More organizations remain (%d in all). Next: %s", page.total, cmd)
            else:
                logger.info("No more organizations after this page (%d in all).", page.total)
            self.crawler.stats.set_value("nuke/orgs/next_offset", next_offset)
            self.crawler.stats.set_value("nuke/orgs/more_remain", more)
