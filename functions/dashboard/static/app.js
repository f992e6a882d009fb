// Tributary dashboard: a small single-page app over the JSON API.
// Views: #/ (fleet overview, alert feed), #/device/<id> (charts) and
// #/registry (the device registry, for operators: registry.js),
// #/rules (the alert rules; operators edit them: rules.js),
// #/channels (notification channels, for operators: channels.js).
// Live updates arrive as server-sent events and refresh what they touch.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmtNum = (x) => (x == null || isNaN(x) ? "–" : Math.abs(x) >= 1000 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2));
const ago = (iso) => {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(iso).toLocaleString();
};
const token = () => localStorage.getItem("tributary.operatorToken") || "";
// Who the dashboard takes us for (GET /api/me): behind App Service
// authentication the signed-in user, whose app role makes them an operator;
// otherwise an anonymous reader who becomes an operator with the token.
let me = { auth: "token", name: null, operator: false, writable: true };
const appService = () => me.auth === "app-service";
const isOperator = () => (appService() ? me.operator : !!token());

async function api(path, opts = {}) {
  const headers = opts.headers || {};
  // Sent with reads too: the registry's are for operators only.
  if (!appService() && token()) headers.Authorization = `Bearer ${token()}`;
  const r = await fetch(path, { ...opts, headers });
  const body = r.status === 204 ? {} : await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error((body.error && body.error.message) || `${r.status} ${r.statusText}`), { code: body.error && body.error.code });
  return body;
}

// Token mode with a viewer token: nothing is read before signing in. The
// token is exchanged for a session cookie (HttpOnly, so no script here holds
// it) that the live stream sends too.
function signInView() {
  shown.charts.forEach((c) => c.destroy());
  shown = { key: null, charts: [] };
  $("#view").innerHTML = `<section class="panel signin" data-testid="signin"><h2>Sign in</h2>
    <p>Reading this dashboard needs the viewer token (or the operator token) your administrator gave you.</p>
    <form id="signin-form" class="filters"><input type="password" id="signin-token" data-testid="signin-token" placeholder="viewer or operator token" aria-label="Token" required autocomplete="current-password">
    <button class="primary" type="submit" data-testid="signin-submit">Sign in</button></form>
    <div class="note" id="signin-result" data-testid="signin-result"></div></section>`;
  $("#signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("/api/session", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: $("#signin-token").value }) });
      location.reload();
    } catch (err) {
      $("#signin-result").textContent = `Not signed in: ${err.message}`;
    }
  });
}

function banner(msg) {
  const b = $("#banner");
  b.hidden = !msg;
  b.textContent = msg || "";
}

// ---- overview --------------------------------------------------------------

function alertHtml(a) {
  const high = a.score >= 0.9 ? " high" : "";
  const acts = isOperator() && a.state !== "resolved"
    ? `<div class="acts">${a.state === "open" ? `<button class="primary" data-ack="${esc(a.id)}" data-testid="ack">Acknowledge</button>` : ""}<button data-resolve="${esc(a.id)}">Resolve</button></div>`
    : "";
  return `<div class="alert${high}" data-testid="alert" data-alert-id="${esc(a.id)}">
    <div><span class="pill ${esc(a.state)}" data-testid="alert-state">${esc(a.state)}</span>
      ${a.severity && a.severity !== "warning" ? `<span class="pill sev-${esc(a.severity)}" data-testid="alert-severity">${esc(a.severity)}</span>` : ""}
      <a href="#/device/${encodeURIComponent(a.deviceId)}">${esc(a.deviceId)}</a> · <b>${esc(a.metric)}</b> = ${fmtNum(a.value)}</div>
    <div>${esc(a.reason)}</div>
    <div class="meta">${esc(a.model)} · score ${fmtNum(a.score)} · opened ${ago(a.openedAt)}${a.acknowledgedBy ? ` · acknowledged by ${esc(a.acknowledgedBy)}` : ""}</div>
    ${acts}</div>`;
}

