// The alert rules page (#/rules): every rule in force, per device group or
// device; operators add, change (the form is filled from a row's Edit) and
// delete them. Analyze applies a change from the next reading on. Loaded
// before app.js; uses its helpers ($, esc, api, ago, banner, isOperator,
// shown) when it runs.
"use strict";

function ruleHold(s) {
  if (!s) return "at once";
  if (s % 3600 === 0) return `for ${s / 3600} h`;
  if (s % 60 === 0) return `for ${s / 60} min`;
  return `for ${s} s`;
}

function ruleRow(r, operator) {
  const scope = r.group != null ? `group <b>${esc(r.group)}</b>` : `device <a href="#/device/${encodeURIComponent(r.device)}">${esc(r.device)}</a>`;
  return `<tr data-testid="rule-row" data-rule="${esc(r.id)}">
    <td><b>${esc(r.id)}</b>${r.description ? `<div class="meta">${esc(r.description)}</div>` : ""}</td>
    <td>${scope}</td>
    <td data-testid="rule-condition"><code>${esc(r.metric)} ${esc(r.condition)} ${r.threshold}</code> ${ruleHold(r.holdSeconds)}</td>
    <td><span class="pill sev-${esc(r.severity)}" data-testid="rule-severity">${esc(r.severity)}</span></td>
    <td class="hide-sm" title="${esc(r.updatedAt)}">${ago(r.updatedAt)} · rev ${r.revision}</td>
    <td class="acts">${operator ? `<button data-rule-edit="${esc(r.id)}" data-testid="rule-edit">Edit</button>
      <button class="danger" data-rule-delete="${esc(r.id)}" data-testid="rule-delete">Delete</button>` : ""}</td></tr>`;
}

let rulesShown = [];
async function refreshRules() {
  const body = await api("/api/rules");
  if (!$("#rules-list")) return;
  rulesShown = body.rules;
  const operator = isOperator();
  $("#rules-list").innerHTML = body.rules.length
    ? `<table><thead><tr><th>Rule</th><th>Applies to</th><th>Condition</th><th>Severity</th><th class="hide-sm">Changed</th><th></th></tr></thead>
       <tbody>${body.rules.map((r) => ruleRow(r, operator)).join("")}</tbody></table>`
    : `<div class="empty" data-testid="rules-empty">No rules yet: every group uses the defaults analyze was started with (<code>TRIBUTARY_RULES</code>).${operator ? " Add one above." : ""}</div>`;
  $("#rules-count").textContent = `${body.rules.length} of at most ${body.max}`;
}

function ruleForm() {
  return `<section class="panel"><h2>Add or change a rule</h2>
    <form class="filters rule-form" id="rule-form" data-testid="rule-form">
      <input id="rule-id" data-testid="rule-id" placeholder="rule id, e.g. freezer-warm" aria-label="Rule id" required maxlength="64" pattern="[A-Za-z0-9._:\\-]{1,64}">
      <select id="rule-scope" data-testid="rule-scope" aria-label="Applies to"><option value="group">group</option><option value="device">device</option></select>
      <input id="rule-target" data-testid="rule-target" placeholder="group or device id" aria-label="Group or device" required maxlength="128">
      <input id="rule-metric" data-testid="rule-metric" placeholder="metric" aria-label="Metric" required maxlength="64">
      <select id="rule-condition" data-testid="rule-condition-input" aria-label="Condition">${[">", ">=", "<", "<="].map((c) => `<option>${esc(c)}</option>`).join("")}</select>
      <input id="rule-threshold" data-testid="rule-threshold" type="number" step="any" placeholder="threshold" aria-label="Threshold" required>
      <input id="rule-hold" data-testid="rule-hold" type="number" min="0" max="604800" step="1" placeholder="hold (s)" aria-label="Hold seconds" title="How long the condition must hold before the rule fires">
      <select id="rule-severity" data-testid="rule-severity-input" aria-label="Severity">${["warning", "critical", "info"].map((s) => `<option>${s}</option>`).join("")}</select>
      <input id="rule-description" data-testid="rule-description" placeholder="description (optional)" aria-label="Description" maxlength="500">
      <button class="primary" type="submit" data-testid="rule-save">Save</button></form>
    <div class="note" id="rule-result" data-testid="rule-result"></div></section>`;
}

function fillRuleForm(r) {
  $("#rule-id").value = r.id;
  $("#rule-scope").value = r.group != null ? "group" : "device";
  $("#rule-target").value = r.group != null ? r.group : r.device;
  $("#rule-metric").value = r.metric;
  $("#rule-condition").value = r.condition;
  $("#rule-threshold").value = r.threshold;
  $("#rule-hold").value = r.holdSeconds || "";
  $("#rule-severity").value = r.severity;
  $("#rule-description").value = r.description || "";
  $("#rule-id").focus();
}

async function rulesPage() {
  if (!$("#rules-list")) {
    shown.charts.forEach((c) => c.destroy());
    shown = { key: null, charts: [] };
    const operator = isOperator();
    $("#view").innerHTML = `<div class="head"><a href="#/" data-testid="back">← Fleet</a><h1 data-testid="rules-title">Alert rules</h1></div>
      <p class="note">A rule applies to every device of its group, or to one device (in addition to its group's rules). A group without rules here uses the defaults analyze was started with. Changes apply from the next reading on; windows already closed are not recomputed.</p>
      ${operator ? ruleForm() : ""}
      <section class="panel"><h2>Rules <span class="meta" id="rules-count"></span></h2><div id="rules-list"></div></section>`;
    $("#rules-list").addEventListener("click", async (e) => {
      const edit = e.target.closest("[data-rule-edit]");
      if (edit) { const r = rulesShown.find((x) => x.id === edit.dataset.ruleEdit); if (r) fillRuleForm(r); return; }
      const del = e.target.closest("[data-rule-delete]");
      if (!del) return;
      const id = del.dataset.ruleDelete;
      if (!confirm(`Delete rule ${id}? Its devices stop applying it from their next reading.`)) return;
      del.disabled = true;
      try {
        await api(`/api/rules/${encodeURIComponent(id)}`, { method: "DELETE" });
        banner("");
        await refreshRules();
      } catch (err) {
        banner(`Deleting ${id} failed: ${err.message}`);
        del.disabled = false;
      }
    });
    $("#rule-form")?.addEventListener("submit", async (e) => {
      e.preventDefault();
      const id = $("#rule-id").value.trim();
      const body = {
        metric: $("#rule-metric").value.trim(),
        condition: $("#rule-condition").value,
        threshold: Number($("#rule-threshold").value),
        holdSeconds: Number($("#rule-hold").value || 0),
        severity: $("#rule-severity").value,
        [$("#rule-scope").value]: $("#rule-target").value.trim(),
      };
      if ($("#rule-description").value.trim()) body.description = $("#rule-description").value.trim();
      try {
        const r = await api(`/api/rules/${encodeURIComponent(id)}`, { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        $("#rule-result").textContent = `Saved ${r.id} (revision ${r.revision}): analyze applies it from the next reading.`;
        $("#rule-form").reset();
        await refreshRules();
      } catch (err) {
        $("#rule-result").textContent = `Not saved: ${err.message}`;
      }
    });
  }
  await refreshRules();
}
