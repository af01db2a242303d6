"""The demo sites and image hosts: served for real on loopback, fetched with urllib."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import extruct
import pytest
from PIL import Image

from nuke_crawl.demo import (
    EDGE_CASES,
    STYLES,
    ImageHost,
    build_site,
    dead_url,
    image_bytes,
    is_valid_vin,
    launch,
    serve,
    vin_check_digit,
)
from nuke_crawl.demo.server import Response
from nuke_crawl.demo.vehicles import CATALOG, corrupt_vin, generate_vehicles

ROOT = Path(__file__).resolve().parents[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


_plain_opener = urllib.request.build_opener(_NoRedirect)


def fetch(url, *, headers=None, method="GET", follow=True, timeout=10.0):
    """(status, headers, body) without raising on HTTP errors."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    opener = urllib.request.build_opener() if follow else _plain_opener
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def text(url, **kwargs):
    status, _, body = fetch(url, **kwargs)
    assert status == 200, (url, status)
    return body.decode("utf-8")


def jsonld_cars(html, base_url):
    data = extruct.extract(html, base_url=base_url, syntaxes=["json-ld"], uniform=True)
    return [d for d in data["json-ld"] if d.get("@type") == "Car"]


@pytest.fixture(scope="module")
def demos():
    """One noisy deployment per style, photos on a separate image host."""
    running = {
        style: launch(
            style,
            n_vehicles=14,
            per_page=6,
            images_per_vehicle=3,
            noise=True,
            seed=7,
            slow_seconds=1.0,
        )
        for style in STYLES
    }
    yield running
    for demo in running.values():
        demo.stop()


@pytest.fixture
def host():
    """A fresh image host (first-time behaviours are per instance)."""
    image_host = ImageHost(slow_seconds=1.0, hotlink_referer="http://dealer.test")
    with serve(image_host) as server:
        yield image_host, server.url


# --- VINs and vehicles ----------------------------------------------------


def test_vin_check_digit_matches_known_vins():
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"
    assert is_valid_vin("1HGCM82633A004352")
    assert is_valid_vin("11111111111111111")
    assert not is_valid_vin("1HGCM82643A004352")
    assert not is_valid_vin("1HGCM82633A00435")  # 16 characters
    assert not is_valid_vin("1HGCM8263OA004352")  # O is never used
    assert not is_valid_vin(None)


def test_generated_vehicles_are_realistic_and_deterministic():
    vehicles = generate_vehicles(300, seed=3)
    assert vehicles == generate_vehicles(300, seed=3)
    assert vehicles != generate_vehicles(300, seed=4)
    models = {(c.make, c.model) for c in CATALOG}
    for v in vehicles:
        assert (v["make"], v["model"]) in models
        assert 1965 <= v["year"] <= 2025
        assert is_valid_vin(v["vin"]) and not is_valid_vin(corrupt_vin(v["vin"]))
        assert 2_000 < v["price"] < 400_000
        assert 0 < v["mileage"] < 500_000
        assert v["title"] == f"{v['year']} {v['make']} {v['model']} {v['trim']}"
    assert len({v["vin"] for v in vehicles}) == 300
    assert min(v["year"] for v in vehicles) < 1975 and max(v["year"] for v in vehicles) > 2018


def test_build_site_is_deterministic_and_lazy():
    a = build_site(
        "jsonld",
        n_vehicles=5000,
        images_per_vehicle=20,
        image_base_urls=["http://127.0.0.2:1", "http://127.0.0.3:1"],
    )
    b = build_site(
        "jsonld",
        n_vehicles=5000,
        images_per_vehicle=20,
        image_base_urls=["http://127.0.0.2:1", "http://127.0.0.3:1"],
    )
    assert a.vehicles == b.vehicles
    path = a.vehicles[4321]["path"]
    assert a[path].body == b[path].body
    urls = [u for v in a.vehicles for u in v["image_urls"]]
    assert len(urls) == len(set(urls)) == 100_000
    hosts = {urllib.parse.urlsplit(u).netloc for u in urls}
    assert hosts == {"127.0.0.2:1", "127.0.0.3:1"}
    with pytest.raises(ValueError, match="unknown style"):
        build_site("flash")