// The fleet list's view: search, status, group, order and page, kept in the URL
// (#/?q=&status=&group=&sort=&order=&page=) so a view can be shared and survives a reload.
const PAGE_SIZE = 50;
// Where "← Fleet" on a device page leads: the fleet view it was opened from.
let fleetHash = "#/";
const SORTS = { deviceId: "asc", lastSeen: "desc", firstSeen: "desc", openAlerts: "desc" };
function fleetView() {
  const p = new URLSearchParams((location.hash.split("?")[1]) || "");
  const sort = p.get("sort") in SORTS ? p.get("sort") : "lastSeen";
  return {
    q: p.get("q") || "",
    status: ["online", "offline", "alerting"].includes(p.get("status")) ? p.get("status") : "all",
    group: p.get("group") || "",
    sort,
    order: ["asc", "desc"].includes(p.get("order")) ? p.get("order") : SORTS[sort],
    page: Math.max(1, parseInt(p.get("page"), 10) || 1),
  };
}
function setFleetView(v) {
  const p = new URLSearchParams();
  if (v.q) p.set("q", v.q);
  if (v.status !== "all") p.set("status", v.status);
  if (v.group) p.set("group", v.group);
  if (v.sort !== "lastSeen") p.set("sort", v.sort);
  if (v.order !== SORTS[v.sort]) p.set("order", v.order);
  if (v.page > 1) p.set("page", v.page);
  const qs = p.toString();
  // Replaced, not pushed: typing a search is not a trail of history entries.
  fleetHash = `#/${qs ? `?${qs}` : ""}`;
  history.replaceState(null, "", fleetHash);
  refreshFleet().then(() => banner(""), (e) => banner(`Could not load the fleet: ${e.message}`));
}

function fleetTable(devs, v) {
  if (!devs.devices.length) {
    const filtered = v.q || v.status !== "all" || v.group;
    return filtered
      ? `<div class="empty" data-testid="no-match">No device matches${v.q ? ` “${esc(v.q)}”` : ""}${v.status !== "all" ? ` (${esc(v.status)})` : ""}${v.group ? ` in group ${esc(v.group)}` : ""}.</div>`
      : `<div class="empty" data-testid="empty">No devices yet. Send a reading, or start simulated devices with <code>tributary simulate</code>.</div>`;
  }
  const th = (key, label, cls = "") => {
    const arrow = v.sort === key ? (v.order === "asc" ? " ▲" : " ▼") : "";
    return `<th class="sortable${cls}" data-sort="${key}" data-testid="sort-${key}" aria-sort="${v.sort === key ? (v.order === "asc" ? "ascending" : "descending") : "none"}">${label}${arrow}</th>`;
  };
  const rows = devs.devices.map((d) => {
    const metrics = Object.entries(d.lastValues || {}).slice(0, 3).map(([k, val]) => `${esc(k)} ${fmtNum(val.value)}`).join(" · ");
    return `<tr class="dev" data-device="${esc(d.deviceId)}" data-testid="device-row"><td><span class="dot${d.online ? " on" : ""}"></span><a href="#/device/${encodeURIComponent(d.deviceId)}">${esc(d.deviceId)}</a></td>
      <td class="hide-sm" data-testid="device-group">${d.group ? esc(d.group) : ""}</td><td>${ago(d.lastSeen)}</td><td class="hide-sm">${metrics}</td><td>${d.openAlerts ? `<span class="pill open">${d.openAlerts}</span>` : ""}</td></tr>`;
  }).join("");
  return `<table><thead><tr>${th("deviceId", "Device")}<th class="hide-sm">Group</th>${th("lastSeen", "Last seen")}<th class="hide-sm">Latest</th>${th("openAlerts", "Alerts")}</tr></thead><tbody>${rows}</tbody></table>`;
}

function pager(devs) {
  const first = devs.total ? devs.offset + 1 : 0, last = devs.offset + devs.devices.length;
  return `<div class="pager"><button data-page="-1" data-testid="page-prev" ${devs.offset ? "" : "disabled"}>‹ Prev</button>
    <span data-testid="fleet-range">${first.toLocaleString("en")}–${last.toLocaleString("en")} of ${devs.total.toLocaleString("en")}</span>
    <button data-page="1" data-testid="page-next" ${last < devs.total ? "" : "disabled"}>Next ›</button></div>`;
}

// Only the rows and the pager change on a search, a live update or a page turn,
// so the search box keeps its focus and caret while the list follows it.
let fleetSeq = 0;
async function refreshFleet() {
  const v = fleetView();
  const seq = ++fleetSeq;
  const qs = new URLSearchParams({ limit: PAGE_SIZE, offset: (v.page - 1) * PAGE_SIZE, sort: v.sort, order: v.order, status: v.status });
  if (v.q) qs.set("q", v.q);
  if (v.group) qs.set("group", v.group);
  const devs = await api(`/api/devices?${qs}`);
  if (seq !== fleetSeq || !$("#fleet-list")) return; // a newer request or another view won
  $("#fleet-list").innerHTML = fleetTable(devs, v);
  $("#fleet-pager").innerHTML = pager(devs);
}

