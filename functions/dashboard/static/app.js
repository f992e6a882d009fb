// Tributary dashboard: a small single-page app over the JSON API.
// Views: #/ (fleet overview, alert feed) and #/device/<id> (charts).
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

async function api(path, opts = {}) {
  const headers = opts.headers || {};
  if (opts.method === "POST" && token()) headers.Authorization = `Bearer ${token()}`;
  const r = await fetch(path, { ...opts, headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || `${r.status} ${r.statusText}`);
  return body;
}

function banner(msg) {
  const b = $("#banner");
  b.hidden = !msg;
  b.textContent = msg || "";
}

// ---- overview --------------------------------------------------------------

function alertHtml(a) {
  const high = a.score >= 0.9 ? " high" : "";
  const acts = token() && a.state !== "resolved"
    ? `<div class="acts">${a.state === "open" ? `<button class="primary" data-ack="${esc(a.id)}" data-testid="ack">Acknowledge</button>` : ""}<button data-resolve="${esc(a.id)}">Resolve</button></div>`
    : "";
  return `<div class="alert${high}" data-testid="alert" data-alert-id="${esc(a.id)}">
    <div><span class="pill ${esc(a.state)}" data-testid="alert-state">${esc(a.state)}</span>
      <a href="#/device/${encodeURIComponent(a.deviceId)}">${esc(a.deviceId)}</a> · <b>${esc(a.metric)}</b> = ${fmtNum(a.value)}</div>
    <div>${esc(a.reason)}</div>
    <div class="meta">${esc(a.model)} · score ${fmtNum(a.score)} · opened ${ago(a.openedAt)}${a.acknowledgedBy ? ` · acknowledged by ${esc(a.acknowledgedBy)}` : ""}</div>
    ${acts}</div>`;
}

// The fleet list's view: search, status, order and page, kept in the URL
// (#/?q=&status=&sort=&order=&page=) so a view can be shared and survives a reload.
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
    sort,
    order: ["asc", "desc"].includes(p.get("order")) ? p.get("order") : SORTS[sort],
    page: Math.max(1, parseInt(p.get("page"), 10) || 1),
  };
}
function setFleetView(v) {
  const p = new URLSearchParams();
  if (v.q) p.set("q", v.q);
  if (v.status !== "all") p.set("status", v.status);
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
    const filtered = v.q || v.status !== "all";
    return filtered
      ? `<div class="empty" data-testid="no-match">No device matches${v.q ? ` “${esc(v.q)}”` : ""}${v.status !== "all" ? ` (${esc(v.status)})` : ""}.</div>`
      : `<div class="empty" data-testid="empty">No devices yet. Send a reading, or start simulated devices with <code>tributary simulate</code>.</div>`;
  }
  const th = (key, label, cls = "") => {
    const arrow = v.sort === key ? (v.order === "asc" ? " ▲" : " ▼") : "";
    return `<th class="sortable${cls}" data-sort="${key}" data-testid="sort-${key}" aria-sort="${v.sort === key ? (v.order === "asc" ? "ascending" : "descending") : "none"}">${label}${arrow}</th>`;
  };
  const rows = devs.devices.map((d) => {
    const metrics = Object.entries(d.lastValues || {}).slice(0, 3).map(([k, val]) => `${esc(k)} ${fmtNum(val.value)}`).join(" · ");
    return `<tr class="dev" data-device="${esc(d.deviceId)}" data-testid="device-row"><td><span class="dot${d.online ? " on" : ""}"></span><a href="#/device/${encodeURIComponent(d.deviceId)}">${esc(d.deviceId)}</a></td>
      <td>${ago(d.lastSeen)}</td><td class="hide-sm">${metrics}</td><td>${d.openAlerts ? `<span class="pill open">${d.openAlerts}</span>` : ""}</td></tr>`;
  }).join("");
  return `<table><thead><tr>${th("deviceId", "Device")}${th("lastSeen", "Last seen")}<th class="hide-sm">Latest</th>${th("openAlerts", "Alerts")}</tr></thead><tbody>${rows}</tbody></table>`;
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
  const devs = await api(`/api/devices?${qs}`);
  if (seq !== fleetSeq || !$("#fleet-list")) return; // a newer request or another view won
  $("#fleet-list").innerHTML = fleetTable(devs, v);
  $("#fleet-pager").innerHTML = pager(devs);
}

