// The notification channels page (#/channels, operators only): where alerts
// are sent, each channel's backlog (deliveries waiting for a receiver that
// is down) and dead letters; operators add, change, test and delete
// channels and send dead letters again. A channel's secret is never shown:
// changing a channel that has one means entering it again. Loaded before
// app.js; uses its helpers ($, esc, api, ago, banner, isOperator, shown).
"use strict";

// When a retry goes, from now: "now" once it is due.
function channelIn(iso) {
  const s = (Date.parse(iso) - Date.now()) / 1000;
  if (!(s > 1)) return "now";
  return s < 120 ? `in ${Math.round(s)} s` : `in ${Math.round(s / 60)} min`;
}

function channelRow(c, backlog) {
  const queued = backlog
    ? `<span class="pill sev-warning" data-testid="channel-queued">${backlog.queued} waiting</span>
       <div class="meta" title="${esc(backlog.lastError || "")}">${backlog.attempts ? `${backlog.attempts} attempts · next try ${channelIn(backlog.nextAttemptAt)}` : "not tried yet"}${backlog.lastError ? ` · ${esc(backlog.lastError.slice(0, 80))}` : ""}</div>`
    : `<span class="meta" data-testid="channel-queued">none waiting</span>`;
  return `<tr data-testid="channel-row" data-channel="${esc(c.id)}">
    <td><b>${esc(c.id)}</b><div class="meta">${esc(c.url.replace(/^(https?:\/\/[^/]+).*/, "$1/…"))}</div></td>
    <td>${esc(c.format)}${c.hasSecret ? `<div class="meta">${c.format === "pagerduty" ? "routing key set" : "signed"}</div>` : ""}</td>
    <td>${c.enabled ? "enabled" : "<b>disabled</b>"}</td>
    <td><span class="pill sev-${esc(c.minSeverity)}">${esc(c.minSeverity)}</span> and above<div class="meta">${c.groups.length ? c.groups.map(esc).join(", ") : "every group"}</div></td>
    <td>${queued}</td>
    <td class="acts"><button data-channel-action="test" data-id="${esc(c.id)}" data-testid="channel-test">Test</button>
      <button data-channel-action="letters" data-id="${esc(c.id)}" data-testid="channel-letters">Dead letters</button>
      <button data-channel-action="edit" data-id="${esc(c.id)}" data-testid="channel-edit">Edit</button>
      <button class="danger" data-channel-action="delete" data-id="${esc(c.id)}" data-testid="channel-delete">Delete</button></td></tr>`;
}

let channelsShown = [];
async function refreshChannels() {
  const body = await api("/api/channels");
  if (!$("#channels-list")) return;
  channelsShown = body.channels;
  const backlog = Object.fromEntries(body.backlog.map((b) => [b.channelId, b]));
  $("#channels-list").innerHTML = body.channels.length
    ? `<table><thead><tr><th>Channel</th><th>Format</th><th>State</th><th>Sends</th><th>Queue</th><th></th></tr></thead>
       <tbody>${body.channels.map((c) => channelRow(c, backlog[c.id])).join("")}</tbody></table>`
    : `<div class="empty" data-testid="channels-empty">No channels yet: alerts reach the dashboard only. Add one above.</div>`;
  $("#channels-count").textContent = `${body.channels.length} of at most ${body.max}`;
}

async function showLetters(id) {
  const body = await api(`/api/channels/${encodeURIComponent(id)}/dead-letters?limit=100`);
  $("#letters").hidden = false;
  $("#letters-title").textContent = `Dead letters of ${id} (${body.total})`;
  $("#letters").dataset.channel = id;
  $("#letters-list").innerHTML = body.deadLetters.length
    ? `<table><thead><tr><th>Failed</th><th>Alert</th><th>Attempts</th><th>Why</th><th></th></tr></thead><tbody>${body.deadLetters.map((l) => `
        <tr data-testid="letter-row"><td title="${esc(l.failedAt)}">${ago(l.failedAt)}</td>
        <td><a href="#/device/${encodeURIComponent(l.deviceId)}">${esc(l.deviceId)}</a> · ${esc(l.alertId)} ${esc(l.state)} <span class="pill sev-${esc(l.severity)}">${esc(l.severity)}</span></td>
        <td>${l.attempts}</td><td class="meta">${esc(l.error.slice(0, 200))}</td>
        <td class="acts">${l.resendable ? `<button data-letter-resend="${esc(l.key)}" data-testid="letter-resend">Send again</button>` : `<span class="meta">kept before the queue</span>`}</td></tr>`).join("")}</tbody></table>`
    : `<div class="empty" data-testid="letters-empty">No dead letters: every delivery went through (or is still being tried).</div>`;
  $("#letters-all").hidden = !body.deadLetters.some((l) => l.resendable);
}

async function resendLetters(id, keys) {
  const r = await api(`/api/channels/${encodeURIComponent(id)}/dead-letters/resend`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(keys ? { keys } : {}),
  });
  $("#letters-result").textContent = `${r.resent} sent again${r.notResendable ? ` (${r.notResendable} kept: they hold no alert record)` : ""}: they are delivered now, after what is already waiting.`;
  await showLetters(id);
  await refreshChannels();
}

function fillChannelForm(c) {
  $("#channel-id").value = c.id;
  $("#channel-url").value = c.url;
  $("#channel-format").value = c.format;
  $("#channel-secret").value = "";
  $("#channel-secret").placeholder = c.hasSecret ? "secret (enter it again: it is never shown)" : "secret (optional for Slack and Teams)";
  $("#channel-groups").value = c.groups.join(", ");
  $("#channel-severity").value = c.minSeverity;
  $("#channel-enabled").value = String(c.enabled);
  $("#channel-id").focus();
}