// The group filter offers the registry's groups (with online/registered
// counts), and keeps a group from a shared URL even if it has no devices now.
function fillGroups(groups, current) {
  const names = groups.map((g) => g.name);
  if (current && !names.includes(current)) groups = [...groups, { name: current, devices: 0, online: 0 }];
  $("#fleet-group").innerHTML = `<option value="">all groups</option>` + groups.map((g) =>
    `<option value="${esc(g.name)}">${esc(g.name)} (${g.online.toLocaleString("en")}/${g.devices.toLocaleString("en")} online)</option>`).join("");
  $("#fleet-group").value = current;
}

async function overview() {
  const v = fleetView();
  fleetHash = location.hash || "#/";
  if (!$("#fleet-list")) {
    shown.charts.forEach((c) => c.destroy());
    shown = { key: null, charts: [] };
    $("#view").innerHTML = `<div class="cards" id="cards"></div><div class="grid"><section class="panel"><h2>Fleet</h2>
      <div class="filters"><input type="search" id="fleet-search" data-testid="fleet-search" placeholder="Search device id" aria-label="Search device id" maxlength="128">
      <select id="fleet-status" data-testid="fleet-status" aria-label="Status">${["all", "online", "offline", "alerting"].map((s) => `<option value="${s}">${s}</option>`).join("")}</select>
      <select id="fleet-group" data-testid="fleet-group" aria-label="Group"><option value="">all groups</option></select></div>
      <div id="fleet-list"></div><div id="fleet-pager"></div></section>
      <section class="panel" data-testid="alert-feed"><h2>Alerts</h2><div id="feed"></div></section></div>`;
    let typing = null;
    $("#fleet-search").addEventListener("input", (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => setFleetView({ ...fleetView(), q: e.target.value.trim(), page: 1 }), 200);
    });
    $("#fleet-status").addEventListener("change", (e) => setFleetView({ ...fleetView(), status: e.target.value, page: 1 }));
    $("#fleet-group").addEventListener("change", (e) => setFleetView({ ...fleetView(), group: e.target.value, page: 1 }));
    $("#fleet-list").addEventListener("click", (e) => {
      const th = e.target.closest("[data-sort]");
      if (th) {
        const cur = fleetView(), sort = th.dataset.sort;
        const order = cur.sort === sort ? (cur.order === "asc" ? "desc" : "asc") : SORTS[sort];
        setFleetView({ ...cur, sort, order, page: 1 });
        return;
      }
      const tr = e.target.closest("tr.dev");
      if (tr && !e.target.closest("a")) location.hash = `#/device/${encodeURIComponent(tr.dataset.device)}`;
    });
    $("#fleet-pager").addEventListener("click", (e) => {
      const b = e.target.closest("[data-page]");
      if (b) { const cur = fleetView(); setFleetView({ ...cur, page: Math.max(1, cur.page + Number(b.dataset.page)) }); }
    });
  }
  // A shared URL or the back button: the controls show the view's state.
  if (document.activeElement !== $("#fleet-search")) $("#fleet-search").value = v.q;
  $("#fleet-status").value = v.status;
  const [fleet, alerts, groups] = await Promise.all([api("/api/fleet"), api("/api/alerts?state=unresolved&limit=50"), api("/api/groups"), refreshFleet()]);
  fillGroups(groups.groups, v.group);
  $("#cards").innerHTML = `<div class="card"><div class="k">Devices</div><div class="v" data-testid="devices">${fleet.devices.toLocaleString("en")}</div></div>
    <div class="card"><div class="k">Online</div><div class="v" data-testid="online">${fleet.devicesOnline.toLocaleString("en")}</div></div>
    <div class="card${fleet.alertsOpen ? " alerting" : ""}"><div class="k">Open alerts</div><div class="v" data-testid="alerts-open">${fleet.alertsOpen}</div></div>
    <div class="card"><div class="k">Values / s</div><div class="v">${fmtNum(fleet.valuesPerSecond)}</div></div>`;
  $("#feed").innerHTML = alerts.alerts.length ? alerts.alerts.map(alertHtml).join("") : `<div class="empty">No open alerts. All quiet.</div>`;
}

// ---- device ----------------------------------------------------------------