# --- styles -----------------------------------------------------------------


def _crawl_inventory(demo):
    """Follow rel=next from the first inventory page; return (pages, detail links)."""
    url = demo.url_for(demo.site.pages["inventory"])
    pages, links = [], []
    while url:
        html = text(url)
        pages.append(url)
        links += re.findall(r'<h2><a href="([^"]+)"', html)
        match = re.search(r'<a rel="next"[^>]*href="([^"]+)">Next</a>', html)
        url = urllib.parse.urljoin(url, match.group(1)) if match else None
    return pages, links


@pytest.mark.parametrize("style", ["jsonld", "microdata", "plain"])
def test_inventory_pagination_reaches_every_vehicle(demos, style):
    demo = demos[style]
    home = text(demo.url + "/")
    assert f'href="{demo.site.pages["inventory"]}"' in home
    pages, links = _crawl_inventory(demo)
    assert [
        urllib.parse.urlsplit(p).path
        + ("?" + urllib.parse.urlsplit(p).query if urllib.parse.urlsplit(p).query else "")
        for p in pages
    ] == demo.site.inventory_pages
    assert len(pages) == 3  # 14 + 4 noise cards, 6 per page
    expected = {v["path"] for v in demo.site.vehicles}
    expected |= {demo.site.pages["missing_year_make"], demo.site.pages["error_500"]}
    assert set(links) == expected
    second = text(pages[1])
    assert f'<link rel="next" href="{demo.site.inventory_pages[2]}">' in second
    if style == "plain":
        assert demo.site.inventory_pages[1] == "/used-cars/page/2/"
    else:
        assert demo.site.inventory_pages[1] == "/inventory/?page=2"


def test_jsonld_detail_pages_match_ground_truth(demos):
    demo = demos["jsonld"]
    for v in demo.site.vehicles:
        html = text(v["url"])
        (car,) = jsonld_cars(html, demo.url)
        assert car["name"] == v["title"]
        assert car["brand"]["name"] == v["make"] and car["model"] == v["model"]
        assert car["vehicleModelDate"] == str(v["year"])
        assert car["vehicleConfiguration"] == v["trim"]
        assert car["mileageFromOdometer"] == {
            "@type": "QuantitativeValue",
            "value": v["mileage"],
            "unitCode": "SMI",
        }
        assert car["offers"]["price"] == str(v["price"])
        assert car["offers"]["priceCurrency"] == "USD"
        sold = v["sale_status"] == "sold"
        assert car["offers"]["availability"].endswith("SoldOut" if sold else "InStock")
        assert ('<span class="badge sold">SOLD</span>' in html) == sold
        for key, field in [
            ("color", "color"),
            ("bodyType", "body_style"),
            ("fuelType", "fuel_type"),
            ("vehicleTransmission", "transmission"),
        ]:
            assert car[key] == v[field]
        assert car["image"] == v["image_urls"]
        gallery = re.findall(r'<img src="(http[^"]+)"', html)
        assert gallery == v["image_urls"]
        assert car["url"] == v["url"]
        if v["noise"] == "bad_vin":
            assert v["vin"] is None
            assert car["vehicleIdentificationNumber"] == v["shown_vin"]
            assert not is_valid_vin(v["shown_vin"])
        else:
            assert car["vehicleIdentificationNumber"] == v["vin"] and is_valid_vin(v["vin"])