async function channelsPage() {
  if (!isOperator()) {
    $("#view").innerHTML = `<div class="head"><a href="#/">← Fleet</a><h1>Notification channels</h1></div>
      <div class="empty" data-testid="channels-signin">Channels are for operators (their URLs are secrets): sign in with the operator button above.</div>`;
    return;
  }
  if (!$("#channels-list")) {
    shown.charts.forEach((c) => c.destroy());
    shown = { key: null, charts: [] };
    $("#view").innerHTML = `<div class="head"><a href="#/" data-testid="back">← Fleet</a><h1 data-testid="channels-title">Notification channels</h1></div>
      <p class="note">Every alert record (opened, updated, resolved) at or above a channel's severity, from its groups, is POSTed to it, signed, once per record, in order. A receiver that is down holds back only its own channel: its deliveries wait in its queue and are retried for 15 minutes, then kept as dead letters to send again.</p>
      <section class="panel"><h2>Add or change a channel</h2>
        <form class="filters" id="channel-form" data-testid="channel-form">
          <input id="channel-id" data-testid="channel-id" placeholder="channel id, e.g. ops-slack" aria-label="Channel id" required maxlength="64" pattern="[A-Za-z0-9._:\\-]{1,64}">
          <input id="channel-url" data-testid="channel-url" type="url" placeholder="https://hooks.example.com/…" aria-label="URL" required maxlength="2048">
          <select id="channel-format" data-testid="channel-format" aria-label="Format">${["generic", "slack", "teams", "pagerduty"].map((f) => `<option>${f}</option>`).join("")}</select>
          <input id="channel-secret" data-testid="channel-secret" type="password" autocomplete="off" placeholder="secret (optional for Slack and Teams)" aria-label="Secret" maxlength="256">
          <input id="channel-groups" data-testid="channel-groups" placeholder="groups, comma-separated (empty: every group)" aria-label="Groups">
          <select id="channel-severity" data-testid="channel-severity" aria-label="Least severity">${["warning", "critical", "info"].map((s) => `<option>${s}</option>`).join("")}</select>
          <select id="channel-enabled" data-testid="channel-enabled" aria-label="State"><option value="true">enabled</option><option value="false">disabled (its queue waits)</option></select>
          <button class="primary" type="submit" data-testid="channel-save">Save</button></form>
        <div class="note" id="channel-result" data-testid="channel-result" aria-live="polite"></div></section>
      <section class="panel"><h2>Channels <span class="meta" id="channels-count"></span></h2><div id="channels-list"></div></section>
      <section class="panel" id="letters" hidden><h2 id="letters-title" data-testid="letters-title"></h2>
        <button id="letters-all" data-testid="letters-resend-all">Send all again</button>
        <div class="note" id="letters-result" data-testid="letters-result" aria-live="polite"></div>
        <div id="letters-list"></div></section>`;
    $("#channels-list").addEventListener("click", async (e) => {
      const b = e.target.closest("[data-channel-action]");
      if (!b) return;
      const { channelAction: action, id } = b.dataset;
      if (action === "edit") { const c = channelsShown.find((x) => x.id === id); if (c) fillChannelForm(c); return; }
      if (action === "delete" && !confirm(`Delete channel ${id}? Its waiting deliveries and dead letters are deleted with it.`)) return;
      b.disabled = true;
      try {
        if (action === "test") {
          const r = await api(`/api/channels/${encodeURIComponent(id)}/test`, { method: "POST" });
          $("#channel-result").textContent = r.delivered
            ? `Test sent to ${id}: the receiver accepted it.`
            : `Test to ${id} failed: ${r.error || "no answer"}.`;
        } else if (action === "letters") {
          $("#letters-result").textContent = "";
          await showLetters(id);
        } else if (action === "delete") {
          await api(`/api/channels/${encodeURIComponent(id)}`, { method: "DELETE" });
          if ($("#letters").dataset.channel === id) $("#letters").hidden = true;
          await refreshChannels();
        }
        banner("");
      } catch (err) {
        banner(`${action} ${id} failed: ${err.message}`);
      } finally {
        b.disabled = false;
      }
    });
    $("#letters").addEventListener("click", async (e) => {
      const one = e.target.closest("[data-letter-resend]");
      const all = e.target.closest("#letters-all");
      if (!one && !all) return;
      const id = $("#letters").dataset.channel;
      (one || all).disabled = true;
      try {
        await resendLetters(id, one ? [one.dataset.letterResend] : null);
      } catch (err) {
        $("#letters-result").textContent = `Not sent again: ${err.message}`;
      } finally {
        (one || all).disabled = false;
      }
    });
    $("#channel-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const id = $("#channel-id").value.trim();
      const body = {
        url: $("#channel-url").value.trim(),
        format: $("#channel-format").value,
        groups: $("#channel-groups").value.split(",").map((g) => g.trim()).filter(Boolean),
        minSeverity: $("#channel-severity").value,
        enabled: $("#channel-enabled").value === "true",
      };
      if ($("#channel-secret").value) body.secret = $("#channel-secret").value;
      try {
        const c = await api(`/api/channels/${encodeURIComponent(id)}`, { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        $("#channel-result").textContent = `Saved ${c.id}: it gets alerts from the next one on. Use Test to check the receiver.`;
        $("#channel-form").reset();
        await refreshChannels();
      } catch (err) {
        $("#channel-result").textContent = `Not saved: ${err.message}`;
      }
    });
  }
  await refreshChannels();
}