const ranges = ["1h", "6h", "24h", "7d", "30d", "365d"];
const RANGE_MS = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3, "365d": 365 * 86400e3 };
// Points a chart asks for: about one per pixel of its width. The API reads the
// finest of the windows and the rollup tiers with at most this many rows, so
// a zoom reads finer rows.
const MAX_POINTS = 800;
// Raw readings are drawn for spans up to this (longer ones are what the aggregates are for).
const RAW_MAX_MS = 6 * 3600e3;
const RAW_LIMIT = 5000;
const COMPARE_MAX = 5;

// A device page's view, all of it in the URL (#/device/<id>?range=&from=&to=&window=&compare=&overlay=&raw=)
// so that it can be shared and the back button undoes a zoom.
function deviceView() {
  const [path, qs] = location.hash.slice("#/device/".length).split("?");
  const p = new URLSearchParams(qs || "");
  const from = Date.parse(p.get("from") || ""), to = Date.parse(p.get("to") || "");
  const zoomed = !isNaN(from) && !isNaN(to) && from < to;
  return {
    id: decodeURIComponent(path),
    range: ranges.includes(p.get("range")) ? p.get("range") : "1h",
    from: zoomed ? from : null,
    to: zoomed ? to : null,
    window: Number(p.get("window")) || null,
    compare: [...new Set((p.get("compare") || "").split(",").map((c) => c.trim()).filter(Boolean))].slice(0, COMPARE_MAX),
    overlay: p.get("overlay") === "1",
    raw: p.get("raw") !== "0",
  };
}
function deviceHash(v) {
  const p = new URLSearchParams();
  if (v.range !== "1h") p.set("range", v.range);
  if (v.from != null) { p.set("from", new Date(v.from).toISOString()); p.set("to", new Date(v.to).toISOString()); }
  if (v.window) p.set("window", v.window);
  if (v.compare.length) p.set("compare", v.compare.join(","));
  if (v.overlay) p.set("overlay", "1");
  if (!v.raw) p.set("raw", "0");
  const qs = p.toString();
  return `#/device/${encodeURIComponent(v.id)}${qs ? `?${qs}` : ""}`;
}
const setDeviceView = (v) => { location.hash = deviceHash(v); };

// The charting code (uPlot and charts.js, 55 KB), loaded when a device page
// is first opened, alongside its data: the fleet page does not wait for it.
let chartsLoaded = null;
function loadCharts() {
  const script = (src) => new Promise((resolve, reject) => {
    const s = Object.assign(document.createElement("script"), { src, onload: resolve, onerror: () => reject(new Error(`could not load ${src}`)) });
    document.head.append(s);
  });
  chartsLoaded ??= script("/vendor/uPlot.iife.min.js").then(() => script("/charts.js"));
  // A failed load is retried on the next render.
  return chartsLoaded.catch((e) => { chartsLoaded = null; throw e; });
}

// The charts on screen, kept across live updates so hovering and the tooltip survive them.
let shown = { key: null, charts: [] };

