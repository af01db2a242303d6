"""Scrapy settings for nuke_crawl.

Every ``NUKE_*`` setting and its default is listed here, once (and in README.md);
any of them can be given with ``-s NAME=value``. ``DATABASE_URL`` comes from
the environment first, then this setting. Components read their settings with
these values as defaults (``from nuke_crawl import settings as defaults``), so a
crawler built without this module (a test's ``get_crawler``) behaves the same;
no default is written again where a setting is read (tests/test_settings_listed.py
checks both). Scrapy's own settings that components read keep Scrapy's defaults
unless set here: ``BOT_NAME``, ``CONCURRENT_REQUESTS``, ``RETRY_ENABLED``,
``RETRY_HTTP_CODES``, ``RETRY_EXCEPTIONS``, ``DOWNLOADER_MIDDLEWARES``,
``DOWNLOAD_HANDLERS``, ``EXTENSIONS``, the S3 store's ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``,
``AWS_REGION_NAME`` and ``FILES_STORE_S3_ACL``.
"""

from __future__ import annotations

BOT_NAME = "nuke_crawl"
SPIDER_MODULES = ["nuke_crawl.spiders"]
NEWSPIDER_MODULE = "nuke_crawl.spiders"
COMMANDS_MODULE = "nuke_crawl.commands"

# -- database ------------------------------------------------------------------
DATABASE_URL = None  # None: $DATABASE_URL, else sqlite:///nuke.db
NUKE_AUTO_MIGRATE = True  # a spider run on a database without the schema migrates it first
NUKE_DB_BATCH_SIZE = 50  # vehicles written per transaction
NUKE_DB_BATCH_WAIT = 0.5  # seconds a partial batch waits for company before it is written
NUKE_DRY_RUN = False  # count, write nothing (set by a spider's dry_run argument)

# -- politeness ----------------------------------------------------------------
NUKE_USER_AGENT = (
    "nuke_crawl/0.1 (+https://github.com/nuke-crawl/nuke_crawl; vehicle listings crawler)"
)
USER_AGENT = NUKE_USER_AGENT
ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 32
CONCURRENT_REQUESTS_PER_DOMAIN = 4
# Scrapy starts this many worker tasks for every response's output; a page
# yields one vehicle or a few dozen links, and 100 (the default) costs more
# than the page's extraction.
CONCURRENT_ITEMS = 16
DOWNLOAD_DELAY = 0
DOWNLOAD_TIMEOUT = 30
DOWNLOAD_MAXSIZE = 50 * 1024 * 1024
DOWNLOAD_WARNSIZE = 10 * 1024 * 1024
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 2.0
RETRY_TIMES = 3
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
NUKE_BACKOFF_BASE = 1.0
NUKE_BACKOFF_MAX = 60.0
NUKE_RETRY_AFTER_MAX = 300.0
NUKE_SLOWDOWN_MAX_DELAY = 30.0
# Requests to private, loopback, link-local and metadata addresses are refused
# unless this (or the environment variable of the same name) is on.
NUKE_ALLOW_PRIVATE_NETWORKS = False
NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS: list[str] = []

DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "nuke_crawl.middlewares.netguard.PrivateNetworkGuardMiddleware": 40,
    "nuke_crawl.middlewares.backoff.BackoffRetryMiddleware": 550,
}

ITEM_PIPELINES = {
    "nuke_crawl.pipelines.database.VehicleDatabasePipeline": 300,
}

# -- extraction ------------------------------------------------------------------
NUKE_EXTERNAL_IMAGE_RECORDS = True  # one vehicle_images row (is_external) per image URL
NUKE_MAX_IMAGES_PER_VEHICLE = 50
NUKE_PROBE_COMMON_PATHS = True  # try /inventory, /used-vehicles... when nothing links to inventory
# The crawl's worker processes (nuke_crawl.extensions.workers); image_backfill sets its
# own in custom_settings (decoding: nice 0, the image worker module, NUKE_IMAGE_PROCESSES)
NUKE_WORKER_PROCESSES = 1  # processes that extract pages and write vehicles (0: a thread)
NUKE_WORKER_NICE = 10  # their CPU priority below the crawler's (0-19; 0: the same)
NUKE_WORKER_PRELOAD = ["nuke_crawl.spiders.orgpage"]  # modules they import as they start
NUKE_GC_THRESHOLD = 20_000  # allocations between young-generation GC scans (0: Python's 700)

