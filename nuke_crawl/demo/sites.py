"""Generated dealer websites in five styles, with ground truth.

:func:`build_site` returns a :class:`Site`: a mapping from request targets
(path plus query string) to :class:`~nuke_crawl.demo.server.Response` that is
also an app for :func:`~nuke_crawl.demo.server.serve`. Pages are rendered on
first access and cached, so a 5,000-vehicle site builds in a fraction of a
second. Links are root-relative; absolute URLs (canonical links, JSON-LD
``url``, sitemaps, robots.txt, self-served images) are written with the base
URL of the request's ``Host`` header, so a site works on any address.

Styles (detail paths ``/vehicle/<year>-<make>-<model>-<id>/`` unless noted):

- ``jsonld``: ``/`` -> ``/inventory/``, ``/inventory/?page=N`` (``rel=next``
  link and a "Next" anchor); detail pages carry a schema.org ``Car`` JSON-LD
  and a visible ``<img>`` gallery. Every page also has an ``AutoDealer`` JSON-LD.
- ``microdata``: the same pages with ``itemscope itemtype=".../Car"`` microdata
  and no JSON-LD; gallery images lazy (``data-src``, ``data-srcset``) except the
  hero, whose ``src``/``srcset`` carry ``?w=`` resizing parameters.
- ``plain``: no structured data: ``<h1>`` title, a label/value ``<table>``
  (even ids) or ``<dl>`` (odd ids), ``data-src`` images; inventory at
  ``/used-cars/``, ``/used-cars/page/N/``; details ``/used-cars/<slug>-<id>.html``.
- ``sitemap``: no inventory pages; robots.txt names ``/sitemap_index.xml``,
  which points at ``/sitemap-vehicles.xml`` (every detail page) and
  ``/sitemap-pages.xml``; detail pages as in ``jsonld``.
- ``js``: app shells. ``/inventory/?page=N`` fetches ``/api/inventory.json?page=N``;
  detail pages hold their data base64-encoded in ``<div id="app" data-state>``;
  inline scripts build the cards, the visible label/value list, the gallery
  and a JSON-LD script element. Only a browser sees vehicles.

``noise=True`` adds (see :attr:`Site.pages` for their paths): a sold car (SOLD
badge, ``SoldOut``), a vehicle showing a VIN with a wrong check digit (ground
truth ``vin`` None, ``shown_vin`` set), a page without year and make, a
detail link answering 500, a blog post with car words and a tracking-parameter
link to a real vehicle, an about page, a logo, an icon, a tracking pixel and an
SVG badge among page images, and edge-case image URLs in some galleries
(``broken_image_urls`` lists those that cannot succeed).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageDraw

from nuke_crawl.demo.images import HitCounter, ImageHost
from nuke_crawl.demo.server import Request, Response
from nuke_crawl.demo.vehicles import corrupt_vin, generate_vehicles, slugify

__all__ = ["BASE", "STYLES", "Site", "build_site"]

STYLES = ("jsonld", "microdata", "plain", "sitemap", "js")

#: Placeholder for the site's own base URL inside stored bodies.
BASE = "{{BASE}}"

_HTML = "text/html; charset=utf-8"
_PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
_DEALERS = (
    "Riverside Motors",
    "Heritage Classic Cars",
    "Summit Auto Sales",
    "Lakeshore Pre-Owned",
    "Redline Motorcars",
    "Prairie Auto Group",
)
_TRACKING_QUERY = "?utm_source=x&fbclid=y"
# Edge cases appended to galleries under noise, and whether a careful
# downloader can get a usable image from them.
_NOISE_EDGES = (
    ("404.jpg", False),
    ("truncated.jpg", False),
    ("html.jpg", False),
    ("redirect.jpg", True),
    ("hotlink.jpg", True),
    ("flaky-500.jpg", True),
    ("rate-limited.jpg", True),
    ("same-a.jpg", True),
    ("same-b.jpg", True),
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _money(amount: int) -> str:
    return f"${amount:,}"


def _jsonld_script(data: object) -> str:
    text = json.dumps(data, indent=1, ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/ld+json">\n{text}\n</script>'


def _abs(url: str) -> str:
    """Root-relative URLs become absolute through the base placeholder."""
    return BASE + url if url.startswith("/") else url


class Site(Mapping[str, Response]):
    """A generated dealer site: a mapping of targets to responses, an app for
    ``serve()``, and the ground truth of what it lists.

    Attributes:
        style, seed, noise, dealer: how it was built.
        vehicles: ground-truth dicts of every vehicle a crawler should store
            (regular ones, then under noise the sold one and the bad-VIN one):
            id, title, year, make, model, trim, vin, stock_number, price,
            currency, mileage, mileage_unit, color, interior_color,
            transmission, drivetrain, body_style, fuel_type, engine,
            description, sale_status ("for_sale"/"sold"), path, url (None
            until bound), image_urls, broken_image_urls, noise (None, "sold",
            "bad_vin"), and shown_vin for the bad-VIN vehicle.
        pages: role -> path of notable pages: home, robots, and when present
            inventory, sitemap, blog, about, contact, sold, bad_vin,
            missing_year_make, error_500, tracking_duplicate.
        inventory_pages: the inventory page paths in order.
        images: the ImageHost serving ``/img/`` and ``/edge/`` when the site
            was built without ``image_base_urls`` (else None).
        hits: requests per target (path with query string).
        base_url: set by ``bind()`` (``serve()`` calls it).
    """

    def __init__(
        self,
        style: str,
        *,
        seed: int,
        noise: bool,
        dealer: str,
        image_base_urls: Sequence[str],
    ) -> None:
        self.style = style
        self.seed = seed
        self.noise = noise
        self.dealer = dealer
        self.image_base_urls = [u.rstrip("/") for u in image_base_urls]
        self.vehicles: list[dict[str, Any]] = []
        self.pages: dict[str, str] = {}
        self.inventory_pages: list[str] = []
        self.images: ImageHost | None = None if self.image_base_urls else ImageHost()
        self.hits = HitCounter()
        self.base_url: str | None = None
        self._routes: dict[str, Callable[[], Response]] = {}
        self._cache: dict[str, Response] = {}
        # id -> (photo URLs, broken photo URLs), with the base placeholder
        self._raw_images: dict[int, tuple[list[str], list[str]]] = {}
        self._lock = threading.Lock()

    # --- Mapping -----------------------------------------------------------

    def _stored(self, target: str) -> Response | None:
        cached = self._cache.get(target)
        if cached is not None:
            return cached
        render = self._routes.get(target)
        if render is None:
            return None
        response = render()
        with self._lock:
            return self._cache.setdefault(target, response)

    def resolve(self, target: str, base: str) -> Response | None:
        """The response for ``target`` with the base placeholder filled in.
        Unknown query strings fall back to the bare path (as most servers do)."""
        response = self._stored(target)
        if response is None and "?" in target:
            response = self._stored(target.split("?", 1)[0])
        if response is None:
            return None
        if response.content_type.startswith(("text/", "application/")):
            marker = BASE.encode()
            if marker in response.body:
                return Response(
                    status=response.status,
                    content_type=response.content_type,
                    body=response.body.replace(marker, base.encode()),
                    headers=dict(response.headers),
                    delay=response.delay,
                )
        return response

    def __getitem__(self, target: str) -> Response:
        response = self.resolve(target, self.base_url or "")
        if response is None:
            raise KeyError(target)
        return response

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    # --- app ---------------------------------------------------------------

    def bind(self, url: str) -> None:
        """Record the URL the site is served at: fills ``vehicle["url"]``,
        makes self-served image URLs absolute and arms the hotlink check."""
        self.base_url = url.rstrip("/")
        for vehicle in self.vehicles:
            vehicle["url"] = self.base_url + vehicle["path"]
            photos, broken = self._raw_images[vehicle["id"]]
            vehicle["image_urls"] = [self._image_url(u) for u in photos]
            vehicle["broken_image_urls"] = [self._image_url(u) for u in broken]
        if self.images is not None:
            self.images.hotlink_referer = self.base_url

    def url(self, path: str) -> str:
        """An absolute URL for a path of this site (once bound)."""
        if self.base_url is None:
            raise RuntimeError("the site is not served yet: serve(site) binds it")
        return self.base_url + path

    def _image_url(self, raw: str) -> str:
        return raw.replace(BASE, self.base_url or "")

    def __call__(self, request: Request) -> Response:
        self.hits.hit(request.target)
        path = urlsplit(request.target).path
        if self.images is not None and path.startswith(("/img/", "/edge/")):
            return self.images(request)
        host = request.header("Host")
        base = f"http://{host}" if host else (self.base_url or "")
        response = self.resolve(request.target, base)
        if response is None:
            return _not_found(self.dealer)
        return response

    def __repr__(self) -> str:
        return f"<Site {self.style} {len(self.vehicles)} vehicles {self.base_url or 'unbound'}>"


def _not_found(dealer: str) -> Response:
    body = f"<!DOCTYPE html><html><head><title>Page not found | {_e(dealer)}</title></head>"
    body += '<body><h1>Page not found</h1><p><a href="/">Home</a></p></body></html>'
    return Response(status=404, content_type=_HTML, body=body.encode())


# --- static assets ----------------------------------------------------------


@functools.cache
def _logo_png() -> bytes:
    image = Image.new("RGB", (360, 90), (18, 40, 74))
    draw = ImageDraw.Draw(image)
    draw.rectangle([10, 10, 80, 80], fill=(230, 57, 70))
    draw.text((100, 35), "DEALER LOGO", fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@functools.cache
def _icon_png() -> bytes:
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse([4, 4, 28, 28], fill=(40, 160, 80, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


_BADGE_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40" viewBox="0 0 120 40">'
    b'<rect width="120" height="40" rx="6" fill="#1d4ed8"/>'
    b'<text x="60" y="26" font-size="16" text-anchor="middle" fill="#fff">CARFAX</text></svg>\n'
)
_CSS = (
    b"body{font-family:sans-serif;margin:0}header,footer{background:#12284a;color:#fff;"
    b"padding:1em}header a,footer a{color:#fff;margin-right:1em}main{padding:1em}"
    b".vehicle-card{display:inline-block;width:300px;margin:1em;vertical-align:top}"
    b".vehicle-card img,.gallery img{max-width:100%}.badge.sold{background:#c00;color:#fff;"
    b"padding:.2em .5em}.gallery img{width:300px}\n"
)
_PIXEL_GIF = base64.b64decode(_PLACEHOLDER.split(",", 1)[1])


# --- the builder ----------------------------------------------------------------


class _Builder:
    """Fills a Site: ground truth first, then routes that render lazily."""

    def __init__(self, site: Site, n_vehicles: int, per_page: int, images_per_vehicle: int):
        self.site = site
        self.style = site.style
        self.noise = site.noise
        self.per_page = per_page
        self.images_per_vehicle = images_per_vehicle
        self.cards: list[dict[str, Any]] = []
        self.details: dict[str, dict[str, Any]] = {}
        self._build_truth(n_vehicles)

    # ground truth ---------------------------------------------------------

    def _detail_path(self, slug: str, vid: int) -> str:
        if self.style == "plain":
            return f"/used-cars/{slug}-{vid}.html"
        return f"/vehicle/{slug}-{vid}/"

    def _photo_urls(self, index: int, vid: int) -> list[str]:
        bases = self.site.image_base_urls
        urls = []
        for j in range(self.images_per_vehicle):
            base = bases[(index * self.images_per_vehicle + j) % len(bases)] if bases else BASE
            urls.append(f"{base}/img/s{self.site.seed}-{vid}-{j + 1}.jpg")
        return urls

    def _edge_url(self, name: str) -> str:
        bases = self.site.image_base_urls
        return f"{bases[0] if bases else BASE}/edge/{name}"

    def _build_truth(self, n: int) -> None:
        site = self.site
        extra = 4 if self.noise else 0
        drawn = generate_vehicles(n + extra, site.seed)
        regular, spare = drawn[:n], drawn[n:]
        for index, vehicle in enumerate(drawn):
            slug = slugify(f"{vehicle['year']} {vehicle['make']} {vehicle['model']}")
            vehicle["path"] = self._detail_path(slug, vehicle["id"])
            vehicle["url"] = None
            vehicle["noise"] = None
            site._raw_images[vehicle["id"]] = (self._photo_urls(index, vehicle["id"]), [])
        if self.noise and regular:
            for i, (name, usable) in enumerate(_NOISE_EDGES):
                target = regular[(i + 1) % len(regular)]
                url = self._edge_url(name)
                photos, broken = site._raw_images[target["id"]]
                photos.append(url)
                if not usable:
                    broken.append(url)
        truth = list(regular)
        if self.noise:
            sold, bad_vin, missing, unreachable = spare
            sold["sale_status"] = "sold"
            sold["noise"] = "sold"
            bad_vin["noise"] = "bad_vin"
            bad_vin["shown_vin"] = corrupt_vin(bad_vin["vin"])
            bad_vin["vin"] = None
            truth += [sold, bad_vin]
            self._missing = missing
            missing["title"] = "Beautiful Convertible - Must See!"
            missing["description"] = (
                "Head-turning convertible, runs and drives great, new top and tires. "
                "Cash or financing, trades welcome."
            )
            missing["path"] = self._detail_path("beautiful-convertible-must-see", missing["id"])
            self._broken_path = self._detail_path("2001-ford-ranger", unreachable["id"])
        for vehicle in truth:
            photos, broken = site._raw_images[vehicle["id"]]
            vehicle["image_urls"] = [site._image_url(u) for u in photos]
            vehicle["broken_image_urls"] = [site._image_url(u) for u in broken]
        site.vehicles = truth

        # Inventory order: noise entries early, so page 1 shows them.
        cards: list[dict[str, Any]] = [self._card(v) for v in regular]
        if self.noise:
            extras = [
                self._card(sold),
                {
                    "path": self._broken_path,
                    "title": "2001 Ford Ranger XLT",
                    "price": 7995,
                    "mileage": 143210,
                    "image": None,
                    "sold": False,
                },
                self._card(bad_vin),
                {**self._card(missing), "title": missing["title"]},
            ]
            for offset, card in enumerate(extras):
                cards.insert(min(1 + 2 * offset, len(cards)), card)
            site.pages.update(
                sold=sold["path"],
                bad_vin=bad_vin["path"],
                missing_year_make=missing["path"],
                error_500=self._broken_path,
                tracking_duplicate=(regular[0]["path"] if regular else sold["path"])
                + _TRACKING_QUERY,
                blog="/blog/spring-sale/",
                about="/about/",
            )
        self.cards = cards

    def _card(self, v: dict[str, Any]) -> dict[str, Any]:
        photos = self.site._raw_images[v["id"]][0]
        return {
            "path": v["path"],
            "title": v["title"],
            "price": v["price"],
            "mileage": v["mileage"],
            "image": photos[0] if photos else None,
            "sold": v["sale_status"] == "sold",
        }

    # routes -------------------------------------------------------------

    def build(self) -> None:
        site = self.site
        routes = site._routes
        site.pages["home"] = "/"
        site.pages["robots"] = "/robots.txt"
        site.pages["contact"] = "/contact/"
        routes["/"] = self._home
        routes["/robots.txt"] = self._robots
        routes["/contact/"] = self._contact
        routes["/static/site.css"] = lambda: Response(content_type="text/css", body=_CSS)
        if self.noise:
            routes["/about/"] = self._about
            routes["/blog/spring-sale/"] = self._blog
            routes["/static/logo.png"] = lambda: Response(
                content_type="image/png", body=_logo_png()
            )
            routes["/static/icons/phone-32.png"] = lambda: Response(
                content_type="image/png", body=_icon_png()
            )
            routes["/static/badges/carfax.svg"] = lambda: Response(
                content_type="image/svg+xml", body=_BADGE_SVG
            )
            routes["/t.gif"] = lambda: Response(
                content_type="image/gif",
                body=_PIXEL_GIF,
                headers={"Cache-Control": "no-store"},
            )
            routes[self._broken_path] = lambda: Response(
                status=500,
                content_type=_HTML,
                body=b"<html><body><h1>500 Internal Server Error</h1></body></html>",
            )
            routes[self._missing["path"]] = functools.partial(self._detail, self._missing)
        for vehicle in site.vehicles:
            routes[vehicle["path"]] = functools.partial(self._detail, vehicle)
        self._inventory_routes()
        if self.style == "sitemap":
            site.pages["sitemap"] = "/sitemap_index.xml"
            routes["/sitemap_index.xml"] = self._sitemap_index
            routes["/sitemap-vehicles.xml"] = self._sitemap_vehicles
            routes["/sitemap-pages.xml"] = self._sitemap_pages
        if self.style == "js":
            for vehicle in [*site.vehicles, *([self._missing] if self.noise else [])]:
                routes[f"/api/vehicles/{vehicle['id']}.json"] = functools.partial(
                    self._api_vehicle, vehicle
                )

    def _inventory_paths(self) -> list[str]:
        pages = max(1, -(-len(self.cards) // self.per_page))
        if self.style == "sitemap":
            return []
        if self.style == "plain":
            return ["/used-cars/"] + [f"/used-cars/page/{n}/" for n in range(2, pages + 1)]
        return ["/inventory/"] + [f"/inventory/?page={n}" for n in range(2, pages + 1)]

    def _inventory_routes(self) -> None:
        site = self.site
        paths = self._inventory_paths()
        site.inventory_pages = paths
        if not paths:
            return
        site.pages["inventory"] = paths[0]
        for number, path in enumerate(paths, start=1):
            site._routes[path] = functools.partial(self._inventory, number, paths)
            if self.style == "js":
                api = functools.partial(self._api_inventory, number, paths)
                site._routes[f"/api/inventory.json?page={number}"] = api
                if number == 1:
                    site._routes["/api/inventory.json"] = api
        if self.style == "plain":
            site._routes["/used-cars/page/1/"] = functools.partial(self._inventory, 1, paths)

    # layout -------------------------------------------------------------

    def _dealer_jsonld(self) -> str:
        return _jsonld_script(
            {
                "@context": "https://schema.org",
                "@type": "AutoDealer",
                "name": self.site.dealer,
                "url": BASE + "/",
                "telephone": "+1-555-010-2030",
                "address": {
                    "@type": "PostalAddress",
                    "streetAddress": "1200 Market St",
                    "addressLocality": "Springfield",
                    "addressRegion": "IL",
                    "postalCode": "62701",
                    "addressCountry": "US",
                },
            }
        )

    def _page(
        self,
        title: str,
        body: str,
        *,
        head: str = "",
        canonical: str | None = None,
        status: int = 200,
    ) -> Response:
        nav = ['<a href="/">Home</a>']
        if self.style != "sitemap":
            nav.append(f'<a href="{self._inventory_paths()[0]}">Inventory</a>')
        if self.noise:
            nav += ['<a href="/about/">About Us</a>', '<a href="/blog/spring-sale/">Blog</a>']
        nav.append('<a href="/contact/">Contact</a>')
        logo = (
            '<img class="logo" src="/static/logo.png" alt="'
            + _e(self.site.dealer)
            + ' logo" width="180" height="45">'
            if self.noise
            else ""
        )
        icon = (
            '<img class="icon" src="/static/icons/phone-32.png" alt="" width="32" height="32">'
            if self.noise
            else ""
        )
        pixel = (
            '<img src="/t.gif?e=pageview" width="1" height="1" alt="" style="display:none">'
            if self.noise
            else ""
        )
        if self.style in ("jsonld", "sitemap"):
            head += "\n" + self._dealer_jsonld()
        if canonical:
            head += f'\n<link rel="canonical" href="{BASE}{_e(canonical)}">'
        text = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} | {_e(self.site.dealer)}</title>
<link rel="stylesheet" href="/static/site.css">{head}
</head>
<body>
<header><a class="brand" href="/">{logo}{_e(self.site.dealer)}</a>
<nav>{" ".join(nav)}</nav></header>
<main>
{body}
</main>
<footer><p>{icon} Call us: (555) 010-2030 &middot; 1200 Market St, Springfield, IL</p>
<p>&copy; 2025 {_e(self.site.dealer)}. All rights reserved.</p>{pixel}</footer>
</body>
</html>
"""
        return Response(status=status, content_type=_HTML, body=text.encode("utf-8"))

    # simple pages ---------------------------------------------------------

    def _home(self) -> Response:
        parts = [
            f"<h1>Welcome to {_e(self.site.dealer)}</h1>",
            "<p>Quality pre-owned and classic vehicles since 1987.</p>",
        ]
        if self.style != "sitemap":
            parts.append(
                f'<p><a class="cta" href="{self._inventory_paths()[0]}">'
                "Browse our inventory</a></p>"
            )
        else:
            parts.append("<p>Call or visit us to see what is in stock this week.</p>")
        if self.noise:
            parts.append(
                '<section class="news"><h2>News</h2><p><a href="/blog/spring-sale/">'
                "Spring Sale: save on trucks, SUVs and sedans</a></p></section>"
            )
        return self._page(self.site.dealer, "\n".join(parts), canonical="/")

    def _contact(self) -> Response:
        body = (
            "<h1>Contact us</h1><p>1200 Market St, Springfield, IL 62701</p>"
            "<p>Sales: (555) 010-2030. Open Monday to Saturday, 9am to 7pm.</p>"
        )
        return self._page("Contact", body, canonical="/contact/")

    def _about(self) -> Response:
        body = (
            "<h1>About us</h1><p>Family-owned since 1987, we sell carefully inspected "
            "used cars, trucks and SUVs, and a few classics. Every vehicle gets a "
            "multi-point inspection, and financing is available for all credit types.</p>"
        )
        return self._page("About us", body, canonical="/about/")

    def _blog(self) -> Response:
        featured = self.site.pages["tracking_duplicate"]
        body = f"""<article class="post">
<h1>Spring Sale: big savings on used cars, trucks and SUVs</h1>
<p class="byline">Posted March 3, 2025</p>
<p>Spring is here and so are our best prices of the year. Low-mileage sedans, family SUVs
and 4WD pickup trucks with automatic transmissions, V8 engines and leather interiors are all
marked down. Trade-ins welcome, financing from 3.9% APR, and every car comes with a clean
history report. Prices start at $9,995 with under 60,000 miles.</p>
<p>Don't miss <a href="{_e(featured)}">this week's featured vehicle</a>!</p>
</article>"""
        return self._page("Spring Sale", body, canonical="/blog/spring-sale/")

    def _robots(self) -> Response:
        text = "User-agent: *\nAllow: /\nDisallow: /cart/\n"
        if self.style == "sitemap":
            text += f"\nSitemap: {BASE}/sitemap_index.xml\n"
        return Response(content_type="text/plain; charset=utf-8", body=text.encode())

    # sitemaps -------------------------------------------------------------

    def _xml(self, text: str) -> Response:
        return Response(content_type="application/xml; charset=utf-8", body=text.encode())

    def _sitemap_index(self) -> Response:
        items = "".join(
            f"<sitemap><loc>{BASE}/{name}</loc><lastmod>2025-03-01</lastmod></sitemap>\n"
            for name in ("sitemap-vehicles.xml", "sitemap-pages.xml")
        )
        return self._xml(
            '<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns='
            f'"http://www.sitemaps.org/schemas/sitemap/0.9">\n{items}</sitemapindex>\n'
        )

    def _urlset(self, paths: Sequence[str]) -> Response:
        items = "".join(
            f"<url><loc>{BASE}{_e(p)}</loc><lastmod>2025-03-{1 + i % 28:02d}</lastmod>"
            "<changefreq>daily</changefreq></url>\n"
            for i, p in enumerate(paths)
        )
        return self._xml(
            '<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns='
            f'"http://www.sitemaps.org/schemas/sitemap/0.9">\n{items}</urlset>\n'
        )

    def _sitemap_vehicles(self) -> Response:
        return self._urlset([card["path"] for card in self.cards])

    def _sitemap_pages(self) -> Response:
        paths = ["/", "/contact/"] + (["/about/", "/blog/spring-sale/"] if self.noise else [])
        return self._urlset(paths)

    # inventory --------------------------------------------------------------

    def _page_cards(self, number: int) -> list[dict[str, Any]]:
        start = (number - 1) * self.per_page
        return self.cards[start : start + self.per_page]

    def _img_tag(self, url: str, alt: str, *, lazy: bool) -> str:
        if lazy:
            return (
                f'<img src="{_PLACEHOLDER}" data-src="{_e(url)}" alt="{_e(alt)}" '
                'loading="lazy" class="lazyload">'
            )
        return f'<img src="{_e(url)}" alt="{_e(alt)}">'

    def _inventory(self, number: int, paths: list[str]) -> Response:
        if self.style == "js":
            return self._js_inventory_shell(number, paths)
        lazy = self.style in ("microdata", "plain")
        cards = []
        for card in self._page_cards(number):
            image = (
                self._img_tag(_abs(card["image"]), card["title"], lazy=lazy)
                if card["image"]
                else ""
            )
            sold = '<span class="badge sold">SOLD</span>' if card["sold"] else ""
            cards.append(f"""<article class="vehicle-card">
<a href="{_e(card["path"])}">{image}</a>
<h2><a href="{_e(card["path"])}">{_e(card["title"])}</a></h2>{sold}
<p class="price">{_money(card["price"])}</p>
<p class="mileage">{card["mileage"]:,} mi</p>
</article>""")
        head = ""
        links = []
        if number > 1:
            head += f'\n<link rel="prev" href="{_e(paths[number - 2])}">'
            links.append(f'<a rel="prev" href="{_e(paths[number - 2])}">Previous</a>')
        for n, p in enumerate(paths, start=1):
            links.append(f"<span>{n}</span>" if n == number else f'<a href="{_e(p)}">{n}</a>')
        if number < len(paths):
            head += f'\n<link rel="next" href="{_e(paths[number])}">'
            links.append(f'<a rel="next" class="next" href="{_e(paths[number])}">Next</a>')
        featured = ""
        if self.noise and number == 1:
            featured = (
                f'<p class="featured">Featured: <a href="'
                f'{_e(self.site.pages["tracking_duplicate"])}">deal of the week</a></p>'
            )
        body = (
            f"<h1>Used cars for sale</h1>\n<p>{len(self.cards)} vehicles in stock</p>\n"
            f'{featured}\n<div class="inventory">\n'
            + "\n".join(cards)
            + f'\n</div>\n<nav class="pagination">{" ".join(links)}</nav>'
        )
        return self._page(
            f"Inventory - page {number}", body, head=head, canonical=paths[number - 1]
        )

    # details ----------------------------------------------------------------

    def _facts(self, v: dict[str, Any]) -> dict[str, Any]:
        """What a detail page shows (the bad VIN as shown, the missing page's gaps)."""
        facts = dict(v)
        if v.get("noise") == "bad_vin":
            facts["vin"] = v["shown_vin"]
        if v is getattr(self, "_missing", None):
            for key in ("year", "make", "model", "trim", "vin"):
                facts[key] = None
        facts["images"] = list(self.site._raw_images[v["id"]][0])
        return facts

    def _car_jsonld(self, f: dict[str, Any], *, url: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "@context": "https://schema.org",
            "@type": "Car",
            "name": f["title"],
        }
        if url:
            data["url"] = url
        if f["vin"]:
            data["vehicleIdentificationNumber"] = f["vin"]
        if f["make"]:
            data["brand"] = {"@type": "Brand", "name": f["make"]}
        if f["model"]:
            data["model"] = f["model"]
        if f["year"]:
            data["vehicleModelDate"] = str(f["year"])
        if f["trim"]:
            data["vehicleConfiguration"] = f["trim"]
        data.update(
            {
                "mileageFromOdometer": {
                    "@type": "QuantitativeValue",
                    "value": f["mileage"],
                    "unitCode": "SMI",
                },
                "color": f["color"],
                "vehicleInteriorColor": f["interior_color"],
                "bodyType": f["body_style"],
                "fuelType": f["fuel_type"],
                "vehicleTransmission": f["transmission"],
                "driveWheelConfiguration": f["drivetrain"],
                "vehicleEngine": {"@type": "EngineSpecification", "name": f["engine"]},
                "sku": f["stock_number"],
                "description": f["description"],
                "image": f["images"],
                "offers": {
                    "@type": "Offer",
                    "price": str(f["price"]),
                    "priceCurrency": f["currency"],
                    "availability": "https://schema.org/"
                    + ("SoldOut" if f["sale_status"] == "sold" else "InStock"),
                    "seller": {"@type": "AutoDealer", "name": self.site.dealer},
                },
            }
        )
        if url:
            data["offers"]["url"] = url
        return data

    def _spec_rows(self, f: dict[str, Any]) -> list[tuple[str, str]]:
        rows = [
            ("Price", _money(f["price"])),
            ("VIN", f["vin"]),
            ("Mileage", f"{f['mileage']:,} mi"),
            ("Exterior Color", f["color"]),
            ("Interior Color", f["interior_color"]),
            ("Transmission", f["transmission"]),
            ("Drivetrain", f["drivetrain"]),
            ("Engine", f["engine"]),
            ("Body Style", f["body_style"]),
            ("Fuel Type", f["fuel_type"]),
            ("Stock #", f["stock_number"]),
        ]
        return [(label, value) for label, value in rows if value]

    def _gallery_extras(self) -> str:
        if not self.noise:
            return ""
        return '\n<img class="badge" src="/static/badges/carfax.svg" alt="Free CARFAX report">'

    def _detail(self, v: dict[str, Any]) -> Response:
        f = self._facts(v)
        if self.style == "js":
            return self._js_detail_shell(f)
        sold = '\n<span class="badge sold">SOLD</span>' if f["sale_status"] == "sold" else ""
        url = BASE + f["path"]
        if self.style in ("jsonld", "sitemap"):
            gallery = "\n".join(self._img_tag(u, f["title"], lazy=False) for u in f["images"])
            specs = "\n".join(
                f"<li><strong>{_e(k)}:</strong> {_e(val)}</li>" for k, val in self._spec_rows(f)
            )
            body = f"""<div class="vdp">
<h1>{_e(f["title"])}</h1>{sold}
<p class="price">{_money(f["price"])}</p>
<div class="gallery">
{gallery}{self._gallery_extras()}
</div>
<ul class="specs">
{specs}
</ul>
<p class="description">{_e(f["description"])}</p>
</div>"""
            head = "\n" + _jsonld_script(self._car_jsonld(f, url=url))
            return self._page(f["title"], body, head=head, canonical=f["path"])
        if self.style == "microdata":
            return self._page(f["title"], self._microdata_body(f, sold), canonical=f["path"])
        return self._page(f["title"], self._plain_body(f, sold), canonical=f["path"])

    def _microdata_body(self, f: dict[str, Any], sold: str) -> str:
        images = f["images"]
        gallery = []
        for i, u in enumerate(images):
            if i == 0:
                gallery.append(
                    f'<img src="{_e(u)}?w=1600" srcset="{_e(u)}?w=400 400w, '
                    f'{_e(u)}?w=800 800w, {_e(u)}?w=1600 1600w" '
                    f'sizes="(max-width: 800px) 100vw, 800px" alt="{_e(f["title"])}">'
                )
            else:
                gallery.append(
                    f'<img src="{_PLACEHOLDER}" data-src="{_e(u)}" data-srcset="'
                    f'{_e(u)}?w=400 400w, {_e(u)}?w=1600 1600w" loading="lazy" '
                    f'class="lazyload" alt="{_e(f["title"])}">'
                )
        links = "\n".join(f'<link itemprop="image" href="{_e(u)}">' for u in images)
        availability = "SoldOut" if f["sale_status"] == "sold" else "InStock"

        def item(label: str, prop: str, value: object) -> str:
            if not value:
                return ""
            return f'<li>{label}: <span itemprop="{prop}">{_e(value)}</span></li>\n'

        brand = (
            f'<li>Make: <span itemprop="brand" itemscope itemtype="https://schema.org/Brand">'
            f'<span itemprop="name">{_e(f["make"])}</span></span></li>\n'
            if f["make"]
            else ""
        )
        return f"""<div class="vdp" itemscope itemtype="https://schema.org/Car">
<link itemprop="url" href="{BASE}{_e(f["path"])}">
<h1 itemprop="name">{_e(f["title"])}</h1>{sold}
<div class="offer" itemprop="offers" itemscope itemtype="https://schema.org/Offer">
<span class="price" itemprop="price" content="{f["price"]}">{_money(f["price"])}</span>
<meta itemprop="priceCurrency" content="{f["currency"]}">
<link itemprop="availability" href="https://schema.org/{availability}">
</div>
<div class="gallery">
{chr(10).join(gallery)}{self._gallery_extras()}
{links}
</div>
<ul class="specs">
{item("Year", "vehicleModelDate", f["year"])}{brand}{item("Model", "model", f["model"])}\
{item("Trim", "vehicleConfiguration", f["trim"])}\
{item("VIN", "vehicleIdentificationNumber", f["vin"])}\
<li>Mileage: <span itemprop="mileageFromOdometer" itemscope \
itemtype="https://schema.org/QuantitativeValue"><span itemprop="value" \
content="{f["mileage"]}">{f["mileage"]:,}</span> <meta itemprop="unitCode" content="SMI">mi\
</span></li>
{item("Exterior Color", "color", f["color"])}\
{item("Interior Color", "vehicleInteriorColor", f["interior_color"])}\
{item("Body Style", "bodyType", f["body_style"])}\
{item("Fuel Type", "fuelType", f["fuel_type"])}\
{item("Transmission", "vehicleTransmission", f["transmission"])}\
{item("Drivetrain", "driveWheelConfiguration", f["drivetrain"])}\
<li>Engine: <span itemprop="vehicleEngine" itemscope \
itemtype="https://schema.org/EngineSpecification"><span itemprop="name">{_e(f["engine"])}\
</span></span></li>
{item("Stock #", "sku", f["stock_number"])}</ul>
<p class="description" itemprop="description">{_e(f["description"])}</p>
</div>"""

    def _plain_body(self, f: dict[str, Any], sold: str) -> str:
        gallery = "\n".join(self._img_tag(u, f["title"], lazy=True) for u in f["images"])
        rows = self._spec_rows(f)
        if f["id"] % 2 == 0:
            specs = (
                '<table class="specs">\n'
                + "\n".join(f"<tr><th>{_e(k)}</th><td>{_e(val)}</td></tr>" for k, val in rows)
                + "\n</table>"
            )
        else:
            specs = (
                '<dl class="specs">\n'
                + "\n".join(f"<dt>{_e(k)}</dt><dd>{_e(val)}</dd>" for k, val in rows)
                + "\n</dl>"
            )
        return f"""<div class="vehicle-detail">
<h1>{_e(f["title"])}</h1>{sold}
<div class="price-box"><span class="label">Our Price</span>
<span class="amount">{_money(f["price"])}</span></div>
<div class="gallery">
{gallery}{self._gallery_extras()}
</div>
{specs}
<p class="description">{_e(f["description"])}</p>
</div>"""

    # js style ---------------------------------------------------------------

    def _js_shell(self, title: str, state_attr: str, script: str, canonical: str) -> Response:
        body = (
            f'<div id="app"{state_attr}><p class="loading">Loading&hellip;</p></div>\n'
            "<noscript>Please enable JavaScript to view our inventory.</noscript>\n"
            f"<script>\n{script}\n</script>"
        )
        return self._page(title, body, canonical=canonical)

    def _js_inventory_shell(self, number: int, paths: list[str]) -> Response:
        return self._js_shell(f"Inventory - page {number}", "", _JS_INVENTORY, paths[number - 1])

    def _api_inventory(self, number: int, paths: list[str]) -> Response:
        data = {
            "page": number,
            "pages": len(paths),
            "total": len(self.cards),
            "vehicles": [
                {
                    "url": c["path"],
                    "title": c["title"],
                    "price": c["price"],
                    "price_text": _money(c["price"]),
                    "mileage": c["mileage"],
                    "image": _abs(c["image"]) if c["image"] else None,
                    "sold": c["sold"],
                }
                for c in self._page_cards(number)
            ],
            "next": paths[number] if number < len(paths) else None,
        }
        return Response(content_type="application/json", body=json.dumps(data, indent=1).encode())

    def _js_state(self, f: dict[str, Any]) -> dict[str, Any]:
        # The state is base64 inside the page: no base placeholder can be
        # filled in there, so self-served URLs stay root-relative and the
        # script resolves them against location.
        images = [u.replace(BASE, "") for u in f["images"]]
        ld = self._car_jsonld({**f, "images": images}, url=None)
        return {
            "title": f["title"],
            "price_text": _money(f["price"]),
            "sold": f["sale_status"] == "sold",
            "specs": self._spec_rows(f),
            "images": images,
            "badge": "/static/badges/carfax.svg" if self.noise else None,
            "description": f["description"],
            "jsonld": ld,
        }

    def _js_detail_shell(self, f: dict[str, Any]) -> Response:
        state = base64.b64encode(json.dumps(self._js_state(f)).encode()).decode()
        # A generic <title>: the shell must not leak the vehicle to non-browsers.
        return self._js_shell("Vehicle details", f' data-state="{state}"', _JS_DETAIL, f["path"])

    def _api_vehicle(self, v: dict[str, Any]) -> Response:
        return Response(
            content_type="application/json",
            body=json.dumps(self._js_state(self._facts(v)), indent=1).encode(),
        )