def test_microdata_detail_pages(demos):
    demo = demos["microdata"]
    v = demo.site.vehicles[2]
    html = text(v["url"])
    assert "application/ld+json" not in html
    assert 'itemscope itemtype="https://schema.org/Car"' in html
    (car,) = extruct.extract(html, base_url=demo.url, syntaxes=["microdata"], uniform=True)[
        "microdata"
    ]
    assert car["@type"] == "Car"
    assert car["vehicleIdentificationNumber"] == v["vin"]
    assert car["brand"]["name"] == v["make"]
    assert car["mileageFromOdometer"]["value"] == str(v["mileage"])
    assert car["mileageFromOdometer"]["unitCode"] == "SMI"
    assert car["offers"]["price"] == str(v["price"])
    assert car["image"] == v["image_urls"]
    lazy = re.findall(r'data-src="([^"]+)"', html)
    assert lazy == v["image_urls"][1:]
    assert f'srcset="{v["image_urls"][0]}?w=400 400w' in html


def test_plain_detail_pages_have_no_structured_data(demos):
    demo = demos["plain"]
    forms = set()
    for v in demo.site.vehicles:
        html = text(v["url"])
        assert "ld+json" not in html and "itemscope" not in html
        assert f"<h1>{v['title']}</h1>".replace("'", "&#x27;") in html
        shown_vin = v["vin"] or v["shown_vin"]
        assert (
            f"<th>VIN</th><td>{shown_vin}</td>" in html
            or f"<dt>VIN</dt><dd>{shown_vin}</dd>" in html
        )
        forms.add("table" if "<table" in html else "dl")
        for label in ("Price", "Mileage", "Exterior Color", "Transmission", "Stock #"):
            assert f">{label}</t" in html or f">{label}</d" in html
        assert f"${v['price']:,}" in html and f"{v['mileage']:,} mi" in html
        assert re.findall(r'data-src="([^"]+)"', html) == v["image_urls"]
    assert forms == {"table", "dl"}


def test_sitemap_style_is_found_only_through_robots(demos):
    demo = demos["sitemap"]
    home = text(demo.url + "/")
    assert "inventory" not in home.lower().replace("<title>", "")
    assert not any(v["path"] in home for v in demo.site.vehicles)
    assert fetch(demo.url + "/inventory/")[0] == 404
    robots = text(demo.url + "/robots.txt")
    assert f"Sitemap: {demo.url}/sitemap_index.xml" in robots
    index = text(demo.url + "/sitemap_index.xml")
    children = re.findall(r"<loc>([^<]+)</loc>", index)
    assert f"{demo.url}/sitemap-vehicles.xml" in children
    locs = re.findall(r"<loc>([^<]+)</loc>", text(f"{demo.url}/sitemap-vehicles.xml"))
    assert {v["url"] for v in demo.site.vehicles} <= set(locs)
    v = demo.site.vehicles[0]
    (car,) = jsonld_cars(text(v["url"]), demo.url)
    assert car["vehicleIdentificationNumber"] == v["vin"]


def test_robots_for_every_style(demos):
    for style, demo in demos.items():
        status, headers, body = fetch(demo.url + "/robots.txt")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert body.startswith(b"User-agent: *\nAllow: /")
        assert (b"Sitemap:" in body) == (style == "sitemap")


def test_js_shells_hold_no_vehicle_data(demos):
    demo = demos["js"]
    v = demo.site.vehicles[1]
    inventory = text(demo.url + "/inventory/")
    detail = text(v["url"])
    for html in (inventory, detail):
        assert '<div id="app"' in html and "<script>" in html
        assert '<script type="application/ld+json"' not in html
        assert v["vin"] not in html and v["make"] not in html
    api = json.loads(text(demo.url + "/api/inventory.json?page=2"))
    assert api["page"] == 2 and api["next"] == "/inventory/?page=3"
    state_b64 = re.search(r'data-state="([^"]+)"', detail).group(1)
    state = json.loads(base64.b64decode(state_b64))
    assert state["jsonld"]["vehicleIdentificationNumber"] == v["vin"]
    assert ["VIN", v["vin"]] in state["specs"]


