// Drives a device page's charts in headless Chromium as an analyst would, for
// the browser test (functions/dashboard/tests/browser.rs seeds the data).
// Usage: node charts.mjs <dashboard url> <screenshot dir> <device> <other device>
// Expects <device> with a day of 60 s windows of speed and engine_temp (one
// anomalous window of speed, scored 0.95) and the last 2 h also in 10 s
// windows, rolled up; <other device> with a day of speed.
// Prints one line per step and "DONE"; exits 1 naming the step that failed.
import { readFileSync } from "node:fs";
import { hoverAnomaly, start } from "./lib.mjs";

const [url, shots, device, other] = process.argv.slice(2);
const { context, page, fail, shot, done } = await start(shots, "charts", { width: 1280, height: 900 });
// The speed chart, which holds the anomaly.
const SPEED = "[data-testid=chart][data-title=speed]";
const chartAttr = (name, p = page) => p.getAttribute(SPEED, `data-${name}`, { timeout: 10000 });
// Waits for the speed chart to show `name` satisfying `ok`, naming what it showed instead.
const waitChart = async (name, ok, what, p = page) => {
  const deadline = Date.now() + 10000;
  let last;
  while (Date.now() < deadline) {
    last = await chartAttr(name, p).catch(() => null);
    if (last != null && ok(last)) return last;
    await p.waitForTimeout(100);
  }
  await fail(`${what}: the chart's ${name} is ${last}`, p);
};

try {
  const dayUrl = `${url}#/device/${device}?range=24h`;
  await page.goto(dayUrl);
  await page.waitForSelector(SPEED, { timeout: 20000 });
  const daySpan = Number(await waitChart("window-seconds", (v) => Number(v) >= 60, "a day is read at a minute or coarser"));
  const dayPoints = Number(await chartAttr("points"));
  if (!(dayPoints > 100 && dayPoints <= 800)) await fail(`a day shows ${dayPoints} points`);
  console.log(`DAY-OK ${dayPoints} points of ${daySpan} s`);

  // Hover: the window under the cursor, with its quantiles and anomaly score.
  const tip = await hoverAnomaly(page, SPEED, fail);
  for (const want of [/\d+ values/, /min .* max /, /p50 .* p95 .* p99 /, /score 0\.95/]) {
    if (!want.test(tip)) await fail(`the tooltip "${tip}" lacks ${want}`);
  }
  await shot("charts-hover.png");
  console.log("HOVER-OK");

  // Drag across the last eighth of the day: the range follows, read at a finer resolution.
  const box = await page.evaluate((sel) => {
    const r = document.querySelector(sel).uplot.over.getBoundingClientRect();
    return { left: r.left, top: r.top, width: r.width, height: r.height };
  }, SPEED);
  await page.mouse.move(box.left + box.width * 0.9, box.top + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.left + box.width * 0.95, box.top + box.height / 2, { steps: 5 });
  await page.mouse.move(box.left + box.width * 0.99, box.top + box.height / 2, { steps: 5 });
  await page.mouse.up();
  const zoomSpan = Number(await waitChart("window-seconds", (v) => Number(v) < daySpan, "after a zoom to about two hours"));
  const zoomedUrl = page.url();
  if (!/from=/.test(zoomedUrl) || !/to=/.test(zoomedUrl)) await fail(`the zoom is not in the URL: ${zoomedUrl}`);
  await page.waitForSelector("[data-testid=zoom]");
  console.log(`ZOOM-OK ${zoomSpan} s per point`);

  // The URL is the view: a fresh tab shows the same zoomed chart.
  const shared = await context.newPage();
  await shared.goto(zoomedUrl);
  await shared.waitForSelector(SPEED, { timeout: 10000 });
  await waitChart("window-seconds", (v) => Number(v) === zoomSpan, "the shared zoomed URL", shared);
  await shared.close();
  console.log("SHARED-URL-OK");

  // The back button undoes the zoom.
  await page.goBack();
  await waitChart("window-seconds", (v) => Number(v) === daySpan, "back from the zoom");
  console.log("BACK-OK");

  // Compare with another device: its line on the speed chart.
  await page.fill("[data-testid=compare]", other);
  await page.press("[data-testid=compare]", "Enter");
  await page.waitForFunction((o) => decodeURIComponent(location.hash).includes(`compare=${o}`), other, { timeout: 10000 }).catch(() => fail("the comparison is not in the URL"));
  await waitChart("lines", (v) => v === "2", "compared with another device");
  const label = await page.getAttribute(SPEED, "aria-label");
  if (!label.includes(other) || !label.includes(device)) await fail(`the compared chart is "${label}"`);
  if ((await page.getAttribute("[data-testid=chart][data-title=engine_temp]", "data-lines")) !== "1") await fail("a device without the metric got a line");
  await shot("charts-compare.png");
  console.log("COMPARE-OK");

  // Every metric on one chart.
  await page.fill("[data-testid=compare]", "");
  await page.press("[data-testid=compare]", "Enter");
  await page.waitForFunction(() => !location.hash.includes("compare="), null, { timeout: 10000 });
  await page.check("[data-testid=overlay]");
  await page.waitForFunction(() => location.hash.includes("overlay=1") && document.querySelectorAll("[data-testid=chart]").length === 1
    && document.querySelector("[data-testid=chart]").dataset.lines === "2", null, { timeout: 10000 })
    .catch(() => fail("the metrics are not overlaid on one chart"));
  console.log("OVERLAY-OK");

  // CSV of what is shown: both metrics, one row a point.
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 10000 }), page.click("[data-testid=csv]")]);
  const text = readFileSync(await download.path(), "utf8").trim().split("\n");
  if (!text[0].startsWith("deviceId,metric,windowStart,seconds,count,min,max,mean")) await fail(`CSV header: ${text[0]}`);
  const metrics = new Set(text.slice(1).map((l) => l.split(",")[1]));
  if (!metrics.has("speed") || !metrics.has("engine_temp")) await fail(`CSV metrics: ${[...metrics]}`);
  if (text.length - 1 < dayPoints) await fail(`CSV has ${text.length - 1} rows for ${dayPoints} points a metric`);
  console.log(`CSV-OK ${text.length - 1} rows (${download.suggestedFilename()})`);

  // A phone: the chart fits the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await shot("charts-phone.png");
  if (overflow) await fail("the device page is wider than a phone screen");
} catch (e) {
  await fail(e.message);
}
await done();