async function overview() {
  const v = fleetView();
  fleetHash = location.hash || "#/";
  if (!$("#fleet-list")) {
    $("#view").innerHTML = `<div class="cards" id="cards"></div><div class="grid"><section class="panel"><h2>Fleet</h2>
      <div class="filters"><input type="search" id="fleet-search" data-testid="fleet-search" placeholder="Search device id" aria-label="Search device id" maxlength="128">
      <select id="fleet-status" data-testid="fleet-status" aria-label="Status">${["all", "online", "offline", "alerting"].map((s) => `<option value="${s}">${s}</option>`).join("")}</select></div>
      <div id="fleet-list"></div><div id="fleet-pager"></div></section>
      <section class="panel" data-testid="alert-feed"><h2>Alerts</h2><div id="feed"></div></section></div>`;
    let typing = null;
    $("#fleet-search").addEventListener("input", (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => setFleetView({ ...fleetView(), q: e.target.value.trim(), page: 1 }), 200);
    });
    $("#fleet-status").addEventListener("change", (e) => setFleetView({ ...fleetView(), status: e.target.value, page: 1 }));
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
  const [fleet, alerts] = await Promise.all([api("/api/fleet"), api("/api/alerts?state=unresolved&limit=50"), refreshFleet()]);
  $("#cards").innerHTML = `<div class="card"><div class="k">Devices</div><div class="v" data-testid="devices">${fleet.devices.toLocaleString("en")}</div></div>
    <div class="card"><div class="k">Online</div><div class="v" data-testid="online">${fleet.devicesOnline.toLocaleString("en")}</div></div>
    <div class="card${fleet.alertsOpen ? " alerting" : ""}"><div class="k">Open alerts</div><div class="v" data-testid="alerts-open">${fleet.alertsOpen}</div></div>
    <div class="card"><div class="k">Values / s</div><div class="v">${fmtNum(fleet.valuesPerSecond)}</div></div>`;
  $("#feed").innerHTML = alerts.alerts.length ? alerts.alerts.map(alertHtml).join("") : `<div class="empty">No open alerts. All quiet.</div>`;
}

// ---- device ----------------------------------------------------------------

const ranges = ["1h", "6h", "24h", "7d", "30d", "365d"];
// Points a chart asks for: about one per pixel of its width. The API reads the
// finest of the windows and the rollup tiers with at most this many rows.
const MAX_POINTS = 800;
// Raw readings are drawn for ranges up to this (longer ones are what the aggregates are for).
const rawRanges = ["1h", "6h"];
const RAW_LIMIT = 5000;
const state = { range: "1h", window: null, raw: true };