# -- bounds of one organization's crawl in one run (nuke_crawl.spiders.bounds) -------
# Each cap reached is recorded in the organization's metadata.last_crawl.caps_hit.
NUKE_ORG_MAX_PAGES = 1000  # listing pages (home, inventory, pagination, probed paths)
NUKE_ORG_MAX_SITEMAPS = 50  # sitemap files fetched (each once)
NUKE_ORG_MAX_SITEMAP_ENTRIES = 50_000  # URLs read from its sitemaps, in all
NUKE_SITEMAP_MAX_DEPTH = 2  # sitemap index levels followed below those robots.txt names
NUKE_PROGRESS_INTERVAL = 60.0  # seconds between the org crawl's progress lines (0: none)

# -- JavaScript-rendered sites (scrapy-playwright with Debian's chromium) -----------
NUKE_CHROMIUM_PATH = "/usr/bin/chromium"
NUKE_RENDER_JS = True  # render organizations that need it (metadata.render_js or detected)
# The org spider installs scrapy-playwright's download handler for its runs (unless
# NUKE_RENDER_JS is off), in a subclass that starts the Node.js driver and Chromium
# only when a page needs them, with the Browser extension both handlers share; the
# image spiders never start a browser driver.
PLAYWRIGHT_DOWNLOAD_HANDLERS = {
    "http": "nuke_crawl.downloader.browser.LazyPlaywrightDownloadHandler",
    "https": "nuke_crawl.downloader.browser.LazyPlaywrightDownloadHandler",
}
PLAYWRIGHT_BROWSER_TYPE = "chromium"
PLAYWRIGHT_LAUNCH_OPTIONS = {
    "executable_path": NUKE_CHROMIUM_PATH,
    "headless": True,
    "args": [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ],
}
PLAYWRIGHT_MAX_CONTEXTS = 2
PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT = 30_000

TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
LOG_LEVEL = "INFO"
TELNETCONSOLE_ENABLED = False
# Scrapy's remote control (2.16+) serves, in every crawl, an HTTP endpoint on localhost that
# runs the Python code it is sent (its token in a job file under the user's state folder):
# off, as the Telnet console is. True turns it on to look inside a running crawl.
REMOTE_CONTROL_ENABLED = False

EXTENSIONS = {
    # shared services, found with crawler.get_extension(...): the crawl's database
    # handle and its worker processes
    "nuke_crawl.extensions.database.DatabaseExtension": 1,
    "nuke_crawl.extensions.workers.WorkerPoolExtension": 2,
    "nuke_crawl.extensions.quietlog.QuietExpectedErrors": 0,
    "nuke_crawl.extensions.promptclose.PromptClose": 5,
    "nuke_crawl.extensions.gctune.GcTuning": 6,
    "nuke_crawl.extensions.quickstop.QuickStop": 7,  # for spiders with stop_quickly = True
    "nuke_crawl.extensions.handoff.AnalysisHandoff": 10,  # unless NUKE_ANALYZE_AFTER_BACKFILL
    "nuke_crawl.extensions.handoff.BackfillHandoff": 500,  # unless NUKE_TRIGGER_BACKFILL
}

# -- distributed org crawl (nuke_crawl.distributed; docs/scale.md) -----------------
# With a Redis URL (the environment variable NUKE_REDIS_URL first) the org spider keeps
# its requests in Redis (scrapy-redis), takes organizations from `scrapy org-enqueue`
# with -a from_queue=1, and shares per-domain politeness with every other worker.
NUKE_REDIS_URL = None  # e.g. redis://127.0.0.1:6379/0; None: one process, as before
NUKE_REDIS_NAMESPACE = "nuke"  # key prefix: deployments sharing one Redis need their own
NUKE_REDIS_ORGS_PER_WORKER = 8  # organizations a from_queue worker takes on at a time
NUKE_REDIS_HEARTBEAT = 2.0  # seconds between a worker's liveness records
NUKE_REDIS_WORKER_TIMEOUT = 30.0  # a worker silent this long is dead: its requests requeued
# pages waiting for a worker's extraction processes (beyond the 8 each holds) above which
# it pops no more from Redis until they catch up, while other workers are alive; -1: no limit
NUKE_REDIS_BACKLOG = 8

