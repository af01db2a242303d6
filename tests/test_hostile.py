"""Hostile sites and bad input (issue 12, part A): the real ``scrapy`` command in a child
process, real local servers counting their hits, real databases."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, REPO, run_scrapy, scrapy_env

from nuke_crawl.db import Database, migrate, store
from nuke_crawl.demo.server import Request, Response, dead_url, serve


class Counting:
    """A site answering one page per path; every request is counted in ``hits``."""

    def __init__(self, pages: dict[str, tuple[int, dict[str, str], bytes]] | None = None):
        self.pages = pages or {}
        self.hits: list[str] = []

    def __call__(self, request: Request) -> Response:
        self.hits.append(request.path)
        status, headers, body = self.pages.get(request.path, (404, {}, b"not found"))
        return Response(status, body=body, headers=headers)


def add_org(db_url: str, url: str, **metadata: Any) -> str:
    database = Database(db_url)
    migrate(database)
    org, _ = store.add_organization(database, url, name="Fixture Motors", metadata=metadata)
    database.close()
    return org.id


def org_metadata(db_url: str, org_id: str) -> dict[str, Any]:
    database = Database(db_url)
    org = store.get_organization(database, org_id)
    database.close()
    assert org is not None
    return org.metadata


# 7. The refusal names the way out


def test_refused_website_names_the_settings_that_allow_it(sqlite_url: str) -> None:
    site = Counting({"/": (200, {}, b"<html><body>home</body></html>")})
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url)
        proc = run_scrapy(
            ["crawl", "org", "-a", "threshold=1", *FAST],
            sqlite_url,
            NUKE_ALLOW_PRIVATE_NETWORKS="0",
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert site.hits == []
    assert "website refused by the private-network guard" in proc.stderr
    error = org_metadata(sqlite_url, org_id)["last_error"]
    for text in (error, proc.stderr):
        assert "NUKE_ALLOW_PRIVATE_NETWORKS=1" in text
        assert "NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS=host:port" in text
    assert "Traceback" not in proc.stderr


# 5. The browser's own requests pass the same guard


def _stats(stderr: str) -> str:
    return stderr[stderr.rfind("Dumping Scrapy stats") :]


@pytest.mark.browser
def test_browser_requests_to_a_blocked_port_are_aborted(sqlite_url: str) -> None:
    blocked = Counting(
        {
            "/style.css": (200, {"Content-Type": "text/css"}, b"body{color:red}"),
            "/script.js": (200, {"Content-Type": "application/javascript"}, b"var a=1;"),
            "/img.png": (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n"),
            "/frame.html": (200, {}, b"<html><body>frame</body></html>"),
            "/fetch": (200, {}, b"{}"),
            "/xhr": (200, {}, b"{}"),
            "/landing": (200, {}, b"<html><body>landing</body></html>"),
        }
    )
    with serve(blocked) as b:
        page = f"""<html><head><link rel="stylesheet" href="{b.url}/style.css">