@pytest.mark.browser
def test_js_detail_renders_in_chromium(demos):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed for the browser tests"
    demo = demos["js"]
    v = demo.site.vehicles[0]
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
            v["url"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (car,) = jsonld_cars(dom, demo.url)
    assert car["vehicleIdentificationNumber"] == v["vin"]
    assert car["image"] == v["image_urls"]
    assert f"<dt>VIN</dt><dd>{v['vin']}</dd>" in dom


# --- noise ------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["jsonld", "plain"])
def test_noise_pages(demos, style):
    demo = demos[style]
    site, pages = demo.site, demo.site.pages
    home = text(demo.url + "/")
    assert 'href="/blog/spring-sale/"' in home and 'href="/about/"' in home
    blog = text(demo.url + pages["blog"])
    assert "SUVs" in blog and "miles" in blog and not jsonld_cars(blog, demo.url)
    assert pages["tracking_duplicate"].endswith("?utm_source=x&fbclid=y")
    assert f'href="{pages["tracking_duplicate"].replace("&", "&amp;")}"' in blog
    duplicate = text(demo.url_for(pages["tracking_duplicate"]))
    assert duplicate == text(demo.url_for(pages["tracking_duplicate"].split("?")[0]))
    assert site.hits[pages["tracking_duplicate"]] == 1
    assert fetch(demo.url_for(pages["error_500"]))[0] == 500
    missing = text(demo.url_for(pages["missing_year_make"]))
    assert "Beautiful Convertible" in missing
    assert not re.search(
        r"\b(19[6-9]\d|20[0-2]\d)\b", missing.split("<main>")[1].split("</main>")[0]
    )
    assert text(demo.url + pages["about"])
    sold = [v for v in site.vehicles if v["noise"] == "sold"]
    assert len(sold) == 1 and sold[0]["sale_status"] == "sold"
    assert "SOLD" in text(sold[0]["url"])
    assert len(site.vehicles) == 16
    detail = text(site.vehicles[0]["url"])
    for src, content_type in [
        ("/static/logo.png", "image/png"),
        ("/static/icons/phone-32.png", "image/png"),
        ("/t.gif?e=pageview", "image/gif"),
        ("/static/badges/carfax.svg", "image/svg+xml"),
    ]:
        assert f'src="{src}"' in detail
        status, headers, _ = fetch(demo.url + src)
        assert status == 200 and headers["Content-Type"] == content_type


def test_noise_broken_images_in_galleries(demos):
    site = demos["jsonld"].site
    all_urls = [u for v in site.vehicles for u in v["image_urls"]]
    broken = [u for v in site.vehicles for u in v["broken_image_urls"]]
    assert {u.rsplit("/", 1)[1] for u in broken} == {"404.jpg", "truncated.jpg", "html.jpg"}
    assert set(broken) <= set(all_urls)
    assert any(u.endswith("/edge/hotlink.jpg") for u in all_urls)


# --- images ---------------------------------------------------------------------


def test_photos_are_deterministic_jpegs_of_realistic_size(host):
    image_host, url = host
    first = fetch(url + "/img/s1-10001-1.jpg")
    again = fetch(url + "/img/s1-10001-1.jpg")
    assert first[0] == 200 and first[1]["Content-Type"] == "image/jpeg"
    assert first[2] == again[2]
    assert int(first[1]["Content-Length"]) == len(first[2])
    assert image_host.hits["/img/s1-10001-1.jpg"] == 2
    for key in ("a", "b", "c", "d"):
        data = image_bytes(key)
        assert 50_000 <= len(data) <= 500_000
        assert image_bytes(key) == data
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.size == (1600, 1200) and image.format == "JPEG"
    unique_a, unique_b = image_bytes("a", unique=True), image_bytes("b", unique=True)
    assert unique_a != unique_b and unique_a[:4] == b"\xff\xd8\xff\xfe"
    Image.open(io.BytesIO(unique_a)).load()
    assert fetch(url + "/img/s1-10001-2.jpg")[2] != first[2]  # unique_bytes by default
    small = fetch(url + "/img/320x240/thumb.jpg")[2]
    assert Image.open(io.BytesIO(small)).size == (320, 240)


def test_static_edge_cases(host):
    image_host, url = host
    expected = {
        "png-alpha.png": ("image/png", "PNG", "RGBA"),
        "webp.webp": ("image/webp", "WEBP", "RGB"),
        "gif.gif": ("image/gif", "GIF", "P"),
        "avif.avif": ("image/avif", "AVIF", "RGB"),
        "cmyk.jpg": ("image/jpeg", "JPEG", "CMYK"),
        "exif-rotated.jpg": ("image/jpeg", "JPEG", "RGB"),
        "pixel.gif": ("image/gif", "GIF", "P"),
    }
    for name, (content_type, fmt, mode) in expected.items():
        status, headers, body = fetch(f"{url}/edge/{name}")
        assert (status, headers["Content-Type"]) == (200, content_type), name
        image = Image.open(io.BytesIO(body))
        image.load()
        assert (image.format, image.mode) == (fmt, mode), name
        if name == "exif-rotated.jpg":
            assert image.getexif()[0x0112] == 6
        if name == "pixel.gif":
            assert image.size == (1, 1)
    body = fetch(url + "/edge/truncated.jpg")[2]
    Image.open(io.BytesIO(body)).verify()  # verify() misses truncation...
    with pytest.raises(OSError):
        Image.open(io.BytesIO(body)).load()  # ...load() does not
    status, headers, body = fetch(url + "/edge/html.jpg")
    assert headers["Content-Type"] == "image/jpeg" and body.startswith(b"<!DOCTYPE html>")
    status, headers, body = fetch(url + "/edge/empty.jpg")
    assert (status, headers["Content-Length"], body) == (200, "0", b"")
    body = fetch(url + "/edge/bomb.png")[2]
    assert len(body) < 200_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(body))
    assert fetch(url + "/edge/404.jpg")[0] == 404
    assert fetch(url + "/edge/410.jpg")[0] == 410
    assert fetch(url + "/edge/same-a.jpg")[2] == fetch(url + "/edge/same-b.jpg")[2]
    assert fetch(url + "/edge/nothing-here.jpg")[0] == 404
    assert set(EDGE_CASES) >= set(expected) | {"flaky-500.jpg", "slow.jpg", "hotlink.jpg"}
    assert image_host.hits["/edge/same-a.jpg"] == 1
    assert image_host.hits["/edge/nothing-here.jpg"] == 1
    assert image_host.hits.total() == len(expected) + 9


