// sync-server console: plain JavaScript, no build step. Every call goes to the server's own REST API
// (/v1/...) or /console/api with HTTP Basic credentials kept in this tab's sessionStorage only.
"use strict";

const KINDS = {
  Documents: { key: "documents", label: "Document", items: false },
  Lists: { key: "lists", label: "List", items: "Items", itemId: "index" },
  Maps: { key: "maps", label: "Map", items: "Items", itemId: "key" },
  Streams: { key: "streams", label: "Stream", items: false },
};
const $ = (sel) => document.querySelector(sel);
const view = () => $("#view");
let creds = sessionStorage.getItem("sync-console-auth");

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? `${status} ${body.code || ""}: ${body.message}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", form = null, headers = {} } = {}) {
  const h = { Authorization: "Basic " + creds, ...headers };
  let body;
  if (form) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(form)) if (v !== undefined && v !== "") p.append(k, v);
    body = p;
  }
  const r = await fetch(path, { method, headers: h, body });
  if (r.status === 204) return null;
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

function relative(url) {
  // next_page_url is absolute (SYNC_PUBLIC_URL or Host): keep its path and query
  const u = new URL(url, location.href);
  return u.pathname + u.search;
}

function timeLeft(dateExpires) {
  if (!dateExpires) return "no TTL";
  const s = Math.round((Date.parse(dateExpires) - Date.now()) / 1000);
  if (s <= 0) return "expired";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return (d ? d + "d " : "") + (h ? h + "h " : "") + (m ? m + "m " : "") + (s % 60) + "s left";
}

function showError(where, err) {
  where.textContent = err.status === 412
    ? "Conflict (412): someone else changed it meanwhile. Nothing was overwritten: reload to see the current data. " + err.message
    : err.message;
  where.className = "error";
}

function crumbs(parts) {
  const nav = $("#crumbs");
  nav.replaceChildren(el("a", { href: "#", onclick: (e) => { e.preventDefault(); showServices(); } }, "Services"));
  for (const [text, go] of parts) {
    nav.append(" / ", go ? el("a", { href: "#", onclick: (e) => { e.preventDefault(); go(); } }, text) : el("span", {}, text));
  }
}

// --- sign in ---------------------------------------------------------------------------------

async function signIn(sid, token) {
  creds = btoa(sid + ":" + token);
  try {
    await api("/v1/Services?PageSize=1");
  } catch (err) {
    creds = null;
    throw err;
  }
  sessionStorage.setItem("sync-console-auth", creds);
  sessionStorage.setItem("sync-console-who", sid);
  start();
}

function start() {
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = sessionStorage.getItem("sync-console-who") || "";
  showServices();
}

// --- services --------------------------------------------------------------------------------

async function showServices(page = "/v1/Services?PageSize=50") {
  crumbs([]);
  const out = el("tbody");
  const msg = el("p");
  view().replaceChildren(
    el("h2", {}, "Services"),
    el("form", { id: "new-service", onsubmit: async (e) => {
      e.preventDefault();
      try { await api("/v1/Services", { method: "POST", form: { FriendlyName: e.target.name.value } }); showServices(); }
      catch (err) { showError(msg, err); }
    } }, el("input", { name: "name", placeholder: "friendly name" }), el("button", {}, "Create Service")),
    el("form", { id: "open-service", onsubmit: async (e) => {
      e.preventDefault();
      try { showService(await api(`/v1/Services/${encodeURIComponent(e.target.sid.value.trim())}`)); }
      catch (err) { showError(msg, err); }
    } }, el("input", { name: "sid", placeholder: "IS…", size: 36 }), el("button", {}, "Open Service")),
    msg,
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "sid"), el("th", {}, "friendly name"), el("th", {}, "webhook"))), out),
  );
  const r = await api(page);
  for (const s of r.services) {
    out.append(el("tr", {},
      el("td", {}, el("a", { href: "#", "data-service": s.sid, onclick: (e) => { e.preventDefault(); showService(s); } }, s.sid)),
      el("td", {}, s.friendly_name || ""), el("td", {}, s.webhook_url || "")));
  }
  if (r.meta.next_page_url) view().append(el("button", { id: "next-services", onclick: () => showServices(relative(r.meta.next_page_url)) }, "Next page"));
}

function showService(svc, tab = "Documents") {
  crumbs([[svc.sid, null]]);
  const tabs = el("div", { class: "tabs bar" });
  const body = el("div");
  for (const t of [...Object.keys(KINDS), "Events", "Webhooks", "Connections"]) {
    tabs.append(el("button", { class: t === tab ? "on" : "", "data-tab": t, onclick: () => showService(svc, t) }, t));
  }
  view().replaceChildren(el("h2", {}, `Service ${svc.friendly_name || ""}`), el("p", {}, el("code", {}, svc.sid)), tabs, body);
  if (KINDS[tab]) showObjects(svc, tab, body);
  else if (tab === "Events") { body.append(el("p", {}, "Every event of this Service, live (see the panel).")); live.open(svc, null); }
  else if (tab === "Webhooks") showWebhooks(svc, body);
  else showConnections(svc, body);
}

async function showObjects(svc, coll, body, page = null) {
  const k = KINDS[coll];
  const base = `/v1/Services/${svc.sid}/${coll}`;
  const msg = el("p");
  const out = el("tbody");
  const create = el("form", { id: "create-object", onsubmit: async (e) => {
    e.preventDefault();
    const f = e.target;
    const form = { UniqueName: f.uname.value, Ttl: f.ttl.value };
    if (coll === "Documents") form.Data = f.data.value || "{}";
    try { await api(base, { method: "POST", form }); showObjects(svc, coll, body); }
    catch (err) { showError(msg, err); }
  } },
  el("input", { name: "uname", placeholder: "unique name (optional)" }),
  coll === "Documents" ? el("input", { name: "data", placeholder: '{"data": "json"}' }) : "",
  el("input", { name: "ttl", placeholder: "TTL s", size: 6 }),
  el("button", {}, `Create ${k.label}`));
  body.replaceChildren(create, msg, el("table", {}, el("thead", {}, el("tr", {},
    el("th", {}, "sid"), el("th", {}, "unique name"), el("th", {}, "revision"), el("th", {}, "TTL"), el("th", {}, "updated"))), out));
  const r = await api(page || base + "?PageSize=50");
  for (const o of r[k.key]) {
    out.append(el("tr", {},
      el("td", {}, el("a", { href: "#", "data-object": o.unique_name || o.sid, onclick: (e) => { e.preventDefault(); showObject(svc, coll, o.sid); } }, o.sid)),
      el("td", {}, o.unique_name || ""), el("td", {}, o.revision ?? ""), el("td", {}, timeLeft(o.date_expires)), el("td", {}, o.date_updated)));
  }
  if (r.meta.next_page_url) body.append(el("button", { onclick: () => showObjects(svc, coll, body, relative(r.meta.next_page_url)) }, "Next page"));
}

async function showObject(svc, coll, sid) {
  const k = KINDS[coll];
  const url = `/v1/Services/${svc.sid}/${coll}/${sid}`;
  const o = await api(url);
  crumbs([[svc.sid, () => showService(svc, coll)], [`${k.label} ${o.unique_name || o.sid}`, null]]);
  const msg = el("p", { id: "object-message" });
  const parts = [
    el("h2", {}, `${k.label} ${o.unique_name || ""}`),
    el("p", {}, el("code", {}, o.sid), ` revision `, el("code", { id: "revision" }, o.revision ?? "-"),
      ` · ${timeLeft(o.date_expires)} · created by ${o.created_by || "-"} · updated ${o.date_updated}`),
    el("div", { class: "bar" },
      el("button", { id: "watch", onclick: () => live.open(svc, o) }, "Watch live"),
      coll === "Documents" ? el("button", { id: "history", onclick: () => showHistory(svc, coll, o) }, "History") : "",
      el("button", { id: "reload", onclick: () => showObject(svc, coll, sid) }, "Reload"),
      el("button", { id: "delete", onclick: async () => {
        if (!confirm(`Delete ${o.sid}?`)) return;
        try { await api(url, { method: "DELETE" }); showService(svc, coll); } catch (err) { showError(msg, err); }
      } }, "Delete")),
  ];
  if (coll === "Documents") {
    const data = el("textarea", { id: "data" }, JSON.stringify(o.data, null, 2));
    parts.push(data, el("div", { class: "bar" },
      el("button", { id: "save", onclick: async () => {
        try {
          const u = await api(url, { method: "POST", form: { Data: data.value }, headers: { "If-Match": o.revision } });
          o.revision = u.revision;
          $("#revision").textContent = u.revision;
          msg.className = "ok";
          msg.textContent = `Saved: revision ${u.revision}`;
        } catch (err) { showError(msg, err); }
      } }, "Save (If-Match)"),
      el("input", { id: "ttl", placeholder: "new TTL s", size: 8 }),
      el("button", { onclick: async () => {
        try { await api(url, { method: "POST", form: { Ttl: $("#ttl").value } }); showObject(svc, coll, sid); } catch (err) { showError(msg, err); }
      } }, "Set TTL")));
  }
  if (coll === "Streams") {
    const data = el("textarea", { id: "message" }, "{}");
    parts.push(data, el("button", { onclick: async () => {
      try { const m = await api(url + "/Messages", { method: "POST", form: { Data: data.value } }); msg.className = "ok"; msg.textContent = `Published ${m.sid}`; }
      catch (err) { showError(msg, err); }
    } }, "Publish message"));
  }
  parts.push(msg);
  const items = el("div");
  parts.push(items);
  if (k.items) parts.push(asOfPicker(svc, coll, o));
  view().replaceChildren(...parts);
  if (k.items) showItems(svc, coll, o, items);
}

async function showItems(svc, coll, o, box, page = null) {
  const k = KINDS[coll];
  const base = `/v1/Services/${svc.sid}/${coll}/${o.sid}/Items`;
  const msg = el("p");
  const out = el("tbody");
  const add = el("form", { onsubmit: async (e) => {
    e.preventDefault();
    const f = e.target;
    const form = { Data: f.data.value || "{}", Ttl: f.ttl.value };
    if (coll === "Maps") form.Key = f.key.value;
    try { await api(base, { method: "POST", form }); showItems(svc, coll, o, box); } catch (err) { showError(msg, err); }
  } }, coll === "Maps" ? el("input", { name: "key", placeholder: "key", required: true }) : "",
  el("input", { name: "data", placeholder: '{"item": "json"}' }), el("input", { name: "ttl", placeholder: "TTL s", size: 6 }),
  el("button", {}, "Add item"));
  box.replaceChildren(el("h3", {}, "Items"), add, msg, el("table", {}, el("thead", {}, el("tr", {},
    el("th", {}, k.itemId), el("th", {}, "revision"), el("th", {}, "data"), el("th", {}, "TTL"), el("th", {}))), out));
  const r = await api(page || base + "?PageSize=50");
  for (const it of r.items) {
    const id = it[k.itemId];
    const itemUrl = `${base}/${encodeURIComponent(id)}`;
    const data = el("input", { value: JSON.stringify(it.data), size: 40 });
    out.append(el("tr", {}, el("td", {}, id), el("td", {}, it.revision), el("td", { class: "data" }, data),
      el("td", {}, timeLeft(it.date_expires)),
      el("td", {},
        el("button", { onclick: async () => {
          try { await api(itemUrl, { method: "POST", form: { Data: data.value }, headers: { "If-Match": it.revision } }); showItems(svc, coll, o, box, page); }
          catch (err) { showError(msg, err); }
        } }, "Save"),
        el("button", { onclick: async () => {
          try { await api(itemUrl, { method: "DELETE", headers: { "If-Match": it.revision } }); showItems(svc, coll, o, box, page); }
          catch (err) { showError(msg, err); }
        } }, "Delete"),
        el("button", { "data-history": id, onclick: () => showHistory(svc, coll, o, id) }, "History"))));
  }
  if (r.meta.next_page_url) box.append(el("button", { onclick: () => showItems(svc, coll, o, box, relative(r.meta.next_page_url)) }, "Next page"));
}

// --- revision history and "as of" (an extension: README "Revision history and time travel") ------

function preview(data, n = 120) {
  const s = JSON.stringify(data);
  return s.length > n ? s.slice(0, n) + "…" : s;
}

function objectName(coll, o) { return `${KINDS[coll].label} ${o.unique_name || o.sid}`; }

// The revisions of a Document (id null) or of a List/Map item, newest first, a page at a time, and
// "Restore" on an old one: the ordinary update with its data and If-Match set to the revision this
// view read as current, so a write made meanwhile by anyone is never overwritten (412: said, and the
// view is read again). The restore is a write like any other: a new revision and a new event.
async function showHistory(svc, coll, o, id = null, { page = null, size = 20, note = null } = {}) {
  const objUrl = `/v1/Services/${svc.sid}/${coll}/${o.sid}`;
  const url = id === null ? objUrl : `${objUrl}/Items/${encodeURIComponent(id)}`;
  crumbs([[svc.sid, () => showService(svc, coll)], [objectName(coll, o), () => showObject(svc, coll, o.sid)],
    [id === null ? "History" : `Item ${id}: history`, null]]);
  const msg = el("p", { id: "history-message" });
  if (note) { msg.textContent = note.text; msg.className = note.cls; }
  let current = null;  // read before the revisions: a write in between makes a restore 412, never lost
  try { current = await api(url); } catch (err) { if (err.status !== 404) throw err; }
  const again = (more = {}) => showHistory(svc, coll, o, id, { size, ...more });
  const sizeInput = el("input", { id: "history-size", type: "number", min: 1, max: 100, value: size, size: 4,
    onchange: (e) => showHistory(svc, coll, o, id, { size: Math.max(1, Math.min(100, Number(e.target.value) || 20)) }) });
  const rows = el("tbody");
  view().replaceChildren(
    el("h2", {}, `History of ${objectName(coll, o)}` + (id === null ? "" : `, item ${id}`)),
    el("p", {}, current
      ? ["current revision ", el("code", { id: "history-current" }, current.revision)]
      : [el("span", { id: "history-current" }, "removed"), coll === "Lists" ? " (a List item cannot be re-created at its index)" : ""]),
    el("div", { class: "bar" },
      el("button", { id: "history-reload", onclick: () => again() }, "Reload"),
      el("label", {}, "per page ", sizeInput),
      el("button", { id: "history-back", onclick: () => showObject(svc, coll, o.sid) }, "Back")),
    msg,
    el("table", { id: "history" }, el("thead", {}, el("tr", {}, el("th", {}, "revision"), el("th", {}, "event id"),
      el("th", {}, "date"), el("th", {}, "updated by"), el("th", {}, "data"), el("th", {}))), rows));
  let r;
  try { r = await api(page || `${url}/Revisions?PageSize=${size}`); }
  catch (err) { showError(msg, err); return; }
  const restorable = (rev) => !rev.removed && (current ? rev.revision !== current.revision : coll === "Maps");

  async function restore(rev) {
    let done;
    try {
      const data = JSON.stringify(rev.data);
      const u = current
        ? await api(url, { method: "POST", form: { Data: data }, headers: { "If-Match": current.revision } })
        : await api(`${objUrl}/Items`, { method: "POST", form: { Key: id, Data: data } });  // a removed Map item
      done = { cls: "ok", text: `Restored revision ${rev.revision}: the data is now revision ${u.revision}.` };
    } catch (err) {
      done = { cls: "error", text: err.status === 412 || err.status === 409
        ? `Conflict (${err.status}): someone wrote since this history was read` +
          (current ? ` (at revision ${current.revision})` : "") +
          ". Nothing was overwritten. The history was read again: check the newest revision, then restore again if you still want to."
        : err.message };
    }
    again({ note: done });
  }

  for (const rev of r.revisions) {
    const isCurrent = current && !rev.removed && rev.revision === current.revision;
    rows.append(el("tr", { "data-revision": rev.revision, class: isCurrent ? "current" : "" },
      el("td", {}, el("code", {}, rev.revision), isCurrent ? " (current)" : ""),
      el("td", {}, rev.event_id), el("td", {}, rev.date_updated), el("td", {}, rev.updated_by),
      el("td", { class: "data", title: rev.removed ? "" : JSON.stringify(rev.data) }, rev.removed ? "(removed)" : preview(rev.data)),
      el("td", {}, restorable(rev)
        ? el("button", { class: "restore", "data-restore": rev.revision, onclick: () => restore(rev) }, "Restore") : "")));
  }
  const pager = el("div", { class: "bar" });
  if (page) pager.append(el("button", { id: "history-newest", onclick: () => again() }, "Newest"));
  if (r.meta.next_page_url) pager.append(el("button", { id: "history-older", onclick: () => again({ page: relative(r.meta.next_page_url) }) }, "Older"));
  view().append(pager);
}

// A List's or Map's "as of" picker: an event id, or a time (typed, or picked in local time and sent
// as UTC); it opens the read-only view of the items as they were then.
function asOfPicker(svc, coll, o) {
  const point = el("input", { id: "as-of", name: "point", placeholder: "event id or 2026-12-02T15:50:01Z", size: 30 });
  const picked = el("input", { id: "as-of-time", type: "datetime-local", step: 1, onchange: (e) => {
    if (e.target.value) point.value = new Date(e.target.value).toISOString();
  } });
  return el("form", { id: "as-of-form", class: "bar", onsubmit: (e) => {
    e.preventDefault();
    if (point.value.trim()) showAsOf(svc, coll, o, point.value.trim());
  } }, el("strong", {}, "As of"), point, picked, el("button", { id: "as-of-show" }, "Show as it was"));
}

async function showAsOf(svc, coll, o, point, page = null) {
  const k = KINDS[coll];
  const base = `/v1/Services/${svc.sid}/${coll}/${o.sid}/Items`;
  crumbs([[svc.sid, () => showService(svc, coll)], [objectName(coll, o), () => showObject(svc, coll, o.sid)], [`as of ${point}`, null]]);
  const msg = el("p", { id: "as-of-message" });
  const rows = el("tbody");
  const picker = asOfPicker(svc, coll, o);
  picker.querySelector("#as-of").value = point;
  view().replaceChildren(
    el("h2", {}, `${objectName(coll, o)} as of ${point}`),
    el("p", {}, "The items as they were then (read only). \"History\" shows an item's revisions and restores one."),
    picker, msg,
    el("table", { id: "as-of-items" }, el("thead", {}, el("tr", {}, el("th", {}, k.itemId), el("th", {}, "revision"),
      el("th", {}, "data"), el("th", {}, "updated"), el("th", {}))), rows));
  let r;
  try { r = await api(page || `${base}?AsOf=${encodeURIComponent(point)}&PageSize=50`); }
  catch (err) { showError(msg, err); return; }
  for (const it of r.items) {
    const id = it[k.itemId];
    rows.append(el("tr", { "data-item": id }, el("td", {}, id), el("td", {}, it.revision),
      el("td", { class: "data", title: JSON.stringify(it.data) }, preview(it.data)), el("td", {}, it.date_updated),
      el("td", {}, el("button", { "data-history": id, onclick: () => showHistory(svc, coll, o, String(id)) }, "History"))));
  }
  if (!r.items.length) msg.textContent = "No items then.";
  if (r.meta.next_page_url) view().append(el("button", { id: "as-of-next", onclick: () => showAsOf(svc, coll, o, point, relative(r.meta.next_page_url)) }, "Next page"));
}

// --- webhooks and connections ------------------------------------------------------------------

async function showWebhooks(svc, body) {
  const w = await api(`/console/api/Services/${svc.sid}/webhooks`);
  const msg = el("p");
  const age = w.oldest_age_s == null ? "-" : w.oldest_age_s.toFixed(1) + " s";
  const failing = w.failing_since == null ? "-" : new Date(w.failing_since * 1000).toISOString();
  const dead = el("tbody");
  for (const d of w.dead_letters) {
    dead.append(el("tr", {}, el("td", {}, d.id), el("td", {}, d.event.type), el("td", {}, d.event.object_sid),
      el("td", {}, d.attempts), el("td", { class: "error" }, d.error),
      el("td", {}, el("button", { onclick: () => replay([d.id]) }, "Replay"))));
  }
  async function replay(ids) {
    const form = {};
    const p = new URLSearchParams();
    for (const id of ids || []) p.append("Id", id);
    const r = await fetch(`/console/api/Services/${svc.sid}/webhooks/replay`, { method: "POST", body: p, headers: { Authorization: "Basic " + creds } });
    const j = await r.json();
    msg.textContent = r.ok ? `Queued again: ${j.replayed}` : j.message;
    setTimeout(() => showWebhooks(svc, body), 500);
    return form;
  }
  body.replaceChildren(
    el("table", { id: "webhook-queue" }, el("tbody", {},
      el("tr", {}, el("th", {}, "URL"), el("td", {}, w.url || "none")),
      el("tr", {}, el("th", {}, "pending"), el("td", {}, w.pending)),
      el("tr", {}, el("th", {}, "oldest pending"), el("td", {}, age)),
      el("tr", {}, el("th", {}, "failing since"), el("td", {}, failing)),
      el("tr", {}, el("th", {}, "dead letters"), el("td", {}, w.dead_letter_count)))),
    el("div", { class: "bar" }, el("button", { id: "replay-all", onclick: () => replay(null) }, "Replay all dead letters"),
      el("button", { onclick: () => showWebhooks(svc, body) }, "Refresh")),
    msg,
    el("h3", {}, "Dead letters"),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "id"), el("th", {}, "event"), el("th", {}, "object"),
      el("th", {}, "attempts"), el("th", {}, "last error"), el("th", {}))), dead));
}

async function showConnections(svc, body) {
  const c = await api(`/console/api/Services/${svc.sid}/connections`);
  const rows = el("tbody");
  for (const [who, n] of Object.entries(c.identities)) rows.append(el("tr", {}, el("td", {}, who), el("td", {}, n)));
  body.replaceChildren(
    el("p", { id: "connection-count" }, `${c.connections} SDK connection(s) to ${c.scope} (pid ${c.pid}, ${c.workers} worker(s))`),
    c.workers > 1 ? el("p", {}, "With several workers each counts only its own connections: this is the one that answered.") : "",
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "identity"), el("th", {}, "connections"))), rows),
    el("button", { onclick: () => showConnections(svc, body) }, "Refresh"));
}

// --- live events: Server-Sent Events read with fetch (EventSource cannot send Authorization) ---

const live = {
  ctrl: null, paused: false, held: [], lastId: null, url: null, gen: 0,

  open(svc, obj) {
    this.close();
    this.url = `/console/api/Services/${svc.sid}/events` + (obj ? `?object=${obj.sid}` : "");
    this.lastId = null;
    this.held = [];
    this.paused = false;
    $("#live-pause").textContent = "Pause";
    $("#live").hidden = false;
    $("#live-title").textContent = obj ? `${obj.unique_name || obj.sid}` : `all of ${svc.sid}`;
    $("#live-events tbody").replaceChildren();
    this.connect(++this.gen);
  },

  close() {
    this.gen++;
    if (this.ctrl) this.ctrl.abort();
    this.ctrl = null;
    $("#live").hidden = true;
  },

  state(text) { $("#live-state").textContent = text; },

  async connect(gen) {
    while (gen === this.gen) {
      this.ctrl = new AbortController();
      const headers = { Authorization: "Basic " + creds, Accept: "text/event-stream" };
      if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
      try {
        const r = await fetch(this.url, { headers, signal: this.ctrl.signal });
        if (!r.ok) { const j = await r.json(); this.state(`error ${r.status}: ${j.message}`); return; }
        this.state(this.paused ? "paused" : "live");
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            this.frame(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
          }
        }
      } catch (err) {
        if (gen !== this.gen) return;  // closed on purpose
      }
      if (gen !== this.gen) return;
      this.state("reconnecting");
      await new Promise((res) => setTimeout(res, 1000));
    }
  },

  frame(text) {
    let id = null, event = "message", data = "";
    for (const line of text.split("\n")) {
      if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (id !== null) this.lastId = id;
    if (event === "change") {
      const ev = JSON.parse(data);
      if (this.paused) { this.held.push(ev); this.state(`paused (${this.held.length} waiting)`); }
      else this.show(ev);
    } else if (event === "removed") {
      this.state("the object was removed");
      this.gen++;
    } else if (event === "gap") {
      this.show({ id: "-", time: new Date().toISOString(), object_sid: "", type: `${data} event(s) no longer in the log`, origin: "" });
    } else if (event === "dropped") {
      this.state(`live (${data} wake-ups dropped: too slow)`);
    }
  },

  show(ev) {
    const origin = ev.origin === "sdk" ? `SDK ${ev.identity}` : ev.origin === "rest" ? "REST" : ev.origin;
    const row = el("tr", { class: "fresh", "data-event-id": ev.id },
      el("td", {}, ev.time.slice(11, 23)), el("td", {}, ev.unique_name || ev.object_sid),
      el("td", {}, ev.type + (ev.key != null ? ` [${ev.key}]` : "")), el("td", {}, ev.id), el("td", {}, ev.revision ?? ""),
      el("td", {}, origin), el("td", { class: "data" }, JSON.stringify(ev.data)));
    $("#live-events tbody").prepend(row);
  },

  togglePause() {
    this.paused = !this.paused;
    $("#live-pause").textContent = this.paused ? "Resume" : "Pause";
    if (!this.paused) { for (const ev of this.held) this.show(ev); this.held = []; }
    this.state(this.paused ? "paused" : "live");
  },
};

// --- wiring ------------------------------------------------------------------------------------

$("#signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("#signin-error").textContent = "";
  try { await signIn($("#sid").value.trim(), $("#token").value); }
  catch (err) { $("#signin-error").textContent = err.status === 401 ? "Wrong SID or token" : err.message; }
});
$("#signout").addEventListener("click", () => { sessionStorage.clear(); location.reload(); });
$("#live-pause").addEventListener("click", () => live.togglePause());
$("#live-clear").addEventListener("click", () => $("#live-events tbody").replaceChildren());
$("#live-close").addEventListener("click", () => live.close());
window.addEventListener("unhandledrejection", (e) => { console.error(e.reason); });
if (creds) start();
