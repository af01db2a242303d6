"""The admin page: server-rendered HTML; ``static/app.js`` (plain JavaScript, no build
step, nothing from a CDN) keeps it up to date from the JSON API."""

from __future__ import annotations

import json
from html import escape
from typing import Any

CARDS = (
    ("totalVehicles", "Vehicles with images", "every vehicle with image URLs or rows"),
    ("needingProcessing", "Needing processing", "images not backfilled yet"),
    ("fullyProcessed", "Fully processed", "every image stored"),
    ("partiallyProcessed", "Partially processed", "some stored, some failed or waiting"),
)


def _n(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "–"


def _pct(part: Any, whole: Any) -> float:
    try:
        return max(0.0, min(100.0, 100.0 * float(part) / float(whole))) if whole else 0.0
    except (TypeError, ValueError):
        return 0.0


def _cards(stats: dict[str, Any]) -> str:
    total = stats.get("totalVehicles") or 0
    out = []
    for key, label, hint in CARDS:
        value = stats.get(key)
        pct = 100.0 if key == "totalVehicles" else _pct(value, total)
        out.append(
            f'<section class="card" data-card="{key}">'
            f"<h2>{escape(label)}</h2>"
            f'<p class="figure" data-stat="{key}">{_n(value)}</p>'
            f'<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
            f'aria-valuenow="{pct:.0f}"><span data-bar="{key}" style="width:{pct:.1f}%">'
            f'</span></div><p class="hint">{escape(hint)}'
            f'<span class="pct" data-pct="{key}">'
            f"{'' if key == 'totalVehicles' else f' · {pct:.0f}%'}</span></p></section>"
        )
    return "".join(out)


def _org_rows(orgs: dict[str, Any]) -> str:
    rows = []
    for o in orgs.get("organizations", []):
        imgs = o.get("images") or {}
        err = o.get("lastError") or ""
        rows.append(
            f"<tr><td>{escape(o.get('name') or '')}</td>"
            f"<td class='url'>{escape(o.get('website') or '')}</td>"
            f"<td class='num'>{_n(o.get('vehicles'))}</td>"
            f"<td class='num'>{_n(imgs.get('stored'))}</td>"
            f"<td class='num'>{_n(imgs.get('external'))}</td>"
            f"<td class='num'>{_n(imgs.get('failed'))}</td>"
            f"<td>{escape(((o.get('lastCrawl') or {}).get('finishedAt') or '–')[:16])}</td>"
            f"<td class='err'>{escape(err[:120])}</td></tr>"
        )
    return "".join(rows) or "<tr><td colspan='8' class='empty'>No organizations yet</td></tr>"


def render(
    *,
    status: dict[str, Any],
    orgs: dict[str, Any],
    jobs: list[dict[str, Any]],
    schedules: list[dict[str, Any]],
    writes: bool,
    backend: str,
) -> str:
    stats = status.get("stats", {})
    images = status.get("images", {})
    boot = json.dumps(
        {
            "status": status,
            "jobs": jobs,
            "schedules": schedules,
            "writes": writes,
            "backend": backend,
        },
        default=str,
    )
    # the JSON goes inside <script>: no "</" may close it early
    boot = boot.replace("</", "<\\/")
    disabled = "" if writes else " disabled"
    note = (
        ""
        if writes
        else (
            '<p class="notice">Read-only: the service runs without NUKE_ADMIN_TOKEN, so its '
            "buttons are disabled.</p>"
        )
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nuke_crawl · images</title>
<link rel="stylesheet" href="/static/app.css">
</head><body>
<header><h1>nuke_crawl <span>image processor</span></h1>
<p class="meta">Backend: <b>{escape(backend)}</b> · updated <time id="as-of">
{escape(str(status.get("asOf") or ""))}</time> <span id="live" class="live">live</span></p>
</header>
<main>
{note}
<div class="cards">{_cards(stats)}</div>
<div class="grid">
<section class="panel actions"><h2>Process</h2>
<div class="buttons">
<button data-process="5"{disabled}>Process 5 vehicles</button>
<button data-process="10"{disabled}>Process 10 vehicles</button>
<form id="process-n"><input type="number" name="n" min="1" max="1000" value="50"
 aria-label="vehicles"{disabled}><button{disabled}>Process N vehicles</button></form>
</div>
<div class="buttons">
<form id="analyse-n"><input type="number" name="n" min="1" max="10000" value="100"
 aria-label="images"{disabled}><button{disabled}>Analyse N images</button></form>
</div>
<p id="message" class="message" role="status"></p>
<dl class="images">
<dt>Images stored</dt><dd data-img="stored">{_n(images.get("stored"))}</dd>
<dt>External</dt><dd data-img="external">{_n(images.get("external"))}</dd>
<dt>Failed</dt><dd data-img="failed">{_n(images.get("failed"))}</dd>
</dl>
</section>
<section class="panel"><h2>Jobs</h2><table class="jobs"><thead><tr><th>Spider</th>
<th>State</th><th>Progress</th><th>Started</th><th></th></tr></thead>
<tbody id="jobs"></tbody></table></section>
<section class="panel"><h2>Failures by reason</h2><ul id="reasons" class="reasons"></ul>
<h2>Schedules</h2><ul id="schedules" class="schedules"></ul></section>
</div>
<section class="panel"><h2>Latest stored images</h2><div id="thumbs" class="thumbs"></div>
</section>
<section class="panel"><h2>Organizations <small id="org-total">{_n(orgs.get("total"))}
</small></h2>
<table class="orgs"><thead><tr><th>Name</th><th>Website</th><th class="num">Vehicles</th>
<th class="num">Stored</th><th class="num">External</th><th class="num">Failed</th>
<th>Last crawl</th><th>Last error</th></tr></thead>
<tbody id="orgs">{_org_rows(orgs)}</tbody></table></section>
</main>
<script id="boot" type="application/json">{boot}</script>
<script src="/static/app.js"></script>
</body></html>
"""
