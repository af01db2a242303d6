"""``scrapy serve``: the image processor as an HTTP service (see :mod:`nuke_crawl.service`)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from pathlib import Path

from scrapy.exceptions import UsageError

from nuke_crawl import settings as defaults
from nuke_crawl.cli.base import DatabaseCommand
from nuke_crawl.db import database_url, redact_url
from nuke_crawl.extensions.handoff import (
    absolute_database_url,
    forwarded_settings,
    scrapyd_settings,
)

logger = logging.getLogger(__name__)

DEFAULT_PORT = 6810


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Command(DatabaseCommand):
    default_settings = {"LOG_LEVEL": "INFO"}

    def syntax(self) -> str:
        return "[--host HOST] [--port PORT] [--schedules FILE]"

    def short_desc(self) -> str:
        return "Serve the image processor's HTTP API and admin page (jobs, schedules)"

    def long_desc(self) -> str:
        return (
            "Starts the HTTP service on DATABASE_URL: a JSON API (image status, process / "
            "analyse images, crawl organizations, jobs, organizations, failures, vehicles), "
            "an admin page at /, and cron schedules (NUKE_SCHEDULES or --schedules). Write "
            "endpoints need 'Authorization: Bearer <NUKE_ADMIN_TOKEN>' (set it in the "
            "environment); without a token the service listens on loopback only and refuses "
            "writes. Runs go through scrapyd when NUKE_SCRAPYD_URL is set, else as "
            "supervised 'scrapy crawl' processes logged under NUKE_SERVICE_LOG_DIR."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
        )
        parser.add_argument(
            "--port",
            type=int,
            default=DEFAULT_PORT,
            help=f"port to listen on (default {DEFAULT_PORT}; 0: any free one)",
        )
        parser.add_argument(
            "--schedules",
            metavar="FILE",
            type=Path,
            help="cron schedules (JSON or TOML); replaces NUKE_SCHEDULES",
        )
        parser.add_argument(
            "--job-setting",
            metavar="NAME=VALUE",
            action="append",
            default=[],
            help="a setting given to every run the service starts (repeatable)",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        import uvicorn
        from scrapy.utils.log import configure_logging

        from nuke_crawl.distributed import keys_from_settings, redact_redis_url, redis_url
        from nuke_crawl.service.app import OrgQueue, ServiceConfig, create_app
        from nuke_crawl.service.jobs import RunnerConfig
        from nuke_crawl.service.schedules import (
            ScheduleError,
            load_schedules_file,
            parse_schedules,
        )

        assert self.settings is not None
        settings = self.settings
        if args:
            raise UsageError("serve takes no positional arguments")
        if not 0 <= opts.port <= 65535:
            raise UsageError(f"--port {opts.port}: expected 0-65535", print_help=False)
        token = os.environ.get("NUKE_ADMIN_TOKEN") or settings.get("NUKE_ADMIN_TOKEN") or None
        if not token and not is_loopback(opts.host):
            raise UsageError(
                f"--host {opts.host}: without NUKE_ADMIN_TOKEN the service listens on "
                "loopback only (127.0.0.1, ::1); set the token in the environment to listen "
                "on other addresses",
                print_help=False,
            )
        try:
            if opts.schedules:
                schedules = load_schedules_file(opts.schedules)
            else:
                schedules = parse_schedules(settings.get("NUKE_SCHEDULES"))
        except ScheduleError as exc:
            raise UsageError(str(exc), print_help=False) from None
        job_settings = forwarded_settings(settings)
        for item in opts.job_setting:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise UsageError(f"--job-setting {item!r}: expected NAME=VALUE", print_help=False)
            if name.strip() in ("NUKE_ADMIN_TOKEN", "DATABASE_URL"):
                raise UsageError(f"--job-setting {name}: not a run setting", print_help=False)
            job_settings[name.strip()] = value

        configure_logging(settings)  # the service's own messages (runs started, ended...)
        db = self.open_database()  # checks the URL and migrates, like every command
        db.close()
        url = absolute_database_url(database_url(settings))
        store = str(settings.get("IMAGES_STORE") or "")
        images_dir = None
        if store and ("://" not in store or store.startswith("file://")):
            images_dir = Path(store.removeprefix("file://")).expanduser().absolute()
        scrapyd_url = settings.get("NUKE_SCRAPYD_URL") or None
        runner = RunnerConfig(
            database_url=url,
            log_dir=Path(settings.get("NUKE_SERVICE_LOG_DIR") or "service-logs").absolute(),
            cwd=Path.cwd(),
            settings=job_settings,
            scrapyd_url=scrapyd_url,
            scrapyd_project=str(settings.get("NUKE_SCRAPYD_PROJECT") or settings.get("BOT_NAME")),
            scrapyd_settings={**job_settings, **scrapyd_settings(settings)} if scrapyd_url else {},
            cancel_grace=settings.getfloat(
                "NUKE_SERVICE_CANCEL_GRACE", defaults.NUKE_SERVICE_CANCEL_GRACE
            ),
        )
        queue_url = redis_url(settings)  # crawl-organizations queues for org workers
        config = ServiceConfig(
            database_url=url,
            runner=runner,
            token=token,
            schedules=schedules,
            images_dir=images_dir,
            refresh=settings.getfloat(
                "NUKE_SERVICE_STATUS_REFRESH", defaults.NUKE_SERVICE_STATUS_REFRESH
            ),
            org_queue=OrgQueue(queue_url, keys_from_settings(settings).org_queue)
            if queue_url
            else None,
        )
        app = create_app(config)

        family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((opts.host.strip("[]"), opts.port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {opts.host}:{opts.port}: {exc.strerror}", print_help=False
            ) from None
        port = sock.getsockname()[1]
        shown = f"[{opts.host}]" if ":" in opts.host else opts.host
        print(
            f"nuke_crawl service on http://{shown}:{port}/ (database {redact_url(url)}, "
            f"runs via {'scrapyd ' + redact_url(scrapyd_url) if scrapyd_url else 'processes'}"
            f", writes {'need the admin token' if token else 'disabled: no NUKE_ADMIN_TOKEN'}"
            f", {len(schedules)} schedule(s)"
            f"{', organizations queued in ' + redact_redis_url(queue_url) if queue_url else ''})",
            flush=True,
        )
        level = str(settings.get("LOG_LEVEL") or "INFO").lower()
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning" if level == "warning" else "info",
                access_log=level == "debug",
                lifespan="on",
                server_header=False,
            )
        )
        server.run(sockets=[sock])