_JS_INVENTORY = """(function () {
  var app = document.getElementById('app');
  var page = new URLSearchParams(location.search).get('page') || '1';
  fetch('/api/inventory.json?page=' + encodeURIComponent(page))
    .then(function (r) { return r.json(); })
    .then(function (data) {
      app.innerHTML = '';
      var h1 = document.createElement('h1');
      h1.textContent = 'Used cars for sale';
      app.appendChild(h1);
      var list = document.createElement('div');
      list.className = 'inventory';
      data.vehicles.forEach(function (v) {
        var card = document.createElement('article');
        card.className = 'vehicle-card';
        if (v.image) {
          var img = document.createElement('img');
          img.src = new URL(v.image, location.href).href;
          img.alt = v.title;
          card.appendChild(img);
        }
        var h2 = document.createElement('h2');
        var a = document.createElement('a');
        a.href = v.url;
        a.textContent = v.title;
        h2.appendChild(a);
        card.appendChild(h2);
        if (v.sold) {
          var badge = document.createElement('span');
          badge.className = 'badge sold';
          badge.textContent = 'SOLD';
          card.appendChild(badge);
        }
        var price = document.createElement('p');
        price.className = 'price';
        price.textContent = v.price_text;
        card.appendChild(price);
        list.appendChild(card);
      });
      app.appendChild(list);
      if (data.next) {
        var next = document.createElement('a');
        next.rel = 'next';
        next.className = 'next';
        next.href = data.next;
        next.textContent = 'Next';
        app.appendChild(next);
      }
    });
})();"""

