// Tributary's charts: uPlot (vendored in /vendor, MIT licence at
// /vendor/uplot.LICENSE) over the series API's answers.
//
// A chart draws one or more lines. The first is the subject: its windows'
// min-to-max band and mean, what the models expected (dashed), anomalies
// (red points), its alerts and the windows scored while the models warmed up
// (shaded), and raw readings as dots. The others (devices compared, or other
// metrics overlaid, each on a scale of its own) draw their means. Hovering
// shows the window under the cursor (count, min, max, mean, quantiles,
// anomaly score, expected band) and the other lines' values; dragging across
// asks for that range (the caller refetches, so the resolution follows the
// zoom); every chart exports what it shows as CSV.
"use strict";

const LINE_COLORS = ["#2563eb", "#d97706", "#7c3aed", "#059669", "#db2777", "#0891b2"];
const ANOMALY = 0.7;

const fmtVal = (x) => (x == null || isNaN(x) ? "–" : Math.abs(x) >= 1000 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2));
const escHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

// Seconds a point of `series` covers, and the time (s) it is drawn at: its middle.
const span = (s) => s.windowSeconds * (s.windowsPerPoint || 1);
const xOf = (s, p) => Date.parse(p.windowStart) / 1000 + span(s) / 2;

// The chart's columns: x, then per line its series, joined on x (uPlot.join
// leaves `undefined` where a line has no point, which lines connect across).
function columns(lines, raw) {
  const subject = lines[0].series;
  const pts = subject.points;
  const xs = pts.map((p) => xOf(subject, p));
  const tables = [[
    xs,
    pts.map((p) => p.min),
    pts.map((p) => p.max),
    pts.map((p) => p.mean),
    pts.map((p) => p.expectedLow ?? null),
    pts.map((p) => p.expectedHigh ?? null),
    pts.map((p) => (p.anomalyScore >= ANOMALY ? p.max : null)),
  ]];
  // Raw readings are a series only when there are some (as in options()).
  if (raw.length) tables.push([raw.map((r) => r[0] / 1000), raw.map((r) => r[1])]);
  for (const l of lines.slice(1)) tables.push([l.series.points.map((p) => xOf(l.series, p)), l.series.points.map((p) => p.mean)]);
  return uPlot.join(tables);
}

// For the tooltip: each line's points in time order, to find the one whose
// window holds a time (the cursor may rest on a raw reading's time, or on
// another line's point).
function pointIndex(lines) {
  return lines.map((l) => ({ xs: l.series.points.map((p) => xOf(l.series, p)), pts: l.series.points, half: span(l.series) / 2 }));
}
function pointAt(index, t) {
  const { xs, pts, half } = index;
  let lo = 0, hi = xs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < t) lo = mid + 1; else hi = mid;
  }
  const near = [lo - 1, lo].filter((i) => i >= 0 && i < xs.length).sort((a, b) => Math.abs(xs[a] - t) - Math.abs(xs[b] - t))[0];
  return near != null && Math.abs(xs[near] - t) <= half ? pts[near] : null;
}

