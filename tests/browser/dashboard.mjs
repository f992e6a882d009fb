// Drives the dashboard in headless Chromium for the browser test
// (functions/dashboard/tests/browser.rs runs it and feeds it data).
// Usage: node dashboard.mjs <dashboard url> <screenshot dir> <operator token> <device id>
// EXPECT_RAW=1: the device chart must also draw raw readings (a raw store is configured).
// EXPECT_BAND=1: it must draw the models' expected band and mark the windows scored while they warmed up.
// Protocol on stdout/stdin: prints "OVERVIEW-OK", then waits for a line "ALERT-SENT"
// before expecting a live alert to appear without a reload.
import { createInterface } from "node:readline";
import { hoverAnomaly, start } from "./lib.mjs";

const [url, shots, token, device] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));
const { page, fail, done } = await start(shots, "dashboard");

await page.addInitScript((t) => localStorage.setItem("tributary.operatorToken", t), token);

try {
  await page.goto(url);
  await page.waitForSelector("[data-testid=device-row]", { timeout: 20000 });
  await page.waitForSelector("#live.on", { timeout: 10000 });
  const devices = await page.textContent("[data-testid=devices]");
  if (!(Number(devices.replace(/,/g, "")) >= 1)) await fail(`fleet shows ${devices} devices`, page);
  const paint = await page.evaluate(() => performance.getEntriesByType("paint").find((p) => p.name === "first-contentful-paint")?.startTime);
  console.log(`FIRST-CONTENTFUL-PAINT ${paint?.toFixed(1)} ms`);
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });
  const alertsBefore = await page.locator("[data-testid=alert]").count();
  console.log("OVERVIEW-OK");

  await nextLine();
  // The alert must arrive live (server-sent events), not by reloading.
  const marker = await page.evaluate(() => (window.__noReload = Math.random()));
  await page.waitForFunction((n) => document.querySelectorAll("[data-testid=alert]").length > n, alertsBefore, { timeout: 30000 });
  if ((await page.evaluate(() => window.__noReload)) !== marker) await fail("the page reloaded", page);
  const alertEl = page.locator("[data-testid=alert]").first();
  await page.screenshot({ path: `${shots}/live-alert.png`, fullPage: true });
  await alertEl.locator("[data-testid=ack]").click();
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=alert-state]")].some((e) => e.textContent === "acknowledged"), null, { timeout: 10000 });
  await page.screenshot({ path: `${shots}/acknowledged.png`, fullPage: true });
  console.log("ACK-OK");

  await page.goto(`${url}#/device/${encodeURIComponent(device)}`);
  await page.waitForSelector("[data-testid=chart]", { timeout: 15000 });
  const points = await page.getAttribute("[data-testid=chart]", "data-points");
  if (!(Number(points) > 10)) await fail(`chart has ${points} points`, page);
  const anomalies = Number(await page.getAttribute("[data-testid=chart]", "data-anomalies"));
  if (anomalies < 1) await fail("no anomaly marked on the chart", page);
  const raw = Number(await page.getAttribute("[data-testid=chart]", "data-raw"));
  if (process.env.EXPECT_RAW === "1") {
    // The probe's raw readings, from the raw archive, drawn as dots under the aggregates.
    if (!(raw > 10)) await fail(`chart has ${raw} raw readings`, page);
    const note = await page.textContent("[data-testid=raw-note]");
    if (!/raw readings from/.test(note || "")) await fail(`raw note says "${note}"`, page);
  }
  const expected = Number(await page.getAttribute("[data-testid=chart]", "data-expected"));
  const warming = Number(await page.getAttribute("[data-testid=chart]", "data-warming"));
  if (process.env.EXPECT_BAND === "1") {
    // The models' expected band is drawn, and the windows scored while they warmed up are marked.
    if (!(expected > 10)) await fail(`chart draws the expected band for ${expected} windows`, page);
    if (!(warming >= 1)) await fail(`chart marks ${warming} warming windows`, page);
    // Hovering the anomaly shows its window, score and what the models expected.
    const tip = await hoverAnomaly(page, "[data-testid=chart]", fail);
    if (!/score 0\.9/.test(tip) || !/expected .* to /.test(tip) || !/p95/.test(tip)) await fail(`the anomaly's tooltip says "${tip}"`, page);
  }
  await page.screenshot({ path: `${shots}/device.png`, fullPage: true });
  console.log(`CHART-OK ${points} points, ${anomalies} anomalies, ${raw} raw readings, ${expected} expected, ${warming} warming`);

  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(url);
  await page.waitForSelector("[data-testid=device-row]", { timeout: 15000 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await page.screenshot({ path: `${shots}/phone.png`, fullPage: true });
  if (overflow) await fail("the page is wider than a phone screen", page);
} catch (e) {
  await fail(e.message, page);
}
await done();
