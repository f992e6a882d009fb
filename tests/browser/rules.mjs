// Drives the alert rules page in headless Chromium for the browser test
// (functions/dashboard/tests/browser.rs writes one rule and runs it).
// Usage: node rules.mjs <dashboard url> <screenshot dir> <operator token>
// Expects one rule, truck-speed (group trucks, speed > 120 for 30 s,
// warning). A reader sees it without any editing control; the operator
// adds freezer-warm (group freezers, temperature > -10, critical, 5 min),
// edits truck-speed to critical through its Edit button, has a bad rule
// refused by name, and deletes nothing; the Rust side checks the database.
import { start } from "./lib.mjs";

const [url, shots, operatorToken] = process.argv.slice(2);
const { page, fail, shot, done } = await start(shots, "rules");
page.on("dialog", (d) => d.accept());
const ruleIds = () => page.$$eval("[data-testid=rule-row]", (rows) => rows.map((r) => r.dataset.rule));
const waitRules = async (check, what) => {
  const deadline = Date.now() + 10000;
  for (;;) {
    const ids = await ruleIds();
    if (check(ids)) return ids;
    if (Date.now() > deadline) await fail(`${what}: the rules are ${JSON.stringify(ids)}`);
    await page.waitForTimeout(100);
  }
};
const row = (id) => `[data-testid=rule-row][data-rule="${id}"]`;

try {
  // A reader: the rules, no form, no buttons.
  await page.goto(`${url}#/rules`);
  await page.waitForSelector("[data-testid=rules-title]", { timeout: 20000 }).catch(() => fail("no rules page"));
  await waitRules((ids) => ids.length === 1 && ids[0] === "truck-speed", "the reader's list");
  const cond = (await page.textContent(`${row("truck-speed")} [data-testid=rule-condition]`)).replace(/\s+/g, " ").trim();
  if (cond !== "speed > 120 for 30 s") await fail(`the condition reads ${JSON.stringify(cond)}`);
  if (await page.$("[data-testid=rule-form]")) await fail("a reader sees the rule form");
  if (await page.$("[data-testid=rule-edit]")) await fail("a reader sees an edit button");
  console.log("READER-OK");

  await page.evaluate((t) => localStorage.setItem("tributary.operatorToken", t), operatorToken);
  await page.reload();
  await page.waitForSelector("[data-testid=rule-form]", { timeout: 10000 }).catch(() => fail("no rule form for the operator"));
  await page.fill("[data-testid=rule-id]", "freezer-warm");
  await page.selectOption("[data-testid=rule-scope]", "group");
  await page.fill("[data-testid=rule-target]", "freezers");
  await page.fill("[data-testid=rule-metric]", "temperature");
  await page.selectOption("[data-testid=rule-condition-input]", ">");
  await page.fill("[data-testid=rule-threshold]", "-10");
  await page.fill("[data-testid=rule-hold]", "300");
  await page.selectOption("[data-testid=rule-severity-input]", "critical");
  await page.fill("[data-testid=rule-description]", "Freezer too warm");
  await page.click("[data-testid=rule-save]");
  await page.waitForFunction(() => /Saved freezer-warm \(revision 1\)/.test(document.querySelector("[data-testid=rule-result]").textContent), null, { timeout: 10000 })
    .catch(async () => fail(`save: ${await page.textContent("[data-testid=rule-result]")}`));
  await waitRules((ids) => ids.join() === "freezer-warm,truck-speed", "after adding");
  if ((await page.textContent(`${row("freezer-warm")} [data-testid=rule-severity]`)).trim() !== "critical") await fail("freezer-warm's severity");
  console.log("ADD-OK");

  // Edit fills the form from the row; saving replaces the rule.
  await page.click(`${row("truck-speed")} [data-testid=rule-edit]`);
  if ((await page.inputValue("[data-testid=rule-id]")) !== "truck-speed" || (await page.inputValue("[data-testid=rule-threshold]")) !== "120") await fail("Edit did not fill the form");
  await page.selectOption("[data-testid=rule-severity-input]", "critical");
  await page.click("[data-testid=rule-save]");
  await page.waitForFunction(() => /Saved truck-speed \(revision 2\)/.test(document.querySelector("[data-testid=rule-result]").textContent), null, { timeout: 10000 })
    .catch(async () => fail(`edit: ${await page.textContent("[data-testid=rule-result]")}`));
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.trim() === "critical", `${row("truck-speed")} [data-testid=rule-severity]`, { timeout: 10000 })
    .catch(() => fail("truck-speed's new severity is not shown"));
  console.log("EDIT-OK");

  // A rule the server refuses: the reason names the field; nothing is added.
  await page.fill("[data-testid=rule-id]", "too-long");
  await page.fill("[data-testid=rule-target]", "trucks");
  await page.fill("[data-testid=rule-metric]", "speed");
  await page.fill("[data-testid=rule-threshold]", "1");
  await page.fill("[data-testid=rule-hold]", "604801");
  // The browser's own limit would stop the form first: lift it, as a script could.
  await page.$eval("[data-testid=rule-hold]", (e) => e.removeAttribute("max"));
  await page.click("[data-testid=rule-save]");
  await page.waitForFunction(() => /Not saved: .*holdSeconds must be at most/.test(document.querySelector("[data-testid=rule-result]").textContent), null, { timeout: 10000 })
    .catch(async () => fail(`a bad rule was not refused by name: ${await page.textContent("[data-testid=rule-result]")}`));
  await waitRules((ids) => ids.length === 2, "nothing added");
  await shot("rules.png");
  console.log("REFUSED-OK");
} catch (e) {
  await fail(e.message);
}
await done();
