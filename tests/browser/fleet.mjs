// Drives the fleet list in headless Chromium for the browser test
// (functions/dashboard/tests/browser.rs seeds 10,000 devices and runs it).
// Usage: node fleet.mjs <dashboard url> <screenshot dir>
// Expects devices dev-00000 … dev-09999, most recently seen first in id order,
// and open alerts on exactly dev-00007 (3), dev-00070 (2) and dev-00700 (1);
// every fifth device (dev-00000, dev-00005, …) registered in group "trucks".
// Prints one line per step and "DONE" at the end; exits 1 naming the failed step.
import { start } from "./lib.mjs";

const [url, shots] = process.argv.slice(2);
const { context, page, fail, shot, done } = await start(shots, "fleet");
const range = (p = page) => p.textContent("[data-testid=fleet-range]");
const waitRange = (text, p = page) =>
  p.waitForFunction((t) => document.querySelector("[data-testid=fleet-range]")?.textContent === t, text, { timeout: 10000 })
    .catch(async () => fail(`the list shows "${await range(p)}", not "${text}"`, p));
const rowIds = (p = page) => p.$$eval("[data-testid=device-row]", (rows) => rows.map((r) => r.dataset.device));

try {
  await page.goto(url);
  await page.waitForSelector("[data-testid=device-row]", { timeout: 20000 });
  await waitRange("1–50 of 10,000");
  let ids = await rowIds();
  if (ids.length !== 50 || ids[0] !== "dev-00000" || ids[49] !== "dev-00049") await fail(`first page: ${ids.length} rows, ${ids[0]} … ${ids[49]}`);
  console.log("FIRST-PAGE-OK");

  await page.click("[data-testid=page-next]");
  await waitRange("51–100 of 10,000");
  ids = await rowIds();
  if (ids[0] !== "dev-00050") await fail(`second page starts at ${ids[0]}`);
  if (!/page=2/.test(page.url())) await fail(`the page is not in the URL: ${page.url()}`);
  console.log("NEXT-PAGE-OK");

  // A search goes to the server (a substring of the id) and into the URL.
  await page.fill("[data-testid=fleet-search]", "dev-0042");
  await waitRange("1–10 of 10");
  ids = await rowIds();
  if (!ids.every((id) => id.startsWith("dev-0042"))) await fail(`search rows: ${ids}`);
  if (!/q=dev-0042/.test(page.url()) || /page=/.test(page.url())) await fail(`the search is not in the URL, or the page was kept: ${page.url()}`);
  console.log("SEARCH-OK");

  // The URL is the view: opened elsewhere, it shows the same rows with the search filled in.
  const shared = await context.newPage();
  await shared.goto(page.url());
  await waitRange("1–10 of 10", shared);
  if ((await shared.inputValue("[data-testid=fleet-search]")) !== "dev-0042") await fail("the shared URL did not fill the search box", shared);
  if (JSON.stringify(await rowIds(shared)) !== JSON.stringify(ids)) await fail("the shared URL shows other rows", shared);
  await shared.close();
  console.log("SHARED-URL-OK");

  // Status, then order by open alerts both ways.
  await page.fill("[data-testid=fleet-search]", "");
  await waitRange("1–50 of 10,000");
  await page.selectOption("[data-testid=fleet-status]", "alerting");
  await waitRange("1–3 of 3");
  await page.click("[data-testid=sort-openAlerts]");
  await page.waitForFunction(() => document.querySelector("[data-testid=device-row]")?.dataset.device === "dev-00007", null, { timeout: 10000 })
    .catch(async () => fail(`most alerts first: ${await rowIds()}`));
  await page.click("[data-testid=sort-openAlerts]");
  await page.waitForFunction(() => document.querySelector("[data-testid=device-row]")?.dataset.device === "dev-00700", null, { timeout: 10000 })
    .catch(async () => fail(`fewest alerts first: ${await rowIds()}`));
  if (!/sort=openAlerts/.test(page.url()) || !/order=asc/.test(page.url()) || !/status=alerting/.test(page.url())) await fail(`the order is not in the URL: ${page.url()}`);
  await shot("fleet-alerting.png");
  console.log("STATUS-AND-ORDER-OK");

  // To a device and back: the fleet view it came from is restored.
  await page.click("[data-testid=device-row] >> nth=0");
  await page.waitForSelector("[data-testid=device-title]", { timeout: 10000 });
  await page.click("[data-testid=back]");
  await waitRange("1–3 of 3");
  if ((await page.inputValue("[data-testid=fleet-status]")) !== "alerting") await fail("the status was lost on the way back");
  console.log("BACK-OK");

  // A group of the device registry (2,000 trucks), offered with its counts and kept in the URL.
  await page.selectOption("[data-testid=fleet-status]", "all");
  await waitRange("1–50 of 10,000");
  const label = await page.$eval("[data-testid=fleet-group] option[value=trucks]", (o) => o.textContent).catch(() => "");
  if (!/^trucks \([\d,]+\/2,000 online\)$/.test(label)) await fail(`the group filter offers "${label}"`);
  await page.selectOption("[data-testid=fleet-group]", "trucks");
  await waitRange("1–50 of 2,000");
  ids = await rowIds();
  if (ids[0] !== "dev-00000" || ids[1] !== "dev-00005") await fail(`group rows: ${ids.slice(0, 3)}`);
  const cells = await page.$$eval("[data-testid=device-group]", (cs) => cs.map((c) => c.textContent));
  if (cells.length !== 50 || !cells.every((g) => g === "trucks")) await fail(`group column: ${cells.slice(0, 3)}`);
  if (!/group=trucks/.test(page.url())) await fail(`the group is not in the URL: ${page.url()}`);
  await shot("fleet-group.png");
  const grouped = await context.newPage();
  await grouped.goto(page.url());
  await waitRange("1–50 of 2,000", grouped);
  if ((await grouped.inputValue("[data-testid=fleet-group]")) !== "trucks") await fail("the shared URL did not select the group", grouped);
  await grouped.close();
  await page.selectOption("[data-testid=fleet-group]", "");
  await waitRange("1–50 of 10,000");
  console.log("GROUP-OK");

  await page.setViewportSize({ width: 390, height: 844 });
  await page.selectOption("[data-testid=fleet-status]", "all");
  await waitRange("1–50 of 10,000");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await shot("fleet-phone.png");
  if (overflow) await fail("the fleet list is wider than a phone screen");
} catch (e) {
  await fail(e.message);
}
await done();