function chart(series, raw) {
  const W = 800, H = 220, L = 48, R = 10, T = 10, B = 26;
  const pts = series.points;
  if (!pts.length && !raw.length) return `<div class="empty">No windows in this range.</div>`;
  const t0 = Date.parse(series.from), t1 = Date.parse(series.to);
  let lo = Math.min(...pts.map((p) => p.min), ...raw.map((r) => r[1])), hi = Math.max(...pts.map((p) => p.max), ...raw.map((r) => r[1]));
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const tx = pts.map((p) => x(Date.parse(p.windowStart) + series.windowSeconds * (series.windowsPerPoint || 1) * 500));
  const band = pts.map((p, i) => `${tx[i]},${y(p.max)}`).concat(pts.map((p, i) => `${tx[i]},${y(p.min)}`).reverse()).join(" ");
  const line = pts.map((p, i) => `${i ? "L" : "M"}${tx[i].toFixed(1)},${y(p.mean).toFixed(1)}`).join("");
  // What the models expected: one polygon per run of windows that carry a band,
  // clamped to the plot so a wide early band does not squash the data.
  const yc = (v) => y(Math.min(hi, Math.max(lo, v)));
  const runs = [];
  pts.forEach((p, i) => {
    if (p.expectedLow == null || p.expectedHigh == null) return;
    if (i && runs.length && runs[runs.length - 1].end === i - 1) runs[runs.length - 1].end = i; else runs.push({ start: i, end: i });
  });
  const expected = runs.map(({ start, end }) => {
    const idx = Array.from({ length: end - start + 1 }, (_, k) => start + k);
    const poly = idx.map((i) => `${tx[i].toFixed(1)},${yc(pts[i].expectedHigh).toFixed(1)}`)
      .concat(idx.reverse().map((i) => `${tx[i].toFixed(1)},${yc(pts[i].expectedLow).toFixed(1)}`)).join(" ");
    return `<polygon class="expected" points="${poly}"><title>expected range</title></polygon>`;
  }).join("");
  const nExpected = pts.filter((p) => p.expectedLow != null && p.expectedHigh != null).length;
  // Where the models were still learning the series: their scores are not to be trusted yet.
  const step = pts.length > 1 ? (tx[pts.length - 1] - tx[0]) / (pts.length - 1) : 8;
  const warming = pts.map((p, i) => (p.warming ? `<rect class="warming" x="${(tx[i] - step / 2).toFixed(1)}" y="${T}" width="${Math.max(1, step).toFixed(1)}" height="${H - T - B}"><title>models warming up</title></rect>` : "")).join("");
  const nWarming = pts.filter((p) => p.warming).length;
  const band$ = (p) => (p.expectedLow != null && p.expectedHigh != null ? `, expected ${fmtNum(p.expectedLow)} to ${fmtNum(p.expectedHigh)}` : "");
  const anoms = pts.map((p, i) => (p.anomalyScore >= 0.7 ? `<circle class="anom" cx="${tx[i]}" cy="${y(p.max)}" r="4"><title>${esc(p.model)} score ${fmtNum(p.anomalyScore)}: ${fmtNum(p.min)} to ${fmtNum(p.max)}${band$(p)}</title></circle>` : "")).join("");
  const spans = series.alerts.map((a) => {
    const a0 = Math.max(t0, Date.parse(a.openedAt)), a1 = Math.min(t1, Date.parse(a.resolvedAt || a.updatedAt) + series.windowSeconds * 1000);
    return `<rect class="span" x="${x(a0)}" y="${T}" width="${Math.max(3, x(a1) - x(a0))}" height="${H - T - B}"><title>${esc(a.reason)}</title></rect>`;
  }).join("");
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const t = t0 + f * (t1 - t0);
    const lbl = t1 - t0 > 86400e3 ? new Date(t).toLocaleDateString([], { month: "short", day: "numeric" }) : new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const anchor = f === 0 ? "start" : f === 1 ? "end" : "middle";
    return `<text x="${x(t)}" y="${H - 8}" text-anchor="${anchor}">${lbl}</text>`;
  }).join("");
  const vt = [lo + pad, (lo + hi) / 2, hi - pad].map((v) => `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${fmtNum(v)}</text>`).join("");
  const dots = raw.map(([t, v]) => `<circle cx="${x(t).toFixed(1)}" cy="${y(v).toFixed(1)}" r="1.6"/>`).join("");
  return `<svg class="plot" viewBox="0 0 ${W} ${H}" role="img" data-testid="chart" data-points="${pts.length}" data-raw="${raw.length}" data-expected="${nExpected}" data-warming="${nWarming}">
    ${spans}${warming}<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/>${expected}<polygon class="band" points="${band}"/>
    <g class="raw">${dots}</g><path class="line" d="${line}"/>${anoms}${ticks}${vt}</svg>`;
}

