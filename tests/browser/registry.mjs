// Drives the device registry page in headless Chromium for the browser test
// (functions/dashboard/tests/browser.rs registers the devices and runs it).
// Usage: node registry.mjs <dashboard url> <screenshot dir> <operator token> <viewer token>
// The dashboard runs with a viewer token: the script signs in as a viewer
// first (a wrong token refused), then becomes the operator.
// Expects frz-000 … frz-099 (group freezers), pump-1 (enrolled on first
// contact) and veh-000 … veh-149 (group trucks), all active at key version 0.
// Leaves frz-007 disabled, frz-008 at key version 1 and van-new registered in
// vans, which the Rust side then checks in the database.
import { start } from "./lib.mjs";

const [url, shots, operatorToken, viewerToken] = process.argv.slice(2);
const { context, page, fail, shot, done } = await start(shots, "registry");
page.on("dialog", (d) => d.accept());
const rowIds = (p = page) => p.$$eval("[data-testid=registry-row]", (rows) => rows.map((r) => r.dataset.device));
const waitRows = async (check, what, p = page) => {
  const deadline = Date.now() + 10000;
  for (;;) {
    const ids = await rowIds(p);
    if (check(ids)) return ids;
    if (Date.now() > deadline) await fail(`${what}: the rows are ${ids.length ? `${ids[0]} … ${ids[ids.length - 1]} (${ids.length})` : "none"}`, p);
    await p.waitForTimeout(100);
  }
};
const row = (id) => `[data-testid=registry-row][data-device="${id}"]`;