<script src="{b.url}/script.js"></script></head>
<body><h1>Fixture Motors</h1><img src="{b.url}/img.png">
<iframe src="{b.url}/frame.html"></iframe>
<script>fetch("{b.url}/fetch").catch(function(){{}});
var x = new XMLHttpRequest(); x.open("GET", "{b.url}/xhr"); x.send();</script>
</body></html>""".encode()
        home = Counting({"/": (200, {}, page)})
        redirecting = Counting({"/": (302, {"Location": f"{b.url}/landing"}, b"")})
        with serve(home) as a1, serve(redirecting) as a2:
            add_org(sqlite_url, a1.url, render_js=True)
            add_org(sqlite_url, a2.url, render_js=True)
            allowed = f"127.0.0.1:{a1.port},127.0.0.1:{a2.port}"
            proc = run_scrapy(
                [
                    "crawl",
                    "org",
                    "-a",
                    "threshold=1",
                    "-s",
                    "NUKE_PROBE_COMMON_PATHS=0",
                    "-s",
                    f"NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS={allowed}",
                    *FAST,
                ],
                sqlite_url,
                timeout=240,
                NUKE_ALLOW_PRIVATE_NETWORKS="0",
            )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "/" in home.hits and "/" in redirecting.hits  # both pages went to the browser
    assert "Starting the browser" in proc.stderr
    assert blocked.hits == [], blocked.hits
    stats = _stats(proc.stderr)
    # css, script, image, iframe, fetch, XHR and the redirect target, at least
    refused = int(stats.split("'nuke/netguard/browser/refused': ", 1)[1].split(",", 1)[0])
    assert refused >= 7, stats
    assert "Browser: refusing requests to 127.0.0.1 (loopback)" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[proc.stderr.find("Traceback") - 2000 :][
        :5000
    ]


# 15. What the operator sees


def test_status_on_a_missing_sqlite_file_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "nuke.db"
    proc = run_scrapy(["status"], f"sqlite:///{missing}", timeout=60)
    assert proc.returncode == 2
    assert f"no SQLite database at {missing}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_status_into_a_closed_pipe_ends_without_a_traceback(sqlite_url: str) -> None:
    assert run_scrapy(["migrate"], sqlite_url).returncode == 0
    child = subprocess.Popen(
        [sys.executable, "-m", "scrapy", "status"],
        cwd=REPO,
        env=scrapy_env(sqlite_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before anything is written (`| head`)
    err = child.stderr.read().decode()
    child.wait(timeout=60)
    assert "BrokenPipeError" not in err and "Traceback" not in err, err
    assert child.returncode == 0


def test_image_priority_for_an_unknown_organization_says_so(db_url: str) -> None:
    unknown = str(uuid.uuid4())
    proc = run_scrapy(["image-priority", "5", "--organization-id", unknown], db_url)
    assert proc.returncode == 1
    assert f"no organization with id {unknown}" in proc.stderr
    assert "Traceback" not in proc.stderr
    org_id = add_org(db_url, "https://known.example")
    proc = run_scrapy(["image-priority", "5", "--organization-id", org_id], db_url)
    assert proc.returncode == 0 and "0 vehicles now have" in proc.stdout


# 10. org-import keeps going past bad rows


def test_org_import_skips_each_bad_row_with_its_line_and_reason(
    db_url: str, tmp_path: Path
) -> None:
    lines = [
        b"website,name,type,inventory_url,render_js",
        b"https://one.example,One,,,",
        b"https://extra.example,Extra,dealer,,,surplus",  # 3: an extra column
        b"https://two.example,Tw\xff\xfeo,,,",  # 4: invalid UTF-8
        b"https://big.example," + b"x" * (129 * 1024) + b",,,",  # 5: over 128 KiB
        b"https://nul.example,N\x00UL,,,",  # 6: a NUL byte
        b'https://quote.example,"Unbalanced,,,',  # 7: an unbalanced quote
        b"https://three.example,Three,,,",  # 8: not swallowed by line 7
        b"call us 555-1234,Phone,,,",  # 9: not a URL
        b"N/A,Nothing,,,",  # 10: not a URL
        b"https://four.example,Four,auction,https://four.example/stock,yes",
    ]
    csv_file = tmp_path / "orgs.csv"
    csv_file.write_bytes(b"\n".join(lines) + b"\n")
    proc = run_scrapy(["org-import", str(csv_file)], db_url)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "imported 3 new, 0 already present, 7 skipped" in proc.stdout
    err = proc.stderr
    assert "line 3: skipped: 6 fields, the header has 5" in err
    assert "line 4: skipped: invalid UTF-8" in err
    assert "line 5: skipped: line longer than 128 KiB" in err
    assert "line 6: skipped: a NUL byte" in err
    assert "line 7: skipped: malformed CSV (unbalanced quote)" in err
    assert "line 9: skipped: argument website='call us 555-1234'" in err
    assert "line 10: skipped: argument website='N/A'" in err
    database = Database(db_url)
    names = sorted(
        r["business_name"] for r in database.fetchall("SELECT business_name FROM businesses")
    )
    database.close()
    assert names == ["Four", "One", "Three"]


# 8 and 9. One organization's bad data stays its own


def _site(n: int = 2) -> Counting:
    links = "".join(f'<a class="car" href="/vehicle/{i}">Car {i}</a>' for i in range(n))
    pages: dict[str, tuple[int, dict[str, str], bytes]] = {
        "/": (200, {}, f"<html><body><h1>Fixture</h1>{links}</body></html>".encode()),
    }
    for i in range(n):
        pages[f"/vehicle/{i}"] = (
            200,
            {},
            (
                f"<html><head><title>2001 Porsche 911 Carrera {i}</title></head><body>"
                f"<h1>2001 Porsche 911 Carrera</h1><p class='price'>$40,00{i}</p>"
                f"<p>Mileage: 5{i},000 miles</p></body></html>"
            ).encode(),
        )
    return Counting(pages)


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"inventory_url": 12345}, "inventory_url"),
        ([1, 2], "metadata"),
        ({"selectors": "a.car"}, "selectors"),
        ({"selectors": {"vehicle_link": "a[[car"}}, "selectors.vehicle_link"),
        ({"render_js": "maybe"}, "render_js"),
    ],
    ids=["inventory_url", "metadata_list", "selectors_string", "invalid_css", "render_js"],
)
def test_bad_metadata_is_recorded_on_its_organization_and_the_run_goes_on(
    sqlite_url: str, metadata: Any, field: str
) -> None:
    bad_site, good_site = _site(), _site()
    with serve(bad_site) as bad, serve(good_site) as good:
        database = Database(sqlite_url)
        migrate(database)
        bad_org, _ = store.add_organization(database, bad.url, name="Bad Motors")
        good_org, _ = store.add_organization(database, good.url, name="Good Motors")
        database.execute(
            "UPDATE businesses SET metadata = ? WHERE id = ?", [json.dumps(metadata), bad_org.id]
        )
        database.close()
        proc = run_scrapy(["crawl", "org", "-a", "threshold=1", *FAST], sqlite_url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert bad_site.hits == []
    assert "/vehicle/0" in good_site.hits and "/vehicle/1" in good_site.hits
    database = Database(sqlite_url)
    raw = database.scalar("SELECT metadata FROM businesses WHERE id = ?", [bad_org.id])
    good_count = database.scalar(
        "SELECT COUNT(*) FROM organization_vehicles WHERE organization_id = ?", [good_org.id]
    )
    database.close()
    meta = json.loads(raw) if isinstance(raw, str) else raw
    assert meta["last_error"].startswith(f"invalid_metadata: invalid metadata: {field}: ")
    assert meta["last_crawl"]["errors"] == 1
    if metadata == [1, 2]:
        assert meta["invalid_metadata"] == [1, 2]  # kept, not lost
    assert good_count == 2
    assert f"Organization Bad Motors not crawled: invalid metadata: {field}: " in proc.stderr


def test_string_booleans_are_read_as_booleans(sqlite_url: str) -> None:
    site = _site()
    with serve(site) as server:
        add_org(sqlite_url, server.url, render_js="false")
        proc = run_scrapy(["crawl", "org", "-a", "threshold=1", *FAST], sqlite_url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting the browser" not in proc.stderr
    assert "/vehicle/1" in site.hits


def test_a_website_that_is_not_a_url_is_refused_and_recorded_once(db_url: str) -> None:
    for website in ("call us 555-1234", "N/A"):
        proc = run_scrapy(["org-add", website], db_url)
        assert proc.returncode == 2, proc.stdout
        assert f"argument URL={website!r}: expected an http(s) URL" in proc.stderr
    database = Database(db_url)
    migrate(database)
    ids = []
    for website in ("call us 555-1234", "N/A"):
        org_id = str(uuid.uuid4())
        database.execute(
            "INSERT INTO businesses (id, business_name, website, is_public, metadata, "
            "created_at, updated_at) VALUES (?, ?, ?, true, ?, ?, ?)",
            [org_id, website, website, "{}", database.now(), database.now()],
        )
        ids.append(org_id)
    database.close()
    proc = run_scrapy(["crawl", "org", "-a", "threshold=1", *FAST], db_url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "Retrying" not in proc.stderr and "https://n/" not in proc.stderr
    for org_id, website in zip(ids, ("call us 555-1234", "N/A"), strict=True):
        meta = org_metadata(db_url, org_id)
        assert meta["last_error"] == (f"invalid_website: website {website!r} is not an http(s) URL")
        assert proc.stderr.count(f"Organization {website} not crawled") == 1
    assert "'nuke/orgs/invalid_website': 2" in proc.stderr


@pytest.mark.browser
def test_a_dead_host_of_a_render_js_organization_is_one_line(sqlite_url: str) -> None:
    url = dead_url()
    add_org(sqlite_url, url, render_js=True)
    proc = run_scrapy(["crawl", "org", "-a", "threshold=1", *FAST], sqlite_url, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Starting the browser" in proc.stderr
    lines = [
        line
        for line in proc.stderr.splitlines()
        if ("WARNING" in line or "ERROR" in line) and "ERR_CONNECTION_REFUSED" in line
    ]
    assert len(lines) == 1, lines
    assert "website unreachable" in lines[0]


# 18. The platform's defaults on PostgreSQL


@pytest.mark.postgres
def test_migrate_gives_platform_defaults_and_adds_missing_ones_without_touching_data(
    pg_url: str,
) -> None:
    assert run_scrapy(["migrate"], pg_url).returncode == 0
    org_id = add_org(pg_url, "https://defaults.example")
    vehicle_id = str(uuid.uuid4())
    database = Database(pg_url)
    try:
        database.execute("INSERT INTO vehicles (id) VALUES (?)", [vehicle_id])
        # as another writer on the platform does: no id, no timestamps
        database.execute(
            "INSERT INTO organization_vehicles (organization_id, vehicle_id, "
            "relationship_type, status) VALUES (?, ?, 'seller', 'active')",
            [org_id, vehicle_id],
        )
        row = database.fetchone("SELECT id, created_at, updated_at FROM organization_vehicles")
        assert row is not None and all(row.values()), row
        # an existing table without the defaults (an older schema): added, data untouched
        database.execute("ALTER TABLE organization_vehicles ALTER COLUMN id DROP DEFAULT")
        database.execute("ALTER TABLE vehicle_images ALTER COLUMN created_at DROP DEFAULT")
        database.execute("DELETE FROM nuke_schema_migrations WHERE version = 6")
        before = database.fetchall("SELECT * FROM organization_vehicles")
    finally:
        database.close()
    proc = run_scrapy(["migrate"], pg_url)
    assert proc.returncode == 0 and "(applied 6)" in proc.stdout, proc.stdout
    database = Database(pg_url)
    try:
        assert database.fetchall("SELECT * FROM organization_vehicles") == before
        defaults = {
            (r["table_name"], r["column_name"]): r["column_default"]
            for r in database.fetchall(
                "SELECT table_name, column_name, column_default FROM "
                "information_schema.columns WHERE table_schema = current_schema() "
                "AND column_name IN ('id', 'created_at', 'updated_at')"
            )
        }
    finally:
        database.close()
    assert defaults[("organization_vehicles", "id")] == "gen_random_uuid()"
    assert defaults[("vehicle_images", "created_at")] == "now()"
    for table in ("businesses", "vehicles", "vehicle_images", "image_tags"):
        assert defaults[(table, "id")] == "gen_random_uuid()", table
        assert defaults[(table, "created_at")] == "now()", table


def test_the_browsers_proxy_refuses_and_connects_to_the_checked_address(monkeypatch) -> None:
    """The proxy Chromium goes through: a rebinding DNS answer never reaches a connect."""
    import asyncio
    import socket

    from scrapy.utils.test import get_crawler

    from nuke_crawl.middlewares.browserguard import BrowserRequestGuard, CheckingProxy

    monkeypatch.delenv("NUKE_ALLOW_PRIVATE_NETWORKS", raising=False)
    real = socket.getaddrinfo
    seen: list[str] = []

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            seen.append(host)
            ip = "93.184.215.14" if len(seen) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port)))]
        if host == "nowhere.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    site = Counting({"/": (200, {}, b"ok")})
    crawler = get_crawler()
    crawler.stats.open_spider()

    async def ask(proxy: CheckingProxy, head: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(head.encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    async def main(port: int) -> list[bytes]:
        proxy = CheckingProxy(BrowserRequestGuard(crawler))
        proxy.connect_timeout = 2
        await proxy.start()
        try:
            return [
                await ask(proxy, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n"),
                await ask(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
                await ask(proxy, f"GET http://nowhere.test:{port}/ HTTP/1.1\r\n\r\n"),
                # checked: a public address; a second lookup would say 127.0.0.1
                await ask(proxy, f"GET http://rebind.test:{port}/ HTTP/1.1\r\n\r\n"),
            ]
        finally:
            await proxy.close()

    with serve(site) as server:
        answers = asyncio.run(main(server.port))
    assert [a.split(b"\r\n", 1)[0] for a in answers[:3]] == [b"HTTP/1.1 403 Forbidden"] * 3
    assert not answers[3].startswith(b"HTTP/1.1 200")
    assert site.hits == []
    assert seen == ["rebind.test"]  # resolved once, by the guard
    assert crawler.stats.get_value("nuke/netguard/browser/refused") == 3


def test_the_browsers_proxy_tunnels_and_forwards_for_an_allowed_host(monkeypatch) -> None:
    import asyncio

    from scrapy.utils.test import get_crawler

    from nuke_crawl.middlewares.browserguard import BrowserRequestGuard, CheckingProxy

    monkeypatch.delenv("NUKE_ALLOW_PRIVATE_NETWORKS", raising=False)
    site = Counting({"/a": (200, {}, b"page a"), "/b": (200, {}, b"page b")})

    async def main(port: int) -> tuple[bytes, bytes]:
        crawler = get_crawler(
            settings_dict={"NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS": [f"127.0.0.1:{port}"]}
        )
        proxy = CheckingProxy(BrowserRequestGuard(crawler))
        await proxy.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(
                f"GET http://127.0.0.1:{port}/a HTTP/1.1\r\nHost: x\r\n"
                "Proxy-Connection: keep-alive\r\n\r\n".encode()
            )
            forwarded = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            established = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert established.startswith(b"HTTP/1.1 200")
            writer.write(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            tunnelled = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return forwarded, tunnelled
        finally:
            await proxy.close()

    with serve(site) as server:
        forwarded, tunnelled = asyncio.run(main(server.port))
    assert forwarded.startswith(b"HTTP/1.") and forwarded.endswith(b"page a")
    assert tunnelled.startswith(b"HTTP/1.") and tunnelled.endswith(b"page b")
    assert site.hits == ["/a", "/b"]