def test_first_time_failures_then_success(host):
    image_host, url = host
    assert fetch(url + "/edge/flaky-500.jpg")[0] == 500
    status, headers, body = fetch(url + "/edge/flaky-500.jpg")
    assert status == 200 and body[:2] == b"\xff\xd8"
    status, headers, _ = fetch(url + "/edge/rate-limited.jpg")
    assert status == 429 and headers["Retry-After"] == "1"
    assert fetch(url + "/edge/rate-limited.jpg")[0] == 200
    assert image_host.hits["/edge/flaky-500.jpg"] == 2
    assert image_host.hits["/edge/rate-limited.jpg"] == 2


def test_redirect_chain_and_hotlink(host):
    image_host, url = host
    status, headers, _ = fetch(url + "/edge/redirect.jpg", follow=False)
    assert status == 302 and headers["Location"] == url + "/edge/redirect-hop.jpg"
    status, _, body = fetch(url + "/edge/redirect.jpg")
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert image_host.hits["/edge/redirect-hop.jpg"] == 1
    assert image_host.hits["/img/redirect-final.jpg"] == 1
    assert fetch(url + "/edge/hotlink.jpg")[0] == 403
    assert fetch(url + "/edge/hotlink.jpg", headers={"Referer": "http://evil.test/"})[0] == 403
    ok = fetch(url + "/edge/hotlink.jpg", headers={"Referer": "http://dealer.test/vehicle/1/"})
    assert ok[0] == 200 and ok[1]["Content-Type"] == "image/jpeg"