async function device(id) {
  const d = await api(`/api/devices/${encodeURIComponent(id)}`);
  const metrics = Object.keys(d.lastValues || {}).sort();
  const rawWanted = state.raw && rawRanges.includes(state.range);
  // Raw readings are optional: no raw store (501) or an outage only hides the dots.
  const rawReq = rawWanted ? api(`/api/devices/${encodeURIComponent(id)}/raw?from=${state.range}&limit=${RAW_LIMIT}`).catch((e) => ({ error: e.message })) : Promise.resolve(null);
  const [all, rawRes] = await Promise.all([
    Promise.all(metrics.map((m) => api(`/api/devices/${encodeURIComponent(id)}/series?metric=${encodeURIComponent(m)}&from=${state.range}&maxPoints=${MAX_POINTS}${state.window ? `&window=${state.window}` : ""}`))),
    rawReq,
  ]);
  const rawOf = (m) => (rawRes && rawRes.readings ? rawRes.readings.filter((r) => m in r.metrics).map((r) => [Date.parse(r.eventTime), r.metrics[m]]) : []);
  const rawNote = !rawWanted ? "" : rawRes && rawRes.readings
    ? `<span class="note" data-testid="raw-note">dots: ${rawRes.readings.length}${rawRes.truncated ? ` (the first ${RAW_LIMIT})` : ""} raw readings from ${rawRes.source === "cosmos" ? "Cosmos DB" : "the local archive"}</span>`
    : `<span class="note">raw readings unavailable</span>`;
  const windows = [...new Set(all.flatMap((s) => s.availableWindows))].sort((a, b) => a - b);
  const controls = `<div class="controls">${ranges.map((r) => `<button data-range="${r}" class="${r === state.range ? "sel" : ""}">${r}</button>`).join("")}
    <label>window <select id="win">${(windows.length ? windows : [10]).map((w) => `<option value="${w}" ${w === (state.window || all[0]?.windowSeconds) ? "selected" : ""}>${w} s</option>`).join("")}</select></label>
    ${rawRanges.includes(state.range) ? `<label><input type="checkbox" id="raw" ${state.raw ? "checked" : ""}> raw readings</label>` : ""}${rawNote}</div>`;
  const charts = all.map((s) => `<section class="panel chart"><h3>${esc(s.metric)} <span>latest ${fmtNum(d.lastValues[s.metric].value)}</span></h3>${chart(s, rawOf(s.metric))}</section>`).join("");
  $("#view").innerHTML = `<div class="head"><a href="${esc(fleetHash)}" data-testid="back">← Fleet</a><h1 data-testid="device-title">${esc(id)}</h1>
    <span><span class="dot${d.online ? " on" : ""}"></span>${d.online ? "online" : "offline"} · last seen ${ago(d.lastSeen)}</span></div>
    ${controls}<div class="charts">${charts || `<div class="empty">No metrics yet.</div>`}</div>
    ${charts ? `<div class="legend" data-testid="legend"><i class="l-band"></i>min to max of each window<i class="l-expected"></i>what the models expected<i class="l-warming"></i>models still learning the series</div>` : ""}`;
  document.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => { state.range = b.dataset.range; render(); }));
  $("#win").addEventListener("change", (e) => { state.window = Number(e.target.value); render(); });
  $("#raw")?.addEventListener("change", (e) => { state.raw = e.target.checked; render(); });
}

// ---- routing, actions, live ------------------------------------------------

async function render() {
  try {
    const m = location.hash.match(/^#\/device\/(.+)$/);
    if (m) await device(decodeURIComponent(m[1])); else await overview();
    banner("");
  } catch (e) {
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
  const t = prompt("Operator token (kept in this browser only). Empty to sign out:", token());
  if (t === null) return;
  if (t) localStorage.setItem("tributary.operatorToken", t); else localStorage.removeItem("tributary.operatorToken");
  updateOperator();
  render();
});

function updateOperator() {
  $("#operator").textContent = token() ? "Operator ✓ (sign out)" : "Operator sign-in";
}

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
