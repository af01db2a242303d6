// nuke_crawl admin page: keeps the server-rendered page up to date from the JSON API.
// Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";
(function () {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const $ = (sel) => document.querySelector(sel);
  const $$ = (sel) => Array.from(document.querySelectorAll(sel));
  const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
  const esc = (s) => String(s === null || s === undefined ? "" : s)
    .replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const when = (iso) => {
    const d = iso ? new Date(iso) : null;
    return d && !isNaN(d) ? d.toLocaleString() : (iso || "–");
  };
  const TOKEN_KEY = "nukeAdminToken";  // sessionStorage: kept for this tab only

  function message(text, kind) {
    const el = $("#message");
    el.textContent = text;
    el.className = "message " + (kind || "");
  }

  async function getJSON(path) {
    const res = await fetch(path, {headers: {Accept: "application/json"}, cache: "no-store"});
    if (!res.ok) throw new Error(path + ": HTTP " + res.status);
    return res.json();
  }

  function token(ask) {
    let t = sessionStorage.getItem(TOKEN_KEY);
    if (!t && ask) {
      t = window.prompt("Admin token (NUKE_ADMIN_TOKEN); kept for this tab only");
      if (t) sessionStorage.setItem(TOKEN_KEY, t.trim());
    }
    return t ? t.trim() : null;
  }

  async function post(path, body, retried) {
    const t = token(true);
    if (!t) { message("No token given: nothing started.", "warn"); return null; }
    const res = await fetch(path, {
      method: "POST", credentials: "omit",
      headers: {"Content-Type": "application/json", Authorization: "Bearer " + t},
      body: JSON.stringify(body || {}),
    });
    const data = await res.json().catch(() => ({}));
    if (res.status === 401 && !retried) {
      sessionStorage.removeItem(TOKEN_KEY);
      message("That token was refused; try again.", "warn");
      return post(path, body, true);
    }
    if (res.status === 409) {
      message(data.error + ": wait for it, or cancel it below.", "warn");
    } else if (!res.ok) {
      message(data.error || ("HTTP " + res.status), "error");
    }
    return res.ok ? data : null;
  }

  // -- rendering ------------------------------------------------------------------------
  function renderStatus(status) {
    const stats = status.stats || {};
    const total = stats.totalVehicles || 0;
    for (const key of Object.keys(stats)) {
      const fig = $(`[data-stat="${key}"]`);
      if (fig) fig.textContent = fmt(stats[key]);
      const bar = $(`[data-bar="${key}"]`);
      if (bar && key !== "totalVehicles") {
        const pct = total ? Math.min(100, (100 * stats[key]) / total) : 0;
        bar.style.width = pct.toFixed(1) + "%";
        bar.parentElement.setAttribute("aria-valuenow", pct.toFixed(0));
        const label = $(`[data-pct="${key}"]`);
        if (label) label.textContent = " · " + pct.toFixed(0) + "%";
      }
    }
    const images = status.images || {};
    for (const key of ["stored", "external", "failed"]) {
      const el = $(`[data-img="${key}"]`);
      if (el) el.textContent = fmt(images[key]);
    }
    const reasons = Object.entries(images.failedByReason || {});
    const most = reasons.length ? reasons[0][1] : 1;
    $("#reasons").innerHTML = reasons.length ? reasons.map(([r, n]) =>
      `<li><a href="/api/failures?reason=${encodeURIComponent(r)}" title="recent failures">${esc(r)}</a>` +
      `<span class="rbar"><span style="width:${(100 * n / most).toFixed(1)}%"></span></span>` +
      `<b>${fmt(n)}</b></li>`).join("") : '<li class="empty">No failed images</li>';
    $("#as-of").textContent = when(status.asOf);
  }

  function renderJobs(jobs) {
    $("#jobs").innerHTML = jobs.length ? jobs.map((j) => {
      const p = j.progress || {};
      const pct = p.percent === undefined || p.percent === null ? null : p.percent;
      const active = j.state === "running" || j.state === "pending";
      // a finished job's limit was a most, not a goal: its count alone
      const done = p.items === null || p.items === undefined ? "" :
        fmt(p.items) + (p.target && j.state !== "finished" ? " / " + fmt(p.target) : "");
      const title = esc(Object.entries(j.args || {}).map(([k, v]) => k + "=" + v).join(" "));
      return `<tr data-job="${esc(j.id)}" class="state-${esc(j.state)}">` +
        `<td title="${title}">${esc(j.spider)}${j.schedule ? ' <small>⏱ ' + esc(j.schedule) + "</small>" : ""}</td>` +
        `<td><span class="badge ${esc(j.state)}">${esc(j.state)}</span></td>` +
        `<td>${pct === null ? "" : `<span class="mini"><span style="width:${pct}%"></span></span>`} ${done}</td>` +
        `<td>${when(j.startedAt || j.createdAt)}</td>` +
        `<td>${active && boot.writes ? `<button class="small" data-cancel="${esc(j.id)}">Cancel</button>` :
          `<a href="/api/jobs/${esc(j.id)}">log</a>`}</td></tr>`;
    }).join("") : '<tr><td colspan="5" class="empty">No jobs yet</td></tr>';
  }

  function renderSchedules(list) {
    $("#schedules").innerHTML = list.length ? list.map((s) =>
      `<li><b>${esc(s.name)}</b> <code>${esc(s.cron)}</code> ${esc(s.spider)}` +
      `<br><small>next ${when(s.nextRun)}${s.lastOutcome ? " · last " + esc(s.lastOutcome) : ""}` +
      `${s.skips ? " · skipped " + s.skips + "×" : ""}</small></li>`).join("")
      : '<li class="empty">No schedules (NUKE_SCHEDULES)</li>';
  }

  function renderThumbs(list) {
    $("#thumbs").innerHTML = list.length ? list.map((t) =>
      `<a href="/api/vehicles/${esc(t.vehicleId)}" title="vehicle ${esc(t.vehicleId)}">` +
      `<img loading="lazy" alt="" src="${esc(t.url)}"></a>`).join("")
      : '<p class="empty">No stored images yet</p>';
  }

  function renderOrgs(data) {
    $("#org-total").textContent = fmt(data.total);
    $("#orgs").innerHTML = (data.organizations || []).map((o) => {
      const i = o.images || {};
      return `<tr><td>${esc(o.name)}</td><td class="url">${esc(o.website)}</td>` +
        `<td class="num">${fmt(o.vehicles)}</td><td class="num">${fmt(i.stored)}</td>` +
        `<td class="num">${fmt(i.external)}</td><td class="num">${fmt(i.failed)}</td>` +
        `<td>${esc(((o.lastCrawl || {}).finishedAt || "–").slice(0, 16))}</td>` +
        `<td class="err">${esc((o.lastError || "").slice(0, 120))}</td></tr>`;
    }).join("") || '<tr><td colspan="8" class="empty">No organizations yet</td></tr>';
  }

  // -- polling --------------------------------------------------------------------------
  let tick = 0;
  async function refresh() {
    tick += 1;
    try {
      const [status, jobs] = await Promise.all([getJSON("/api/image-status"),
                                                getJSON("/api/jobs?limit=15")]);
      renderStatus(status);
      renderJobs(jobs.jobs);
      if (tick % 3 === 1) {
        const [thumbs, schedules] = await Promise.all([getJSON("/api/thumbnails"),
                                                       getJSON("/api/schedules")]);
        renderThumbs(thumbs.thumbnails);
        renderSchedules(schedules.schedules);
      }
      if (tick % 3 === 1) renderOrgs(await getJSON("/api/organizations"));
      $("#live").className = "live";
    } catch (err) {
      $("#live").className = "live off";
    }
  }

  // -- actions --------------------------------------------------------------------------
  async function processVehicles(n) {
    const data = await post("/api/process-images", {batchSize: n});
    if (data) { message(`Started image_backfill for ${n} vehicles (job ${data.job.id.slice(0, 8)})`, "ok"); refresh(); }
  }
  $$("[data-process]").forEach((b) => b.addEventListener("click", () =>
    processVehicles(Number(b.dataset.process))));
  $("#process-n").addEventListener("submit", (e) => {
    e.preventDefault();
    processVehicles(Number(e.target.elements.n.value));
  });
  $("#analyse-n").addEventListener("submit", async (e) => {
    e.preventDefault();
    const n = Number(e.target.elements.n.value);
    const data = await post("/api/analyze-images", {limit: n});
    if (data) { message(`Started image_analysis for ${n} images`, "ok"); refresh(); }
  });
  $("#jobs").addEventListener("click", async (e) => {
    const id = e.target.dataset && e.target.dataset.cancel;
    if (!id) return;
    const data = await post(`/api/jobs/${id}/cancel`, {});
    if (data) { message("Cancelling job " + id.slice(0, 8), "ok"); refresh(); }
  });

  renderStatus(boot.status);
  renderJobs(boot.jobs);
  renderSchedules(boot.schedules);
  refresh();
  setInterval(refresh, 2000);
})();
