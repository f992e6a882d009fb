// The device registry page (#/registry), for operators: the registered
// devices page by page with search, group and state filters (all of it in
// the URL), disable / enable / rotate a key per device, and registering a
// device. Loaded before app.js; uses its helpers ($, esc, api, ago, banner,
// isOperator, shown) when it runs.
"use strict";

const REGISTRY_PAGE = 100;

// #/registry?q=&group=&status=&after=: the view, shareable and kept on reload.
function registryView() {
  const p = new URLSearchParams((location.hash.split("?")[1]) || "");
  return {
    q: p.get("q") || "",
    group: p.get("group") || "",
    status: ["active", "disabled"].includes(p.get("status")) ? p.get("status") : "all",
    after: p.get("after") || "",
  };
}

// The cursors of the pages before this one, for "‹ Prev" (ids, in order).
let registryTrail = [];

function setRegistryView(v, { push = false } = {}) {
  const p = new URLSearchParams();
  if (v.q) p.set("q", v.q);
  if (v.group) p.set("group", v.group);
  if (v.status !== "all") p.set("status", v.status);
  if (v.after) p.set("after", v.after);
  const qs = p.toString();
  const hash = `#/registry${qs ? `?${qs}` : ""}`;
  if (push) location.hash = hash; else { history.replaceState(null, "", hash); refreshRegistry().catch((e) => banner(`Could not load the registry: ${e.message}`)); }
}

function registryRow(d) {
  const on = d.status === "active";
  return `<tr data-testid="registry-row" data-device="${esc(d.id)}">
    <td><a href="#/device/${encodeURIComponent(d.id)}">${esc(d.id)}</a>${d.name ? `<div class="meta">${esc(d.name)}</div>` : ""}</td>
    <td>${esc(d.group)}</td>
    <td><span class="pill ${on ? "resolved" : "open"}" data-testid="registry-status">${esc(d.status)}</span></td>
    <td data-testid="registry-key-version">${d.keyVersion}</td>
    <td class="hide-sm">${d.enrolledBy === "first-contact" ? "first contact" : "operator"}</td>
    <td class="hide-sm">${d.lastSeen ? ago(d.lastSeen) : "never"}</td>
    <td class="acts">
      <button data-registry-action="${on ? "disable" : "enable"}" data-id="${esc(d.id)}" data-testid="registry-${on ? "disable" : "enable"}"${on ? ' class="danger"' : ""}>${on ? "Disable" : "Enable"}</button>
      <button data-registry-action="rotate-key" data-id="${esc(d.id)}" data-testid="registry-rotate">Rotate key</button></td></tr>`;
}

let registrySeq = 0;
async function refreshRegistry() {
  const v = registryView();
  const seq = ++registrySeq;
  const qs = new URLSearchParams({ limit: REGISTRY_PAGE });
  if (v.q) qs.set("q", v.q);
  if (v.group) qs.set("group", v.group);
  if (v.status !== "all") qs.set("status", v.status);
  if (v.after) qs.set("after", v.after);
  const page = await api(`/api/registry/devices?${qs}`);
  if (seq !== registrySeq || !$("#registry-list")) return;
  const filtered = v.q || v.group || v.status !== "all";
  $("#registry-list").innerHTML = page.devices.length
    ? `<table><thead><tr><th>Device</th><th>Group</th><th>State</th><th title="Tokens of other key versions are refused">Key</th><th class="hide-sm">Enrolled by</th><th class="hide-sm">Last seen</th><th></th></tr></thead>
       <tbody>${page.devices.map(registryRow).join("")}</tbody></table>`
    : `<div class="empty" data-testid="registry-empty">${filtered ? "No registered device matches." : "No devices registered yet. Register one above, import a file with <code>tributary device import</code>, or let devices enroll on first contact."}</div>`;
  const first = page.devices[0]?.id, last = page.devices[page.devices.length - 1]?.id;
  $("#registry-pager").innerHTML = `<div class="pager"><button data-registry-page="prev" data-testid="registry-prev" ${v.after ? "" : "disabled"}>‹ Prev</button>
    <span data-testid="registry-range">${page.devices.length ? `${esc(first)} – ${esc(last)}` : "none"} · ${page.registered.toLocaleString("en")} registered</span>
    <button data-registry-page="next" data-next="${esc(page.next || "")}" data-testid="registry-next" ${page.next ? "" : "disabled"}>Next ›</button></div>`;
}

