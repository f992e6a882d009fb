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