_JS_DETAIL = """(function () {
  var app = document.getElementById('app');
  var raw = atob(app.getAttribute('data-state'));
  var bytes = Uint8Array.from(raw, function (c) { return c.charCodeAt(0); });
  var s = JSON.parse(new TextDecoder().decode(bytes));
  function abs(u) { return new URL(u, location.href).href; }
  app.innerHTML = '';
  document.title = s.title;
  var h1 = document.createElement('h1');
  h1.textContent = s.title;
  app.appendChild(h1);
  if (s.sold) {
    var badge = document.createElement('span');
    badge.className = 'badge sold';
    badge.textContent = 'SOLD';
    app.appendChild(badge);
  }
  var price = document.createElement('p');
  price.className = 'price';
  price.textContent = s.price_text;
  app.appendChild(price);
  var gallery = document.createElement('div');
  gallery.className = 'gallery';
  s.images.forEach(function (u) {
    var img = document.createElement('img');
    img.src = abs(u);
    img.alt = s.title;
    gallery.appendChild(img);
  });
  if (s.badge) {
    var svg = document.createElement('img');
    svg.src = s.badge;
    svg.className = 'badge';
    gallery.appendChild(svg);
  }
  app.appendChild(gallery);
  var dl = document.createElement('dl');
  dl.className = 'specs';
  s.specs.forEach(function (row) {
    var dt = document.createElement('dt');
    dt.textContent = row[0];
    var dd = document.createElement('dd');
    dd.textContent = row[1];
    dl.appendChild(dt);
    dl.appendChild(dd);
  });
  app.appendChild(dl);
  var desc = document.createElement('p');
  desc.className = 'description';
  desc.textContent = s.description;
  app.appendChild(desc);
  var ld = s.jsonld;
  ld.url = location.href.split('?')[0];
  ld.image = s.images.map(abs);
  ld.offers.url = ld.url;
  var script = document.createElement('script');
  script.type = 'application/ld+json';
  script.textContent = JSON.stringify(ld);
  document.head.appendChild(script);
})();"""


def build_site(
    style: str,
    *,
    n_vehicles: int = 12,
    per_page: int = 10,
    images_per_vehicle: int = 5,
    image_base_urls: Sequence[str] = (),
    seed: int = 0,
    noise: bool = False,
) -> Site:
    """Build a deterministic dealer site of one of :data:`STYLES`.

    ``image_base_urls`` are the image hosts' URLs (photos are spread over
    them round-robin); when empty the site serves ``/img/`` and ``/edge/``
    itself. Under ``noise`` the site lists ``n_vehicles + 2`` vehicles (the
    sold one and the bad-VIN one) plus two pages that are not vehicles.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    if n_vehicles < 1 or per_page < 1 or images_per_vehicle < 1:
        raise ValueError("n_vehicles, per_page and images_per_vehicle must be at least 1")
    dealer = _DEALERS[seed % len(_DEALERS)]
    site = Site(style, seed=seed, noise=noise, dealer=dealer, image_base_urls=image_base_urls)
    _Builder(site, n_vehicles, per_page, images_per_vehicle).build()
    return site