try {
  // Nothing is read before signing in; a wrong token is refused by name.
  await page.goto(url);
  await page.waitForSelector("[data-testid=signin]", { timeout: 20000 }).catch(() => fail("no sign-in form without a session"));
  await page.fill("[data-testid=signin-token]", "a-guess");
  await page.click("[data-testid=signin-submit]");
  await page.waitForFunction(() => /Not signed in: that token is neither/.test(document.querySelector("[data-testid=signin-result]")?.textContent), null, { timeout: 10000 })
    .catch(async () => fail(`a wrong token: ${await page.textContent("[data-testid=signin-result]")}`));
  await page.fill("[data-testid=signin-token]", viewerToken);
  await page.click("[data-testid=signin-submit]");
  await page.waitForSelector("[data-testid=devices]", { timeout: 20000 }).catch(() => fail("the fleet did not load after signing in as a viewer"));
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "tributary_session");
  if (!session || !session.httpOnly || session.sameSite !== "Strict") await fail(`the session cookie: ${JSON.stringify(session)}`);
  if (session.value.includes(viewerToken)) await fail("the token is in the cookie");
  await page.waitForSelector("[data-testid=live].on", { timeout: 10000 }).catch(() => fail("the live stream did not connect with the session"));
  await shot("signed-in-viewer.png");
  console.log("VIEWER-SIGN-IN-OK");

  // A viewer, not an operator: the page says what to do and the link is hidden.
  await page.goto(`${url}#/registry`);
  await page.waitForSelector("[data-testid=registry-signin]", { timeout: 20000 }).catch(() => fail("no sign-in note for a reader"));
  if (await page.isVisible("[data-testid=registry-link]")) await fail("the registry link is shown to a reader");
  console.log("READER-OK");

  await page.evaluate((t) => localStorage.setItem("tributary.operatorToken", t), operatorToken);
  await page.reload();
  await page.waitForSelector("[data-testid=registry-link]", { state: "visible", timeout: 10000 }).catch(() => fail("no registry link for the operator"));
  let ids = await waitRows((ids) => ids.length === 100, "first page");
  if (ids[0] !== "frz-000" || ids[99] !== "frz-099") await fail(`first page: ${ids[0]} … ${ids[99]}`);
  if (!(await page.textContent("[data-testid=registry-range]")).includes("251 registered")) await fail(`range: ${await page.textContent("[data-testid=registry-range]")}`);
  const pump = await page.textContent("[data-testid=registry-range]");
  console.log(`FIRST-PAGE-OK ${pump}`);

  await page.click("[data-testid=registry-next]");
  ids = await waitRows((ids) => ids[0] === "pump-1", "second page");
  if (ids[1] !== "veh-000" || ids.length !== 100) await fail(`second page: ${ids.slice(0, 2)} (${ids.length})`);
  if (!(await page.textContent(`${row("pump-1")}`)).includes("first contact")) await fail("pump-1 is not shown as enrolled on first contact");
  if (!/after=frz-099/.test(page.url())) await fail(`the page is not in the URL: ${page.url()}`);
  await page.click("[data-testid=registry-prev]");
  await waitRows((ids) => ids[0] === "frz-000", "back to the first page");
  console.log("PAGES-OK");

  await page.fill("[data-testid=registry-group]", "trucks");
  ids = await waitRows((ids) => ids.length === 100 && ids.every((id) => id.startsWith("veh-")), "group trucks");
  await page.fill("[data-testid=registry-group]", "");
  await page.fill("[data-testid=registry-search]", "veh-042");
  await waitRows((ids) => ids.length === 1 && ids[0] === "veh-042", "search veh-042");
  if (!/q=veh-042/.test(page.url())) await fail(`the search is not in the URL: ${page.url()}`);
  await page.fill("[data-testid=registry-search]", "");
  await page.selectOption("[data-testid=registry-status-filter]", "disabled");
  await page.waitForSelector("[data-testid=registry-empty]", { timeout: 10000 }).catch(() => fail("disabled devices listed before any was disabled"));
  await page.selectOption("[data-testid=registry-status-filter]", "all");
  await waitRows((ids) => ids[0] === "frz-000", "all again");
  console.log("FILTERS-OK");

  await page.click(`${row("frz-007")} [data-testid=registry-disable]`);
  await page.waitForSelector(`${row("frz-007")} [data-testid=registry-enable]`, { timeout: 10000 }).catch(() => fail("frz-007 was not disabled"));
  if ((await page.textContent(`${row("frz-007")} [data-testid=registry-status]`)).trim() !== "disabled") await fail("frz-007's state is not shown as disabled");
  await page.click(`${row("frz-008")} [data-testid=registry-rotate]`);
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.trim() === "1", `${row("frz-008")} [data-testid=registry-key-version]`, { timeout: 10000 })
    .catch(() => fail("frz-008's key version did not move to 1"));
  console.log("ACTIONS-OK");

  await page.fill("[data-testid=add-id]", "van-new");
  await page.fill("[data-testid=add-name]", "New van");
  await page.fill("[data-testid=add-group]", "vans");
  await page.click("#registry-add button[type=submit]");
  await page.waitForFunction(() => /Registered van-new in vans/.test(document.querySelector("[data-testid=add-result]").textContent), null, { timeout: 10000 })
    .catch(async () => fail(`add: ${await page.textContent("[data-testid=add-result]")}`));
  await page.fill("[data-testid=add-id]", "bad id");
  await page.click("#registry-add button[type=submit]");
  await page.waitForFunction(() => /Not registered: .*id must be/.test(document.querySelector("[data-testid=add-result]").textContent), null, { timeout: 10000 })
    .catch(async () => fail(`a bad id was not refused by name: ${await page.textContent("[data-testid=add-result]")}`));
  console.log("ADD-OK");

  await page.selectOption("[data-testid=registry-status-filter]", "disabled");
  await waitRows((ids) => ids.length === 1 && ids[0] === "frz-007", "the disabled devices");
  // The URL is the view: opened elsewhere (same operator), the same rows.
  const shared = await context.newPage();
  await shared.goto(page.url());
  await waitRows((ids) => ids.length === 1 && ids[0] === "frz-007", "the shared URL", shared);
  if ((await shared.inputValue("[data-testid=registry-status-filter]")) !== "disabled") await fail("the shared URL did not set the state filter", shared);
  await shared.close();
  await page.selectOption("[data-testid=registry-status-filter]", "all");
  await waitRows((ids) => ids[0] === "frz-000", "all again");
  await shot("registry.png");
  console.log("SHARED-URL-OK");
} catch (e) {
  await fail(e.message);
}
await done();