function csv(lines) {
  const head = ["deviceId", "metric", "windowStart", "seconds", "count", "min", "max", "mean", "stddev", "p50", "p95", "p99", "anomalyScore", "model", "expectedLow", "expectedHigh", "warming"];
  const cell = (v) => (v == null ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
  const rows = lines.flatMap((l) => l.series.points.map((p) => [l.series.deviceId, l.series.metric, p.windowStart, span(l.series), p.count, p.min, p.max, p.mean, p.stddev, p.p50, p.p95, p.p99, p.anomalyScore, p.model, p.expectedLow, p.expectedHigh, p.warming]));
  return [head, ...rows].map((r) => r.map(cell).join(",")).join("\n") + "\n";
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Shaded spans behind the lines: the subject's alerts and warming windows.
function drawSpans(u, chart) {
  const s = chart.lines[0].series;
  const ctx = u.ctx, { top, height } = u.bbox;
  const x = (t) => u.valToPos(t, "x", true);
  ctx.save();
  ctx.fillStyle = "rgba(226, 232, 240, 0.6)";
  for (const p of s.points) {
    if (!p.warming) continue;
    const x0 = x(Date.parse(p.windowStart) / 1000), x1 = x(Date.parse(p.windowStart) / 1000 + span(s));
    ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
  }
  ctx.fillStyle = "rgba(254, 202, 202, 0.45)";
  for (const a of s.alerts) {
    const x0 = x(Date.parse(a.openedAt) / 1000), x1 = x(Date.parse(a.resolvedAt || a.updatedAt) / 1000 + s.windowSeconds);
    ctx.fillRect(x0, top, Math.max(3, x1 - x0), height);
  }
  ctx.restore();
}

function tooltipHtml(chart, idx) {
  const u = chart.u, t = u.data[0][idx];
  const rows = [];
  chart.lines.forEach((l, i) => {
    const p = pointAt(chart.index[i], t);
    if (!p) return;
    const who = escHtml(chart.lines.length > 1 ? l.label : l.series.metric);
    if (i === 0) {
      rows.push(`<div><b style="color:${l.color}">${who}</b> mean ${fmtVal(p.mean)} · ${p.count} values</div>`,
        `<div>min ${fmtVal(p.min)} · max ${fmtVal(p.max)} · p50 ${fmtVal(p.p50)} · p95 ${fmtVal(p.p95)} · p99 ${fmtVal(p.p99)}</div>`,
        `<div class="${p.anomalyScore >= ANOMALY ? "hot" : ""}">${escHtml(p.model)} score ${fmtVal(p.anomalyScore)}${p.expectedLow != null ? ` · expected ${fmtVal(p.expectedLow)} to ${fmtVal(p.expectedHigh)}` : ""}${p.warming ? " · models warming up" : ""}</div>`);
    } else {
      rows.push(`<div><b style="color:${l.color}">${who}</b> mean ${fmtVal(p.mean)} · min ${fmtVal(p.min)} · max ${fmtVal(p.max)}</div>`);
    }
  });
  const reading = chart.raw.find((r) => r[0] / 1000 === t);
  if (reading) rows.push(`<div>reading ${fmtVal(reading[1])} at ${new Date(reading[0]).toLocaleTimeString()}</div>`);
  const alerts = chart.lines[0].series.alerts.filter((a) => Date.parse(a.openedAt) / 1000 <= t && t <= Date.parse(a.resolvedAt || a.updatedAt) / 1000 + chart.lines[0].series.windowSeconds);
  for (const a of alerts) rows.push(`<div class="hot">alert: ${escHtml(a.reason)} (${escHtml(a.state)})</div>`);
  if (!rows.length) return "";
  const s = chart.lines[0].series, own = pointAt(chart.index[0], t);
  const when = own ? `${new Date(own.windowStart).toLocaleString()} · ${span(s) >= 60 ? `${span(s) / 60} min` : `${span(s)} s`}` : new Date(t * 1000).toLocaleString();
  return `<div class="when">${when}</div>${rows.join("")}`;
}

function options(chart, width) {
  const lines = chart.lines;
  const scaleOf = (l) => l.scale || "y";
  const series = [
    {},
    { label: "min", stroke: "transparent", points: { show: false }, scale: scaleOf(lines[0]) },
    { label: "max", stroke: "transparent", points: { show: false }, scale: scaleOf(lines[0]) },
    { label: lines[0].label, stroke: lines[0].color, width: 1.8, points: { show: false }, scale: scaleOf(lines[0]) },
    { label: "expected low", stroke: "#16a34a", dash: [4, 3], width: 1.2, points: { show: false }, scale: scaleOf(lines[0]) },
    { label: "expected high", stroke: "#16a34a", dash: [4, 3], width: 1.2, points: { show: false }, scale: scaleOf(lines[0]) },
    { label: "anomaly", stroke: "#dc2626", paths: () => null, points: { show: true, size: 9, fill: "#dc2626", stroke: "#dc2626" }, scale: scaleOf(lines[0]) },
  ];
  if (chart.raw.length) series.push({ label: "raw", stroke: "rgba(51, 65, 85, 0.45)", paths: () => null, points: { show: true, size: 3, fill: "rgba(51, 65, 85, 0.35)", stroke: "transparent" }, scale: scaleOf(lines[0]) });
  for (const l of lines.slice(1)) series.push({ label: l.label, stroke: l.color, width: 1.6, points: { show: false }, scale: scaleOf(l) });
  const scales = [...new Set(lines.map(scaleOf))];
  const axes = [{ stroke: "#6b7785", grid: { stroke: "#eef2f6" } }];
  scales.slice(0, 2).forEach((sc, i) => axes.push({ scale: sc, side: i ? 1 : 3, stroke: i ? lines.find((l) => scaleOf(l) === sc).color : "#6b7785", grid: { show: i === 0, stroke: "#eef2f6" }, size: 52, values: (u, v) => v.map(fmtVal) }));
  return {
    width,
    height: chart.height,
    legend: { show: false },
    scales: { x: { time: true, range: () => [chart.from / 1000, chart.to / 1000] } },
    series,
    axes,
    bands: [{ series: [2, 1], fill: "rgba(191, 219, 254, 0.55)" }],
    cursor: { drag: { x: true, y: false, setScale: false }, points: { size: 7 } },
    hooks: {
      drawClear: [(u) => drawSpans(u, chart)],
      setCursor: [(u) => {
        const tip = chart.tip, idx = u.cursor.idx;
        const html = idx == null ? "" : tooltipHtml(chart, idx);
        tip.hidden = !html;
        if (!html) return;
        tip.innerHTML = html;
        const left = u.cursor.left, room = u.over.clientWidth;
        tip.style.left = `${Math.min(Math.max(0, left + 12), Math.max(0, room - tip.offsetWidth))}px`;
        tip.style.top = `${Math.max(0, u.cursor.top - tip.offsetHeight - 10)}px`;
      }],
      // A drag across the plot asks for that range; the caller refetches it.
      setSelect: [(u) => {
        if (u.select.width < 4) return;
        const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        chart.onZoom(Math.round(a * 1000), Math.round(b * 1000));
      }],
    },
  };
}

// What tests and screen readers read off a chart.
function describe(el, chart) {
  const s = chart.lines[0].series, pts = s.points;
  Object.assign(el.dataset, {
    points: pts.length,
    raw: chart.raw.length,
    expected: pts.filter((p) => p.expectedLow != null && p.expectedHigh != null).length,
    warming: pts.filter((p) => p.warming).length,
    anomalies: pts.filter((p) => p.anomalyScore >= ANOMALY).length,
    windowSeconds: span(s),
    source: s.source,
    lines: chart.lines.length,
    title: chart.title,
  });
  el.setAttribute("aria-label", `${chart.title}: ${chart.lines.map((l) => l.label).join(", ")}, ${pts.length} points`);
}

// Draws a chart into `el` (emptied) and returns a handle whose update()
// swaps the data in place (the cursor and tooltip stay) when the lines are
// the same, or rebuilds the chart when they are not.
//   spec: { title, lines: [{ label, series, scale? }], raw: [[ms, value]], from, to (ms),
//           height?, fileName, onZoom(fromMs, toMs) }
function createChart(el, spec) {
  const chart = { ...spec, height: spec.height || 240 };
  chart.lines = spec.lines.map((l, i) => ({ ...l, color: LINE_COLORS[i % LINE_COLORS.length] }));
  el.innerHTML = `<div class="plot-tools"><span class="lines">${chart.lines.length > 1 ? chart.lines.map((l) => `<i style="background:${l.color}"></i>${escHtml(l.label)}`).join(" ") : ""}</span>
    <button type="button" class="csv" data-testid="csv" title="Download what this chart shows as CSV">CSV</button></div>
    <div class="plot-area"><div class="tip" data-testid="tooltip" hidden></div></div>`;
  el.classList.add("plot");
  el.setAttribute("role", "img");
  const area = el.querySelector(".plot-area");
  chart.tip = area.querySelector(".tip");
  chart.index = pointIndex(chart.lines);
  chart.u = new uPlot(options(chart, Math.max(260, area.clientWidth)), columns(chart.lines, chart.raw), area);
  el.uplot = chart.u;
  describe(el, chart);
  el.querySelector(".csv").addEventListener("click", () => download(chart.fileName, csv(chart.lines)));
  const resize = new ResizeObserver(() => {
    const w = Math.max(260, area.clientWidth);
    if (Math.abs(w - chart.u.width) > 2) chart.u.setSize({ width: w, height: chart.height });
  });
  resize.observe(area);
  return {
    el,
    sameShape: (next) => next.lines.length === chart.lines.length && next.lines.every((l, i) => l.label === chart.lines[i].label) && !!next.raw.length === !!chart.raw.length,
    update(next) {
      if (!this.sameShape(next)) {
        resize.disconnect();
        chart.u.destroy();
        return createChart(el, next);
      }
      Object.assign(chart, { from: next.from, to: next.to, raw: next.raw, fileName: next.fileName, onZoom: next.onZoom });
      next.lines.forEach((l, i) => { chart.lines[i].series = l.series; });
      chart.index = pointIndex(chart.lines);
      chart.u.setData(columns(chart.lines, chart.raw));
      describe(el, chart);
      return this;
    },
    destroy() { resize.disconnect(); chart.u.destroy(); },
  };
}

window.TributaryCharts = { createChart };