# -- image backfill (scrapy crawl image_backfill; nuke_crawl.pipelines.images) -----------
# The backfill spider sets its own ITEM_PIPELINES in custom_settings; nothing here
# changes the org spider.
IMAGES_STORE = "images"  # a folder, or s3://bucket/prefix (AWS_ENDPOINT_URL for R2/MinIO/Supabase)
NUKE_IMAGES_PUBLIC_URL = None  # base of the public image_url; None: file:// URI / S3 URL
MEDIA_ALLOW_REDIRECTS = True
IMAGES_MIN_WIDTH = 0  # smaller images fail as too_small
IMAGES_MIN_HEIGHT = 0
NUKE_IMAGE_MAX_PIXELS = 50_000_000  # decompression-bomb limit
NUKE_IMAGE_MAX_ATTEMPTS = 5  # transient failures are retried by later runs up to this many times
NUKE_IMAGE_RETRY_BACKOFF = 3600.0  # seconds before the first cross-run retry, doubling
NUKE_IMAGE_LEASE_SECONDS = 600.0  # a claimed vehicle returns to the pool if its worker dies
NUKE_IMAGE_RECORD_WAIT = 0.05  # seconds stored images wait to share one commit
# None: computed when the run starts (a fixed value would not fit every machine or
# CONCURRENT_REQUESTS):
NUKE_IMAGE_PROCESSES = None  # worker processes decoding images (None: the CPU count; 0: threads)
NUKE_IMAGE_MAX_IN_FLIGHT = None  # images handed out at once (None: 2 * CONCURRENT_REQUESTS)
NUKE_IMAGES_FSYNC = True  # fsync local files before recording them
# Variants of each stored image (nuke_crawl.variants): "name:size[:format[:quality]],...",
# e.g. "thumb:320x240:webp,medium:1024:webp"; format webp, avif, jpeg or auto (JPEG, or WebP
# with alpha). The dict form below still reads. On cloudflare-images:// the variants are
# Cloudflare's and none of these is made.
NUKE_IMAGE_VARIANTS = {"thumb": (320, 240)}
# Cloudflare Images store: IMAGES_STORE = "cloudflare-images://<account_id>"
# (nuke_crawl.storage.cloudflare). CF_IMAGES_TOKEN comes from the environment only.
CF_IMAGES_ACCOUNT_HASH = None  # delivery URLs https://imagedelivery.net/<hash>/<id>/<variant>
CF_IMAGES_VARIANT = "public"  # the variant whose delivery URL becomes image_url
CF_IMAGES_API_URL = "https://api.cloudflare.com/client/v4"
CF_IMAGES_RATE_LIMIT = 1200  # API requests per CF_IMAGES_RATE_PERIOD (Cloudflare: 1,200/5 min)
CF_IMAGES_RATE_PERIOD = 300.0
CF_IMAGES_CONCURRENCY = 8  # API requests in flight at once
CF_IMAGES_TIMEOUT = 30.0  # seconds, connect and read
CF_IMAGES_RETRY_TIMES = 4  # retries of a 429, 5xx or connection error (NUKE_BACKOFF_*)
NUKE_TRIGGER_BACKFILL = False  # the org spider starts image_backfill when it closes
NUKE_SCRAPYD_URL = None  # ...through scrapyd's schedule.json instead of a detached process
NUKE_SCRAPYD_PROJECT = None  # scrapyd project; None: BOT_NAME
NUKE_BACKFILL_LOG_FILE = "image_backfill.log"  # the detached run's output (appended)