@pytest.mark.serial
def test_slow_image_does_not_block_other_requests(host):
    _, url = host
    start = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        fetch(url + "/edge/slow.jpg", timeout=0.3)
    assert fetch(url + "/edge/pixel.gif")[0] == 200
    assert time.monotonic() - start < 0.9  # answered while slow.jpg still sleeps


def test_head_requests(host):
    _, url = host
    status, headers, body = fetch(url + "/img/head.jpg", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == len(fetch(url + "/img/head.jpg")[2])


def test_site_serves_its_own_images_with_hotlink_protection():
    with launch("plain", n_vehicles=2, image_hosts=0, noise=True) as demo:
        v = demo.site.vehicles[0]
        assert v["image_urls"][0].startswith(demo.url + "/img/")
        assert fetch(v["image_urls"][0])[0] == 200
        hotlink = demo.url + "/edge/hotlink.jpg"
        assert fetch(hotlink)[0] == 403
        assert fetch(hotlink, headers={"Referer": v["url"]})[0] == 200


def test_images_spread_over_loopback_hosts():
    with launch("jsonld", n_vehicles=3, images_per_vehicle=4, image_hosts=3) as demo:
        hosts = {urllib.parse.urlsplit(u).hostname for u in demo.image_urls}
        assert len(set(demo.image_urls)) == 3
        used = {
            urllib.parse.urlsplit(u).netloc for v in demo.site.vehicles for u in v["image_urls"]
        }
        assert used == {urllib.parse.urlsplit(u).netloc for u in demo.image_urls}
        if sys.platform == "linux":
            assert hosts == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}


# --- server ---------------------------------------------------------------------


def test_dead_url_refuses_connections():
    url = dead_url()
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(url + "/", timeout=2)
    assert isinstance(info.value.reason, ConnectionRefusedError)


def test_keep_alive_and_stop_closes_connections():
    server = serve(lambda request: Response(body=request.target.encode()))
    conn = http.client.HTTPConnection(server.host, server.port, timeout=2)
    for n in range(3):
        conn.request("GET", f"/n/{n}")
        response = response_ = conn.getresponse()
        assert response_.read() == f"/n/{n}".encode()
        assert response.version == 11
    server.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/again")
        conn.getresponse().read()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/", timeout=1)


@pytest.mark.serial
def test_throughput_500_requests_over_8_threads(demos):
    demo = demos["jsonld"]
    urls = [v["url"] for v in demo.site.vehicles] + [
        u for v in demo.site.vehicles for u in v["image_urls"] if "/img/" in u
    ]
    work = [urls[i % len(urls)] for i in range(500)]
    for url in urls:  # draw the pool pictures first: time the serving, not Pillow
        if "/img/" in url:
            image_bytes(url.rsplit("/", 1)[1].removesuffix(".jpg"))
    lock = threading.Lock()
    digests: dict[str, set[str]] = {}

    def get(url):
        status, _, body = fetch(url)
        with lock:
            digests.setdefault(url, set()).add(hashlib.sha256(body).hexdigest())
        return status

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(get, work))
    elapsed = time.monotonic() - start
    assert statuses == [200] * 500
    assert all(len(d) == 1 for d in digests.values())  # same URL, same bytes
    assert elapsed < 4, f"500 requests took {elapsed:.1f}s"


def test_cli_prints_the_url_first(tmp_path):
    url_file = tmp_path / "url"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nuke_crawl.demo",
            "serve",
            "--style",
            "plain",
            "--vehicles",
            "3",
            "--noise",
            "--image-hosts",
            "1",
            "--url-file",
            str(url_file),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", first)
        assert url_file.read_text().strip() == first
        assert "Used cars for sale" in text(first + "/used-cars/")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
