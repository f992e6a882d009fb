// Time to first paint of the dashboard, cold, in headless Chromium: the
// page benchmark `scripts/bench page` runs (not a test).
// Usage: node paint-bench.mjs <dashboard url> [runs]
// Each run opens a fresh browser context (empty cache) and records, from the
// start of navigation (performance.now() = 0):
//   - first contentful paint (the Paint Timing API);
//   - the overview's device table rendered from the API (checked every frame);
//   - a device page's charts rendered (a second fresh context, straight to #/device/<id>).
// Prints one line per run and the medians.
import { chromium } from "playwright-core";

const [url, runsArg] = process.argv.slice(2);
const runs = Number(runsArg || 10);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const devices = await (await fetch(new URL("/api/devices?limit=1", url))).json();
const device = devices.devices[0]?.deviceId;
if (!device) { console.error("no devices yet: let the simulator run first"); process.exit(1); }

const rendered = (page, selector) => page.waitForFunction((s) => document.querySelector(s) && performance.now(), selector, { polling: "raf", timeout: 30000 }).then((h) => h.jsonValue());
// The paint entry can be recorded a frame after the content is up: wait for it.
const fcp = (page) => page.waitForFunction(() => performance.getEntriesByType("paint").find((p) => p.name === "first-contentful-paint")?.startTime, null, { timeout: 10000 }).then((h) => h.jsonValue());
const median = (v) => { const s = [...v].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

const rows = [];
for (let i = 0; i < runs; i++) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(url);
  const overview = await rendered(page, "[data-testid=device-row]");
  const paint = await fcp(page);
  await ctx.close();
  const ctx2 = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const dev = await ctx2.newPage();
  await dev.goto(`${url}#/device/${encodeURIComponent(device)}`);
  const chart = await rendered(dev, "[data-testid=chart]");
  const devPaint = await fcp(dev);
  await ctx2.close();
  rows.push({ paint, overview, devPaint, chart });
  console.log(`run ${i + 1}: first contentful paint ${paint.toFixed(1)} ms, fleet table ${overview.toFixed(1)} ms; device page: first paint ${devPaint.toFixed(1)} ms, charts ${chart.toFixed(1)} ms`);
}
await browser.close();
const m = (k) => median(rows.map((r) => r[k])).toFixed(1);
console.log(`\nmedians of ${runs} cold loads: first contentful paint ${m("paint")} ms; fleet table rendered ${m("overview")} ms; device page (${device}) first paint ${m("devPaint")} ms, charts rendered ${m("chart")} ms`);