async function registryPage() {
  if (!isOperator()) {
    $("#view").innerHTML = `<div class="head"><a href="#/">← Fleet</a><h1>Device registry</h1></div>
      <div class="empty" data-testid="registry-signin">The registry is for operators: sign in with the operator button above.</div>`;
    return;
  }
  const v = registryView();
  if (!$("#registry-list")) {
    shown.charts.forEach((c) => c.destroy());
    shown = { key: null, charts: [] };
    registryTrail = [];
    $("#view").innerHTML = `<div class="head"><a href="#/" data-testid="back">← Fleet</a><h1 data-testid="registry-title">Device registry</h1></div>
      <section class="panel"><h2>Register a device</h2>
        <form class="filters" id="registry-add" data-testid="registry-add">
          <input id="add-id" data-testid="add-id" placeholder="device id" aria-label="Device id" required maxlength="128">
          <input id="add-name" data-testid="add-name" placeholder="name (optional)" aria-label="Name" maxlength="200">
          <input id="add-group" data-testid="add-group" placeholder="group (default)" aria-label="Group" maxlength="64">
          <button class="primary" type="submit">Register</button></form>
        <div class="note" id="add-result" data-testid="add-result"></div></section>
      <section class="panel"><h2>Devices</h2>
        <div class="filters"><input type="search" id="registry-search" data-testid="registry-search" placeholder="Search id or name" aria-label="Search id or name" maxlength="128">
          <input id="registry-group" data-testid="registry-group" placeholder="group" aria-label="Group" maxlength="64">
          <select id="registry-status" data-testid="registry-status-filter" aria-label="State">${["all", "active", "disabled"].map((s) => `<option value="${s}">${s}</option>`).join("")}</select></div>
        <div id="registry-list"></div><div id="registry-pager"></div></section>`;
    let typing = null;
    const filter = (patch) => { registryTrail = []; setRegistryView({ ...registryView(), ...patch, after: "" }); };
    // One pause after typing in either box applies both, as they read then.
    const typed = () => { clearTimeout(typing); typing = setTimeout(() => filter({ q: $("#registry-search").value.trim(), group: $("#registry-group").value.trim() }), 200); };
    $("#registry-search").addEventListener("input", typed);
    $("#registry-group").addEventListener("input", typed);
    $("#registry-status").addEventListener("change", (e) => filter({ status: e.target.value }));
    $("#registry-pager").addEventListener("click", (e) => {
      const b = e.target.closest("[data-registry-page]");
      if (!b) return;
      const cur = registryView();
      if (b.dataset.registryPage === "next") { registryTrail.push(cur.after); setRegistryView({ ...cur, after: b.dataset.next }); }
      else setRegistryView({ ...cur, after: registryTrail.pop() || "" });
    });
    $("#registry-list").addEventListener("click", async (e) => {
      const b = e.target.closest("[data-registry-action]");
      if (!b) return;
      const { registryAction: action, id } = b.dataset;
      if (action === "rotate-key" && !confirm(`Rotate the key of ${id}? Its current tokens stop working at once; it needs a token of the new key.`)) return;
      b.disabled = true;
      try {
        const d = await api(`/api/registry/devices/${encodeURIComponent(id)}/${action}`, { method: "POST" });
        b.closest("tr").outerHTML = registryRow(d);
        banner("");
      } catch (err) {
        banner(`${action} ${id} failed: ${err.message}`);
        b.disabled = false;
      }
    });
    $("#registry-add").addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = { id: $("#add-id").value.trim() };
      if ($("#add-name").value.trim()) body.name = $("#add-name").value.trim();
      if ($("#add-group").value.trim()) body.group = $("#add-group").value.trim();
      try {
        const d = await api("/api/registry/devices", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        $("#add-result").textContent = `Registered ${d.id} in ${d.group} (key version ${d.keyVersion}).`;
        $("#registry-add").reset();
        await refreshRegistry();
      } catch (err) {
        $("#add-result").textContent = `Not registered: ${err.message}`;
      }
    });
  }
  if (document.activeElement !== $("#registry-search")) $("#registry-search").value = v.q;
  if (document.activeElement !== $("#registry-group")) $("#registry-group").value = v.group;
  $("#registry-status").value = v.status;
  await refreshRegistry();
}