async function device() {
  const v = deviceView();
  const id = v.id, enc = encodeURIComponent;
  const chartsReady = loadCharts();
  const d = await api(`/api/devices/${enc(id)}`);
  const metrics = Object.keys(d.lastValues || {}).sort();
  const rangeQ = v.from != null ? `from=${enc(new Date(v.from).toISOString())}&to=${enc(new Date(v.to).toISOString())}` : `from=${v.range}`;
  const spanMs = v.from != null ? v.to - v.from : RANGE_MS[v.range];
  const rawWanted = v.raw && !v.overlay && spanMs <= RAW_MAX_MS;
  const seriesOf = (dev, m) => api(`/api/devices/${enc(dev)}/series?metric=${enc(m)}&${rangeQ}&maxPoints=${MAX_POINTS}${v.window ? `&window=${v.window}` : ""}`);
  // Raw readings are optional: no raw store (501) or an outage only hides the dots.
  const rawReq = rawWanted ? api(`/api/devices/${enc(id)}/raw?${rangeQ}&limit=${RAW_LIMIT}`).catch((e) => ({ error: e.message })) : Promise.resolve(null);
  // A device compared that does not exist or lacks a metric has no line there; a bad id is named.
  const [own, others, rawRes] = await Promise.all([
    Promise.all(metrics.map((m) => seriesOf(id, m))),
    Promise.all(v.compare.map((c) => Promise.all(metrics.map((m) => seriesOf(c, m).catch(() => null))))),
    rawReq,
  ]);
  const rawOf = (m) => (rawRes && rawRes.readings ? rawRes.readings.filter((r) => m in r.metrics).map((r) => [Date.parse(r.eventTime), r.metrics[m]]) : []);
  const stamp = (t) => new Date(t).toISOString().slice(0, 16).replace(/[:T]/g, "");
  const onZoom = (from, to) => setDeviceView({ ...deviceView(), from, to });
  const specs = [];
  const bounds = (s) => ({ from: Date.parse(s.from), to: Date.parse(s.to) });
  if (v.overlay && own.length) {
    specs.push({ key: "overlay", title: metrics.join(" · "), lines: own.map((s, i) => ({ label: metrics[i], series: s, scale: metrics[i] })), raw: [], ...bounds(own[0]), fileName: `${id}-${metrics.join("+")}-${stamp(Date.parse(own[0].from))}.csv`, onZoom });
  } else {
    own.forEach((s, i) => {
      const lines = [{ label: id, series: s }];
      v.compare.forEach((c, k) => { if (others[k][i]?.points.length) lines.push({ label: c, series: others[k][i] }); });
      specs.push({ key: metrics[i], title: metrics[i], latest: d.lastValues[metrics[i]].value, lines, raw: rawOf(metrics[i]), ...bounds(s), fileName: `${id}-${metrics[i]}-${stamp(Date.parse(s.from))}.csv`, onZoom });
    });
  }
  await chartsReady;
  const key = JSON.stringify([id, v.overlay, v.compare, metrics, location.hash]);
  const live = shown.key === key && shown.charts.length === specs.length && document.querySelector("[data-testid=chart]");
  if (live) {
    // A live update of the same view: new data into the charts on screen.
    shown.charts = shown.charts.map((c, i) => c.update(specs[i]));
    $("#last-seen").innerHTML = `<span class="dot${d.online ? " on" : ""}"></span>${d.online ? "online" : "offline"} · last seen ${ago(d.lastSeen)}`;
    return;
  }
  shown.charts.forEach((c) => c.destroy());
  const rawNote = !rawWanted ? "" : rawRes && rawRes.readings
    ? `<span class="note" data-testid="raw-note">dots: ${rawRes.readings.length}${rawRes.truncated ? ` (the first ${RAW_LIMIT})` : ""} raw readings from ${rawRes.source === "cosmos" ? "Cosmos DB" : "the local archive"}</span>`
    : `<span class="note">raw readings unavailable</span>`;
  const missing = v.compare.filter((c, k) => others[k].every((s) => !s || !s.points.length));
  const windows = [...new Set(own.flatMap((s) => s.availableWindows))].sort((a, b) => a - b);
  const zoomNote = v.from != null
    ? `<span class="note" data-testid="zoom">${new Date(v.from).toLocaleString()} – ${new Date(v.to).toLocaleString()}</span><button data-testid="unzoom" id="unzoom">Reset zoom</button>` : "";
  const controls = `<div class="controls">${ranges.map((r) => `<button data-range="${r}" class="${r === v.range && v.from == null ? "sel" : ""}">${r}</button>`).join("")}${zoomNote}
    <label>window <select id="win">${(windows.length ? windows : [10]).map((w) => `<option value="${w}" ${w === (v.window || own[0]?.windowSeconds) ? "selected" : ""}>${w} s</option>`).join("")}</select></label>
    ${spanMs <= RAW_MAX_MS && !v.overlay ? `<label><input type="checkbox" id="raw" ${v.raw ? "checked" : ""}> raw readings</label>` : ""}${rawNote}</div>
    <form class="controls" id="compare-form"><label>compare with <input id="compare" data-testid="compare" placeholder="device ids, comma-separated" value="${esc(v.compare.join(", "))}"></label>
    <button type="submit">Show</button><label><input type="checkbox" id="overlay" data-testid="overlay" ${v.overlay ? "checked" : ""}> metrics on one chart</label>
    ${missing.length ? `<span class="note" data-testid="compare-missing">no data for ${missing.map(esc).join(", ")} in this range</span>` : ""}</form>`;
  const sections = specs.map((s, i) => `<section class="panel chart"><h3>${esc(s.title)} ${s.latest != null ? `<span>latest ${fmtNum(s.latest)}</span>` : ""}</h3>
    ${s.lines[0].series.points.length || s.raw.length ? `<div data-testid="chart" data-chart="${i}"></div>` : `<div class="empty">No windows in this range.</div>`}</section>`).join("");
  $("#view").innerHTML = `<div class="head"><a href="${esc(fleetHash)}" data-testid="back">← Fleet</a><h1 data-testid="device-title">${esc(id)}</h1>
    <span id="last-seen"><span class="dot${d.online ? " on" : ""}"></span>${d.online ? "online" : "offline"} · last seen ${ago(d.lastSeen)}</span></div>
    ${controls}<div class="charts${v.overlay ? " one" : ""}">${sections || `<div class="empty">No metrics yet.</div>`}</div>
    ${sections ? `<div class="legend" data-testid="legend"><i class="l-band"></i>min to max of each window<i class="l-expected"></i>what the models expected<i class="l-warming"></i>models still learning the series<i class="l-alert"></i>alert · drag across a chart to zoom</div>` : ""}`;
  shown = {
    key,
    charts: specs.flatMap((s, i) => {
      const el = document.querySelector(`[data-chart="${i}"]`);
      return el ? [TributaryCharts.createChart(el, s)] : [];
    }),
  };
  document.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => setDeviceView({ ...deviceView(), range: b.dataset.range, from: null, to: null })));
  $("#unzoom")?.addEventListener("click", () => setDeviceView({ ...deviceView(), from: null, to: null }));
  $("#win").addEventListener("change", (e) => setDeviceView({ ...deviceView(), window: Number(e.target.value) }));
  $("#raw")?.addEventListener("change", (e) => setDeviceView({ ...deviceView(), raw: e.target.checked }));
  $("#overlay").addEventListener("change", (e) => setDeviceView({ ...deviceView(), overlay: e.target.checked }));
  $("#compare-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setDeviceView({ ...deviceView(), compare: $("#compare").value.split(",").map((c) => c.trim()).filter(Boolean).slice(0, COMPARE_MAX) });
  });
}