# -- image analysis (scrapy crawl image_analysis; nuke_crawl.spiders.image_analysis) ----
# Providers: local (always), openai (OPENAI_API_KEY / OPENAI_BASE_URL in the environment),
# rekognition (AWS credentials through boto3). Keys are read from the environment, never
# written here.
NUKE_OPENAI_MODEL = "gpt-4o-mini"
NUKE_OPENAI_TIMEOUT = 60.0  # seconds per request
NUKE_OPENAI_MAX_RETRIES = 3  # 429/5xx/timeouts, exponential backoff, Retry-After honoured
NUKE_OPENAI_BACKOFF_BASE = 1.0
NUKE_OPENAI_IMAGE_DETAIL = "auto"  # vision detail: auto, low (cheaper), high
# -- learned selectors (scrapy crawl org; nuke_crawl.spiders.learning) ------------------------
NUKE_LEARN_SELECTORS = False  # ask the OpenAI-compatible endpoint for a site's selectors, once
NUKE_LEARN_MAX_CALLS = 5  # model calls one run may make (all organizations together)
NUKE_LEARN_MODEL = None  # None: NUKE_OPENAI_MODEL
NUKE_REKOGNITION_MIN_CONFIDENCE = 70.0
NUKE_REKOGNITION_MAX_LABELS = 30
NUKE_ANALYSIS_CONCURRENCY = 10  # images in flight (the spider's `concurrency` argument wins)
NUKE_ANALYSIS_BATCH_SIZE = 50  # images claimed from the database at a time
NUKE_ANALYSIS_LEASE_SECONDS = 900.0  # a claimed image returns to the pool if its worker dies
NUKE_ANALYSIS_MAX_ATTEMPTS = 5  # failed images are retried by later runs up to this many times
NUKE_ANALYSIS_RETRY_BACKOFF = 600.0  # seconds before a failed image's next attempt, doubling
NUKE_ANALYSIS_PREFLIGHT = True  # check the remote providers' credentials before a run
NUKE_ANALYSIS_PROVIDERS = None  # comma list of providers (None: every configured); `-a providers=`
NUKE_ANALYZE_AFTER_BACKFILL = False  # image_backfill hands stored images to image_analysis
NUKE_ANALYSIS_LOG_FILE = "image_analysis.log"  # log of runs started by a hand-off

# -- run reports and webhooks (nuke_crawl.extensions.notify) --------------------------
EXTENSIONS["nuke_crawl.extensions.notify.RunReport"] = 600  # logs the run summary; webhooks
NUKE_WEBHOOK_URLS: list[str] = []  # POST each run's JSON summary here (or a comma list)
NUKE_WEBHOOK_SECRET = None  # signs each POST (X-Nuke-Signature); better set in the env
NUKE_ALERT_FAILURE_RATE = None  # 0-1: an "alert" POST when a run's image failure rate passes it
NUKE_ALERT_MIN_IMAGES = 20  # ...once at least this many images are settled
NUKE_ALERT_CHECK_INTERVAL = 30.0  # seconds between failure-rate checks during a run
NUKE_WEBHOOK_TIMEOUT = 5.0  # seconds per POST attempt
NUKE_WEBHOOK_RETRIES = 3  # retries after a failed POST, with backoff
NUKE_WEBHOOK_BACKOFF = 0.5  # seconds before the first retry, doubling
NUKE_WEBHOOK_DEADLINE = 10.0  # a run's close waits for its webhooks at most this long

# -- the service (scrapy serve; nuke_crawl.service) ------------------------------------
NUKE_ADMIN_TOKEN = None  # Bearer token for write endpoints; read from the environment first
NUKE_SCHEDULES: list[dict[str, object]] = []  # [{"cron": "0 2 * * *", "spider": ..., "args": {}}]
NUKE_SERVICE_LOG_DIR = "service-logs"  # the logs of runs the service starts as processes
NUKE_SERVICE_STATUS_REFRESH = 2.0  # seconds between refreshes of the cached status figures
NUKE_SERVICE_CANCEL_GRACE = 10.0  # a cancelled run still alive then is forced, then killed
