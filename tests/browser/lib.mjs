// What the browser scripts share: Chromium launched as the tests run it
// (Debian's, headless, no network of its own), a failure that names the step
// and keeps a screenshot, screenshots announced on stdout ("SCREENSHOT <file>",
// which the Rust side checks), and the end ("DONE" once no page error happened).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export async function start(shots, name, viewport = { width: 1280, height: 800 }) {
  mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ARGS });
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const fail = async (msg, p = page) => {
    console.error(`FAIL: ${msg}`);
    await p.screenshot({ path: `${shots}/${name}-failure.png`, fullPage: true }).catch(() => {});
    await browser.close();
    process.exit(1);
  };
  const shot = async (file, p = page) => {
    await p.screenshot({ path: `${shots}/${file}`, fullPage: true });
    console.log(`SCREENSHOT ${file}`);
  };
  const done = async () => {
    if (errors.length) await fail(`page errors: ${errors.join("; ")}`);
    console.log("DONE");
    await browser.close();
    process.exit(0);
  };
  return { browser, context, page, errors, fail, shot, done };
}

// Moves the mouse onto the first anomaly of the chart `chartSel` and returns
// the tooltip's text. Mouse events land on whole pixels, and a day of 5-min
// windows on a half-width chart is about 2 px per window, so a point's exact
// position can round onto its neighbour: the mouse goes to the nearest whole
// pixel that uPlot itself maps to the anomaly's index, and the cursor's index
// is checked before the tooltip is read.
export async function hoverAnomaly(page, chartSel, fail) {
  const at = await page.evaluate((sel) => {
    const u = document.querySelector(sel).uplot;
    const i = u.data[6].findIndex((v) => v != null); // the anomaly series
    if (i < 0) return null;
    const r = u.over.getBoundingClientRect();
    const px = r.left + u.valToPos(u.data[0][i], "x");
    const x = [0, -1, 1, -2, 2].map((d) => Math.round(px) + d).find((x) => u.posToIdx(x - r.left) === i);
    return { i, x: x ?? px, y: r.top + u.valToPos(u.data[6][i], "y") };
  }, chartSel);
  if (!at) await fail(`no anomaly on the chart ${chartSel}`);
  await page.mouse.move(at.x, at.y);
  await page.waitForSelector(`${chartSel} [data-testid=tooltip]:not([hidden])`, { timeout: 5000 }).catch(() => fail("no tooltip on hover"));
  const idx = await page.evaluate((sel) => document.querySelector(sel).uplot.cursor.idx, chartSel);
  if (idx !== at.i) await fail(`the mouse at x=${at.x} rests on window ${idx}, not the anomaly's ${at.i}`);
  return page.textContent(`${chartSel} [data-testid=tooltip]`);
}