// ---- routing, actions, live ------------------------------------------------

async function render() {
  try {
    if (/^#\/device\/./.test(location.hash)) await device();
    else if (/^#\/registry/.test(location.hash)) await registryPage();
    else if (/^#\/rules/.test(location.hash)) await rulesPage();
    else if (/^#\/channels/.test(location.hash)) await channelsPage();
    else await overview();
    banner("");
  } catch (e) {
    if (e.code === "sign_in_required" && !appService()) { banner(""); signInView(); return; }
    banner(`Could not load data: ${e.message}. Retrying when the next update arrives.`);
  }
}

document.addEventListener("click", async (e) => {
  const id = e.target.dataset.ack || e.target.dataset.resolve;
  if (!id) return;
  e.target.disabled = true;
  try {
    await api(`/api/alerts/${encodeURIComponent(id)}/${e.target.dataset.ack ? "ack" : "resolve"}`, { method: "POST" });
    await render();
  } catch (err) {
    banner(`Action failed: ${err.message}`);
    e.target.disabled = false;
  }
});

$("#operator").addEventListener("click", () => {
  // App Service's own sign-out ends the session it keeps.
  if (appService()) { location.href = "/.auth/logout"; return; }
  const t = prompt("Operator token (kept in this browser only). Empty to sign out:", token());
  if (t === null) return;
  if (t) localStorage.setItem("tributary.operatorToken", t); else localStorage.removeItem("tributary.operatorToken");
  updateOperator();
  render();
});

function updateOperator() {
  $("#registry-link").hidden = !isOperator();
  $("#channels-link").hidden = !isOperator();
  // A session (viewer or operator) ends with a sign-out; App Service has its own.
  $("#signout").hidden = appService() || !me.name;
  const b = $("#operator");
  if (appService()) {
    b.textContent = `${me.name}${me.operator ? " · operator" : ""} (sign out)`;
    b.title = me.operator ? "You may acknowledge and resolve alerts" : "Acknowledging and resolving alerts needs the operator app role";
  } else {
    b.textContent = token() ? "Operator ✓ (sign out)" : "Operator sign-in";
  }
}

$("#signout").addEventListener("click", async () => {
  await api("/api/session", { method: "DELETE" }).catch(() => {});
  localStorage.removeItem("tributary.operatorToken");
  location.reload();
});

let pending = null;
function connectLive() {
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => $("#live").classList.add("on"));
  es.addEventListener("change", () => {
    clearTimeout(pending);
    pending = setTimeout(render, 300);
  });
  es.onerror = () => $("#live").classList.remove("on");
}

window.addEventListener("hashchange", render);
updateOperator();
render();
connectLive();
// Not awaited before the first render: in token mode it changes nothing, and
// behind App Service it only adds the operator's buttons.
api("/api/me").then((m) => {
  me = m;
  updateOperator();
  if (appService()) render();
}).catch(() => {});
