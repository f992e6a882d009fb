// Drives the notification channels page in headless Chromium for the
// browser test (functions/dashboard/tests/browser.rs sets up channel ops,
// served by a local receiver, with one delivery waiting in its queue and
// one dead letter, and checks the database after).
// Usage: node channels.mjs <dashboard url> <screenshot dir> <operator token>
// A reader is told the page is for operators and has no link to it. The
// operator sees ops with its waiting delivery, tests it (the receiver
// accepts), sends its dead letter again (two then wait), adds team-slack,
// and has a PagerDuty channel without a routing key refused by name.
import { start } from "./lib.mjs";

const [url, shots, operatorToken] = process.argv.slice(2);
const { page, fail, shot, done } = await start(shots, "channels");
page.on("dialog", (d) => d.accept());
const row = (id) => `[data-testid=channel-row][data-channel="${id}"]`;
const waitText = async (sel, re, what) => {
  await page.waitForFunction(([s, r]) => new RegExp(r).test(document.querySelector(s)?.textContent || ""), [sel, re.source], { timeout: 10000 })
    .catch(async () => fail(`${what}: ${JSON.stringify(await page.textContent(sel).catch(() => null))}`));
};

try {
  await page.goto(`${url}#/channels`);
  await page.waitForSelector("[data-testid=channels-signin]", { timeout: 20000 }).catch(() => fail("a reader is not told the page is for operators"));
  if (await page.isVisible("[data-testid=channels-link]")) await fail("a reader sees the Notifications link");
  console.log("READER-OK");

  await page.evaluate((t) => localStorage.setItem("tributary.operatorToken", t), operatorToken);
  await page.reload();
  await page.waitForSelector(row("ops"), { timeout: 10000 }).catch(() => fail("no ops row for the operator"));
  if (!(await page.isVisible("[data-testid=channels-link]"))) await fail("the operator has no Notifications link");
  await waitText(`${row("ops")} [data-testid=channel-queued]`, /1 waiting/, "ops's queue");
  console.log("LIST-OK");

  await page.click(`${row("ops")} [data-testid=channel-test]`);
  await waitText("[data-testid=channel-result]", /Test sent to ops: the receiver accepted it/, "the test");
  console.log("TEST-OK");

  await page.click(`${row("ops")} [data-testid=channel-letters]`);
  await waitText("[data-testid=letters-title]", /Dead letters of ops \(1\)/, "the dead letters");
  await page.click("[data-testid=letter-resend]");
  await waitText("[data-testid=letters-result]", /^1 sent again/, "sending again");
  await page.waitForSelector("[data-testid=letters-empty]", { timeout: 10000 }).catch(() => fail("the letter is still listed"));
  await waitText(`${row("ops")} [data-testid=channel-queued]`, /2 waiting/, "ops's queue after sending again");
  console.log("RESEND-OK");

  await page.fill("[data-testid=channel-id]", "team-slack");
  await page.fill("[data-testid=channel-url]", "https://hooks.slack.example/services/T1/B2/x");
  await page.selectOption("[data-testid=channel-format]", "slack");
  await page.fill("[data-testid=channel-groups]", "freezers, trucks");
  await page.selectOption("[data-testid=channel-severity]", "critical");
  await page.click("[data-testid=channel-save]");
  await waitText("[data-testid=channel-result]", /Saved team-slack/, "adding team-slack");
  await page.waitForSelector(row("team-slack"), { timeout: 10000 }).catch(() => fail("team-slack is not listed"));
  console.log("ADD-OK");

  await page.fill("[data-testid=channel-id]", "pager");
  await page.fill("[data-testid=channel-url]", "https://events.pagerduty.example/v2/enqueue");
  await page.selectOption("[data-testid=channel-format]", "pagerduty");
  await page.click("[data-testid=channel-save]");
  await waitText("[data-testid=channel-result]", /Not saved: .*secret is required for the pagerduty format/, "a PagerDuty channel without a routing key");
  if (await page.$(row("pager"))) await fail("the refused channel is listed");
  await shot("channels.png");
  console.log("REFUSED-OK");
} catch (e) {
  await fail(e.message);
}
await done();
