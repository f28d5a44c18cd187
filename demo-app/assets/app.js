// Reflow web UI: plain JavaScript, no framework, nothing loaded from the internet.
// Routes are in the URL hash (#inventory, #resource/<id>, #correct/<event id>, ...); changes
// from peers arrive as server-sent events on /api/updates and redraw the current page.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const enc = encodeURIComponent;
async function get(p) {
  const r = await fetch(p);
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
async function post(p, body) {
  const r = await fetch(p, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body || {})});
  const j = await r.json().catch(() => ({error: r.statusText}));
  return {ok: r.ok, body: j};
}
// Event ids are "<counter>@<device actor>": show the counter and the actor's first digits.
const shortId = id => { const [n, a] = String(id ?? "").split("@"); return a ? `${n}@${a.slice(0, 6)}…` : String(id ?? ""); };
const evId = id => `<span class="mono" title="${esc(id)}">${esc(shortId(id))}</span>`;
// A table cell, marked empty so phones can hide it.
const td = (label, html, cls = "") => `<td data-label="${label}" class="${cls}${String(html).trim() ? "" : " empty"}">${html}</td>`;
const qty = m => m ? `${m.hasNumericalValue} ${esc(unitName(m.hasUnit))}` : "";

// Names of the ledger's objects, refreshed on every change.
let objects = {agents: [], units: [], specs: [], locations: [], processes: [], resources: []};
let actions = [];
const byId = (list, id) => list.find(x => x.id === id);
const agentName = id => id ? (byId(objects.agents, id)?.name || id) : "";
const placeName = id => id ? (byId(objects.locations, id)?.name || id) : "";
const specName = id => id ? (byId(objects.specs, id)?.name || id) : "";
const unitName = id => { const u = byId(objects.units, id); return u ? (u.symbol || u.label || id) : (id || ""); };
const resName = id => id ? (byId(objects.resources, id)?.name || id) : "";
const resLink = id => id ? `<a href="#resource/${enc(id)}">${esc(resName(id))}</a>` : "";
const options = (list, sel, blank = true) => (blank ? `<option value=""></option>` : "") +
  list.map(x => `<option value="${esc(x.id)}"${x.id === sel ? " selected" : ""}>${esc(x.name || x.label || x.id)}</option>`).join("");

function describe(e) {
  const what = e.resourceInventoriedAs ? resLink(e.resourceInventoriedAs)
    : e.createdResource ? resLink(e.createdResource) : esc(specName(e.resourceConformsTo));
  const q = qty(e.resourceQuantity || e.effortQuantity);
  return `<b>${esc(e.action)}</b> ${q} ${what}` +
    (e.toResourceInventoriedAs ? ` → ${resLink(e.toResourceInventoriedAs)}` : "") +
    ` <span class="muted">${esc(agentName(e.provider))} → ${esc(agentName(e.receiver))}</span>`;
}

async function loadObjects() { objects = await get("/api/objects"); }

// ---------------------------------------------------------------- pages
const pages = {
  async inventory(v) {
    await loadObjects();
    const rs = objects.resources;
    v.innerHTML = `<h2>Inventory</h2>` + (rs.length ? `<table class="cards" id="inventory-table"><tr><th>Resource</th><th>On hand</th><th>Accounting</th><th>Custodian</th><th>Location</th><th>State</th></tr>` +
      rs.map(r => `<tr data-id="${esc(r.id)}"><td data-label="Resource">${resLink(r.id)}<br><span class="small muted">${esc(specName(r.conformsTo))}</span></td>` +
        td("On hand", qty(r.onhandQuantity), "num") + td("Accounting", qty(r.accountingQuantity), "num") +
        td("Custodian", esc(agentName(r.custodian))) + td("Location", esc(placeName(r.currentLocation))) +
        td("State", esc(r.state)) + `</tr>`).join("") + `</table>` : `<p>No resources yet: <a href="#record">record</a> a produce or raise event.</p>`);
  },

  async events(v) {
    const es = await get("/api/events");
    const corrected = new Set(es.filter(e => e.corrects).map(e => e.corrects));
    v.innerHTML = `<h2>Event log</h2><p class="muted small">${es.length} events, newest first. Events are never edited: a mistake is fixed by a correcting event.</p>` +
      `<table class="cards" id="events-table"><tr><th>Event</th><th>What</th><th>Where</th><th>Note</th><th></th></tr>` +
      es.map(e => `<tr data-id="${esc(e.id)}" data-corrects="${esc(e.corrects || "")}" class="${corrected.has(e.id) ? "corrected" : ""}"><td data-label="Event">${evId(e.id)}</td>` +
        `<td data-label="What">${describe(e)}${e.corrects ? ` <span class="tag">corrects ${evId(e.corrects)}</span>` : ""}</td>` +
        td("Where", `${esc(placeName(e.atLocation))}${e.toLocation ? " → " + esc(placeName(e.toLocation)) : ""}`) +
        td("Note", `${esc(e.note)}${e.state ? ` <span class="tag">${esc(e.state)}</span>` : ""}`) +
        `<td class="keep">${corrected.has(e.id) ? "corrected" : `<a href="#correct/${enc(e.id)}">correct</a>`}</td></tr>`).join("") + `</table>`;
  },

  async record(v) { await eventForm(v, null); },

  async correct(v, id) {
    const es = await get("/api/events");
    const original = es.find(e => e.id === id);
    if (!original) { v.innerHTML = `<p class="err">No event ${esc(id)}.</p>`; return; }
    await eventForm(v, original);
  },

  async resource(v, id) {
    let d;
    try { d = await get("/api/resource/" + enc(id)); } catch (e) { v.innerHTML = `<p class="err">${esc(e.message)}</p>`; return; }
    const r = d.resource;
    const fact = (k, x) => x ? `<div class="fact"><b>${k}</b>${x}</div>` : "";
    const steps = t => t && t.steps.length ? `<ul class="trace">` + t.steps.map(s => {
      const n = s.node, pad = `style="margin-left:${s.depth * 1.1}em"`;
      if (n.type === "economicResource") return `<li ${pad}><span class="kind">resource</span>${resLink(n.id)}</li>`;
      if (n.type === "economicEvent") { const e = d.events[n.id]; return `<li ${pad}><span class="kind">event</span>${e ? describe(e) : esc(n.action)} <span class="muted">${evId(n.id)}</span></li>`; }
      if (n.type === "process") { const p = byId(objects.processes, n.id); return `<li ${pad}><span class="kind">process</span>${esc(p ? p.name : n.id)}</li>`; }
      return `<li ${pad}><code>${esc(JSON.stringify(n))}</code></li>`;
    }).join("") + `</ul>` : `<p class="muted">Nothing.</p>`;
    v.innerHTML = `<p><a href="#inventory">← inventory</a></p><h2 id="resource-name">${esc(r.name)}</h2>` +
      `<div class="card grid">${fact("Id", `<span class="mono">${esc(r.id)}</span>`)}${fact("Kind", esc(specName(r.conformsTo)))}` +
      `${fact("On hand", qty(r.onhandQuantity))}${fact("Accounting", qty(r.accountingQuantity))}` +
      `${fact("Custodian", esc(agentName(r.custodian)))}${fact("Accountable", esc(agentName(r.primaryAccountable)))}` +
      `${fact("Location", esc(placeName(r.currentLocation)))}${fact("State", esc(r.state))}${fact("Contained in", resLink(r.containedIn))}${fact("Note", esc(r.note))}</div>` +
      `<h3>Trace: where it came from</h3><div id="trace">${steps(d.trace)}</div>` +
      `<h3>Track: where it went</h3><div id="track">${steps(d.track)}</div>` +
      `<h3>Events on this resource</h3>` + (d.history.length ? `<ul class="trace">` + d.history.map(e => `<li>${describe(e)} <span class="muted">${evId(e.id)}</span></li>`).join("") + `</ul>` : `<p class="muted">None.</p>`) +
      `<p><a class="button secondary" href="#record?resource=${enc(r.id)}">Record an event on it</a></p>`;
  },

  async conflicts(v) {
    const cs = await get("/api/conflicts");
    const explain = c => {
      switch (c.kind) {
        case "overdraw": return `${resLink(c.resource)} went below zero (${esc(c.quantity)}: ${qty(c.balance)}).` + (c.competing.length ? ` Concurrent decrements: ${c.competing.length}.` : " More was taken out than was recorded in.");
        case "doubleTransfer": return `${resLink(c.resource)} was handed on twice (${esc(c.of)}) by the same provider.`;
        case "eventOnRemovedResource": return `An event still uses ${resLink(c.resource)}, which a correction removed.`;
        case "concurrentCorrections": return `Event ${evId(c.corrected)} was corrected twice at the same time; only ${evId(c.applied)} counts.`;
        case "ruleViolation": return `Event ${evId(c.event)} breaks the network's rule <b>${esc(c.rule)}</b>: ${esc(c.message)}` + (c.error ? ` <span class="muted">(the rule could not be evaluated)</span>` : "");
        default: return `<code>${esc(JSON.stringify(c))}</code>`;
      }
    };
    v.innerHTML = `<h2>Conflicts</h2><p class="muted small">Events that are valid one by one and wrong together (often recorded offline on two devices). Resolve one by recording a correcting event.</p>` +
      (cs.length ? cs.map(({conflict: c, events}) => `<div class="card conflict" data-kind="${esc(c.kind)}"><b>${esc(c.kind)}</b>: ${explain(c)}` +
        `<table class="cards"><tr><th>Event</th><th>What</th><th></th></tr>` + events.map(e => `<tr data-id="${esc(e.id)}"><td data-label="Event">${evId(e.id)}</td><td data-label="What">${describe(e)}</td>` +
          `<td><a class="button secondary correct-link" href="#correct/${enc(e.id)}">Correct</a></td></tr>`).join("") + `</table></div>`).join("")
        : `<p id="no-conflicts">No conflicts. Every replica agrees the ledger adds up.</p>`);
  },

  async rules(v) {
    // The rule set's recordForOthers grant (docs/rules.md, "Recording for others").
    const grantText = g => {
      const parts = [];
      if (g && g.roles && g.roles.length) parts.push(`every ${g.roles.join(", ")}`);
      if (g && g.agents && g.agents.length) parts.push(`the devices of ${g.agents.join(", ")}`);
      if (g && g.devices && g.devices.length) parts.push(`devices ${g.devices.map(d => d.slice(0, 12)).join(", ")}`);
      return parts.length ? `admins, and ${parts.join("; ")}` : "admins only";
    };
    const d = await get("/api/rules");
    const set = d.ruleSet;
    const rules = set ? `<p id="rules-in-force">${esc(set.name)}, version ${esc(String(set.version))}</p>` +
      `<table class="cards" id="rules-table"><tr><th>Rule</th><th>Outcome</th><th>Applies to</th><th>Check</th><th>Message</th></tr>` +
      set.rules.map(r => `<tr data-rule="${esc(r.name)}"><td data-label="Rule"><b>${esc(r.name)}</b></td><td data-label="Outcome">${esc(r.outcome)}</td>` +
        `<td data-label="Applies to">${esc((r.actions || []).join(", ") || "every event")}</td><td data-label="Check"><code>${esc(r.check)}</code></td><td data-label="Message">${esc(r.message)}</td></tr>`).join("") + `</table>` +
      `<p id="rules-record-for-others">Records events between other agents: ${esc(grantText(set.recordForOthers))}</p>`
      : `<p id="no-rules">This network has published no rules.</p>`;
    const refused = d.refused.length ? `<ul id="rules-refused">` + d.refused.map(q => `<li data-change="${esc(q.change)}">${esc(q.text)}</li>`).join("") + `</ul>`
      : `<p class="muted" id="rules-refused-none">Nothing refused.</p>`;
    const flagged = d.flagged.length ? `<table class="cards" id="rules-flagged"><tr><th>Event</th><th>Rule</th><th>What</th></tr>` +
      d.flagged.map(({conflict: c, event: e}) => `<tr data-id="${esc(c.event)}" data-rule="${esc(c.rule)}"><td data-label="Event">${evId(c.event)}</td><td data-label="Rule"><b>${esc(c.rule)}</b>${c.error ? " (error)" : ""}</td>` +
        `<td data-label="What">${e ? describe(e) : ""} <span class="muted">${esc(c.message)}</span></td></tr>`).join("") + `</table>`
      : `<p class="muted" id="rules-flagged-none">Nothing flagged.</p>`;
    v.innerHTML = `<h2>Rules</h2><p class="muted small">The network's own rules, published by its admins and enforced the same way on every device: a <i>refuse</i> rule keeps an event out of the ledger, a <i>flag</i> rule lets it stand and marks it for review.</p>` +
      rules + `<h3>Refused</h3>` + refused + `<h3>Flagged</h3>` + flagged;
  },

  async offers(v) {
    v.innerHTML = `<h2>Offers &amp; requests</h2><div id="offers-list"></div><p><span class="msg" id="accept-msg"></span></p>` +

      `<h3>New offer or request</h3><form class="stack" id="intent-form">` +
      `<label><span>Kind</span><select name="kind"><option value="offer">Offer (I provide)</option><option value="request">Request (I need)</option></select></label>` +
      `<label><span>Agent <b class="req">*</b></span><select name="agent" required>${options(objects.agents)}</select></label>` +
      `<label><span>Action</span><select name="action">${actions.map(a => `<option value="${a.action}"${a.action === "transfer" ? " selected" : ""}>${a.action}</option>`).join("")}</select></label>` +
      `<label><span>Kind of resource</span><select name="conformsTo">${options(objects.specs)}</select></label>` +
      `<label><span>Or a specific resource</span><select name="resource">${options(objects.resources)}</select></label>` +
      `<label><span>Quantity</span><div class="pair"><input name="quantityValue" inputmode="decimal" placeholder="e.g. 3"><select name="quantityUnit">${options(objects.units)}</select></div></label>` +
      `<label><span>Where</span><select name="atLocation">${options(objects.locations)}</select></label>` +
      `<label><span>Publish in a new proposal named</span><input name="proposal" placeholder="e.g. Saturday market"></label>` +
      `<label><span>Price (asked in return)</span><div class="pair"><input name="priceValue" inputmode="decimal" placeholder="e.g. 3"><select name="priceUnit">${options(objects.units)}</select></div></label>` +
      `<label><span>Kind of payment</span><select name="priceConformsTo">${options(objects.specs)}</select></label>` +
      `<label><span>Note</span><input name="note"></label>` +
      `<button type="submit">Publish</button><span class="msg" id="intent-msg"></span></form>`;
    $("#intent-form").onsubmit = async ev => {
      ev.preventDefault();
      const body = formBody(ev.target);
      const m = $("#intent-msg");
      const r = await post("/api/intents", body);
      m.className = "msg " + (r.ok ? "ok" : "err");
      m.textContent = r.ok ? "published " + r.body.id : r.body.error;
      if (r.ok) await offersList();
    };
    await offersList();
  },

  async peers(v) {
    const p = await get("/api/peers");
    v.innerHTML = `<h2>Peers &amp; sync</h2><div class="card grid"><div class="fact"><b>This device</b><span class="mono">${esc(p.device)}</span></div>` +
      `<div class="fact"><b>Events</b>${p.events}</div><div class="fact"><b>Heads</b><span class="mono small">${p.heads.map(h => esc(h.slice(0, 12))).join(" ")}</span></div></div>` +
      `<h3>Peers</h3>` + (p.peers.length ? `<table class="cards" id="peers-table"><tr><th>Device</th><th>Acts for</th><th>Connection</th><th>Sync</th><th>Last error</th></tr>` + p.peers.map(x =>
        `<tr><td class="mono" data-label="Device">${esc(x.device)}</td>${td("Acts for", esc(agentName(p.members.find(m => m.device === x.device)?.agent)))}<td data-label="Connection">${x.connected ? `<span class="tag offer">connected</span>` : `<span class="tag bad">offline</span>`}</td>` +
        `<td data-label="Sync">${x.inSync === true ? "in sync" : x.inSync === false ? "syncing…" : "unknown"}</td>${td("Last error", esc(x.lastError))}</tr>`).join("") + `</table>`
        : `<p class="muted">No peers known yet. Share an <a href="#invite">invite</a>.</p>`) +
      `<h3>Members</h3><table class="cards"><tr><th>Device</th><th>Role</th><th>Acts for</th></tr>` + p.members.map(m =>
        `<tr><td class="mono" data-label="Device">${esc(m.device)}${m.device === p.device ? " (this device)" : ""}</td><td data-label="Role">${esc(m.role)}</td><td data-label="Acts for">${esc(agentName(m.agent))}</td></tr>`).join("") + `</table>`;
  },

  async invite(v) {
    v.innerHTML = `<h2>Invite a device</h2><p>An invite lets one more phone or laptop join this network (once, within 24 hours). ` +
      `Show the QR code or send the ticket text; the newcomer runs <code>reflow network join &lt;ticket&gt; --as "Their name"</code> while this node is running.</p>` +
      `<p><label>Role <select id="invite-role"><option value="member" selected>member (reads and writes)</option><option value="observer">observer (reads only)</option><option value="admin">admin (also invites and removes)</option></select></label> ` +
      `<button id="make-invite">Make an invite</button> <span class="msg" id="invite-msg"></span></p><div id="invite-out"></div>`;
    $("#make-invite").onclick = async () => {
      const r = await post("/api/invite", {role: $("#invite-role").value});
      const m = $("#invite-msg");
      if (!r.ok) { m.className = "msg err"; m.textContent = r.body.error; return; }
      m.className = "msg ok"; m.textContent = `${r.body.role}, valid once within ${r.body.expiresInHours} hours`;
      $("#invite-out").innerHTML = `<div class="card"><div class="qr" id="qr">${r.body.svg}</div>` +
        `<label><span class="muted small">Ticket</span><textarea class="ticket" id="ticket" readonly>${esc(r.body.ticket)}</textarea></label>` +
        `<button class="secondary" id="copy-ticket">Copy</button></div>`;
      $("#copy-ticket").onclick = () => { $("#ticket").select(); navigator.clipboard?.writeText(r.body.ticket); };
    };
  },

  async map(v) {
    const d = await get("/api/map");
    drawMap(v, d);
  },
};


// The list part of the offers page (redrawn on changes; the form below keeps its input).
async function offersList() {
  const o = await get("/api/offers");
  const inProposal = id => o.proposals.filter(p => p.publishes.includes(id)).map(p => p.name).join(", ");
  const el = $("#offers-list");
  if (el) el.innerHTML = o.intents.length ? `<table class="cards" id="intents-table"><tr><th></th><th>What</th><th>Who</th><th>Where</th><th>Proposal</th><th>Note</th></tr>` + o.intents.map(i =>
        `<tr data-id="${esc(i.id)}"><td><span class="tag ${i.provider ? "offer" : "request"}">${i.provider ? "offer" : "request"}</span>${i.finished ? ` <span class="tag">done</span>` : ""}</td>` +
        `<td data-label="What"><b>${esc(i.action)}</b> ${qty(i.resourceQuantity)} ${i.resourceInventoriedAs ? resLink(i.resourceInventoriedAs) : esc(specName(i.resourceConformsTo))}</td>` +
        `<td data-label="Who">${esc(agentName(i.provider || i.receiver))}</td><td data-label="Where">${esc(placeName(i.atLocation))}</td>` +
        `<td data-label="Proposal">${esc(inProposal(i.id))}</td><td data-label="Note">${esc(i.note)}${i.due ? ` <span class="muted">due ${esc(i.due)}</span>` : ""}</td></tr>`).join("") + `</table>`
    : `<p class="muted">No offers or requests yet.</p>`;
  const open = o.proposals.filter(p => p.status === "open");
  if (el && open.length) el.innerHTML += `<h3>Open proposals</h3><table class="cards" id="proposals-table"><tr><th>Proposal</th><th>Gives</th><th>Asks</th><th></th></tr>` +
    open.map(p => {
      const what = ids => (ids || []).map(id => byIdIntent(o, id)).filter(Boolean).map(i => `${esc(i.action)} ${qty(i.resourceQuantity || i.effortQuantity)} ${esc(specName(i.resourceConformsTo))}`).join(", ");
      const mine = (p.publishes || []).map(id => byIdIntent(o, id)).some(i => i && (i.provider === me.agent || i.receiver === me.agent));
      return `<tr data-id="${esc(p.id)}"><td data-label="Proposal">${esc(p.name)}</td><td data-label="Gives">${what(p.publishes)}</td><td data-label="Asks">${what(p.reciprocal)}</td>` +
        `<td>${mine ? `<span class="muted small">yours</span>` : `<button class="accept" data-proposal="${esc(p.id)}">Accept</button>`}</td></tr>`;
    }).join("") + `</table>`;
  for (const b of document.querySelectorAll("button.accept")) b.onclick = async () => {
    const r = await post(`/api/proposals/${enc(b.dataset.proposal)}/accept`);
    if (r.ok) await offersList();
    const m = $("#accept-msg");
    m.className = "msg " + (r.ok ? "ok" : "err");
    m.textContent = r.ok ? `agreement ${r.body.agreement}: see Commitments` : r.body.error;
  };
}
const byIdIntent = (o, id) => o.intents.find(i => i.id === id);

// ---------------------------------------------------------------- commitments and flows
const PROGRESS = {open: "open", partly: "partly fulfilled", fulfilled: "fulfilled"};
// A link to the event form, prefilled to record what fulfils commitment `c`.
function fulfilLink(s) {
  const c = s.commitment, left = s.committed && s.fulfilled ? Number(s.committed.hasNumericalValue) - Number(s.fulfilled.hasNumericalValue) : null;
  const unit = (s.committed || {}).hasUnit;
  const params = new URLSearchParams({action: c.action, provider: c.provider || "", receiver: c.receiver || "", fulfills: s.id});
  if (c.resourceConformsTo) params.set("conformsTo", c.resourceConformsTo);
  if (left !== null && left > 0) params.set(c.resourceQuantity ? "quantity" : "effort", `${left} ${unit}`);
  if (c.clauseOf || c.reciprocalClauseOf) params.set("realizationOf", c.clauseOf || c.reciprocalClauseOf);
  return `#record?${params}`;
}
async function commitmentsList(v) {
  const [cs, as] = await Promise.all([get("/api/commitments?now=" + enc(new Date().toISOString())), get("/api/agreements")]);
  const row = s => {
    const c = s.commitment;
    return `<tr data-id="${esc(s.id)}" data-progress="${esc(s.progress)}"><td data-label="Commitment"><b>${esc(c.action)}</b> ${qty(s.committed)} ${esc(specName(c.resourceConformsTo))}` +
      ` <span class="muted">${esc(agentName(c.provider))} → ${esc(agentName(c.receiver))}</span></td>` +
      td("Fulfilled", `${qty(s.fulfilled)}${s.percent ? ` (${esc(s.percent)} %)` : ""}`, "num") +
      `<td data-label="Status"><span class="tag progress-${esc(s.progress)}">${PROGRESS[s.progress]}</span>${c.finished ? ` <span class="tag">finished</span>` : ""}${s.overdue ? ` <span class="tag bad overdue">overdue</span>` : ""}</td>` +
      td("Due", esc(c.due)) +
      `<td class="keep">${s.progress === "fulfilled" || c.finished ? "" : `<a class="button secondary fulfil" href="${fulfilLink(s)}">Record</a>`}</td></tr>`;
  };
  const table = list => `<table class="cards commitments"><tr><th>Commitment</th><th>Fulfilled</th><th>Status</th><th>Due</th><th></th></tr>` + list.map(row).join("") + `</table>`;
  const inAgreement = new Set(as.flatMap(a => a.stipulates.concat(a.stipulatesReciprocal).map(s => s.id)));
  const other = cs.filter(s => !inAgreement.has(s.id));
  v.innerHTML = `<h2>Commitments</h2><p class="muted small">Fulfilment is worked out from the events that fulfil each commitment; overdue is judged by this device's clock.</p>` +
    (as.length ? `<h3>Agreements</h3>` + as.map(a => `<div class="card agreement" data-id="${esc(a.id)}"><b>${esc(a.agreement.name)}</b>${a.complete ? ` <span class="tag offer">complete</span>` : ""}` +
      `<p class="small muted">gives</p>${table(a.stipulates)}<p class="small muted">in return</p>${table(a.stipulatesReciprocal)}</div>`).join("") : "") +
    `<h3>Other commitments</h3>` + (other.length ? table(other) : `<p class="muted">None.</p>`) +
    `<h3>Plan from a recipe</h3><form class="stack" id="recipe-form">` +
    `<label><span>Recipe <b class="req">*</b></span><select name="recipeProcess" required>${options(objects.recipeProcesses || [])}</select></label>` +
    `<label><span>Who does the work <b class="req">*</b></span><select name="provider" required>${options(objects.agents, me.agent)}</select></label>` +
    `<label><span>For <b class="req">*</b></span><select name="receiver" required>${options(objects.agents)}</select></label>` +
    `<label><span>Plan</span><input name="plan" placeholder="e.g. saturday"></label><label><span>Due (ISO 8601)</span><input name="due" placeholder="2026-03-07T17:00:00Z"></label>` +
    `<button type="submit">Plan</button><span class="msg" id="recipe-msg"></span></form>`;
  $("#recipe-form").onsubmit = async ev => {
    ev.preventDefault();
    const r = await post("/api/recipe-plan", formBody(ev.target));
    const m = $("#recipe-msg");
    m.className = "msg " + (r.ok ? "ok" : "err");
    m.textContent = r.ok ? `planned ${r.body.process}: ${r.body.inputs.length + r.body.outputs.length} commitments` : r.body.error;
  };
}

// A bar chart of rows as inline SVG (no library, nothing from the network): one bar per row.
function barChart(rows, unit) {
  const W = 640, H = 220, pad = 34, n = rows.length;
  const max = Math.max(...rows.map(r => Number(r.quantity)), 0) || 1;
  const bw = Math.max(4, (W - pad * 2) / Math.max(n, 1) - 6);
  const label = r => [r.period, r.action, specName(r.resourceSpecification), agentName(r.provider), agentName(r.receiver), placeName(r.place)].filter(Boolean).join(" · ");
  const bars = rows.map((r, i) => {
    const h = Math.round((Number(r.quantity) / max) * (H - pad * 2));
    const x = pad + i * (bw + 6), y = H - pad - h;
    return `<g class="bar"><rect x="${x}" y="${y}" width="${bw}" height="${h}" fill="#2f7d5b"><title>${esc(label(r))}: ${esc(r.quantity)} ${esc(unitName(unit))}</title></rect>` +
      `<text x="${x + bw / 2}" y="${y - 3}" font-size="10" text-anchor="middle">${esc(r.quantity)}</text>` +
      `<text x="${x + bw / 2}" y="${H - pad + 12}" font-size="9" text-anchor="middle">${esc(String(label(r)).slice(0, 14))}</text></g>`;
  }).join("");
  return `<svg class="chart" data-unit="${esc(unit)}" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="flows in ${esc(unitName(unit))}">` +
    `<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#888"/><text x="4" y="14" font-size="11">${esc(unitName(unit))} (max ${max})</text>${bars}</svg>`;
}
async function flowsReport() {
  const f = $("#flows-form");
  const p = new URLSearchParams();
  const by = [...f.querySelectorAll("input[name=by]:checked")].map(x => x.value).join(",");
  if (by) p.set("by", by);
  for (const k of ["period", "from", "to", "action", "place", "spec"]) if (f[k].value) p.set(k, f[k].value);
  const out = $("#flows-out");
  let d;
  try { d = await get("/api/flows?" + p); } catch (e) { out.innerHTML = `<p class="err">${esc(e.message)}</p>`; return; }
  const rows = d.report.rows;
  const units = [...new Set(rows.map(r => r.unit || ""))];
  out.innerHTML = (rows.length ? units.map(u => `<h4>${esc(unitName(u) || "no quantity")}</h4>${barChart(rows.filter(r => (r.unit || "") === u), u)}`).join("") +
    `<table class="cards" id="flows-table"><tr><th>Period</th><th>Action</th><th>Kind</th><th>Provider</th><th>Receiver</th><th>Place</th><th>Total</th><th>Events</th></tr>` +
    rows.map(r => `<tr>${td("Period", esc(r.period))}${td("Action", esc(r.action))}${td("Kind", esc(specName(r.resourceSpecification)))}${td("Provider", esc(agentName(r.provider)))}` +
      `${td("Receiver", esc(agentName(r.receiver)))}${td("Place", esc(placeName(r.place)))}${td("Total", `${esc(r.quantity)} ${esc(unitName(r.unit))}`, "num")}${td("Events", r.events, "num")}</tr>`).join("") + `</table>`
    : `<p class="muted" id="no-flows">No events match.</p>`) +
    (d.report.undated ? `<p class="small muted">${d.report.undated} events without a readable time left out.</p>` : "") +
    `<p><a class="button secondary" id="flows-csv" download="flows.csv" href="data:text/csv;charset=utf-8,${enc(d.csv)}">Download CSV</a></p>`;
}
Object.assign(pages, {
  async commitments(v) { await commitmentsList(v); },
  async flows(v) {
    v.innerHTML = `<h2>Flows</h2><p class="muted small">Totals of the events, grouped as you choose, drawn here (nothing from the internet).</p>` +
      `<form class="stack" id="flows-form"><fieldset><legend>Group by</legend>` +
      [["action", "action"], ["spec", "kind of resource"], ["provider", "provider"], ["receiver", "receiver"], ["place", "place"]].map(([k, l]) =>
        `<label class="inline"><input type="checkbox" name="by" value="${k}"${k === "place" ? " checked" : ""}> ${l}</label>`).join(" ") + `</fieldset>` +
      `<label><span>Period</span><select name="period"><option value="">none</option><option value="day">day</option><option value="week">week</option><option value="month" selected>month</option></select></label>` +
      `<label><span>From (ISO date)</span><input name="from" placeholder="2026-03-01"></label><label><span>To (exclusive)</span><input name="to" placeholder="2026-04-01"></label>` +
      `<label><span>Action</span><select name="action"><option value=""></option>${actions.map(a => `<option>${a.action}</option>`).join("")}</select></label>` +
      `<label><span>Place</span><select name="place">${options(objects.locations)}</select></label>` +
      `<label><span>Kind of resource</span><select name="spec">${options(objects.specs)}</select></label>` +
      `<button type="submit">Show</button></form><div id="flows-out"></div>`;
    $("#flows-form").onsubmit = ev => { ev.preventDefault(); flowsReport(); };
    await flowsReport();
  },
});

// ---------------------------------------------------------------- event form
// VF field name -> [input name, label, kind].
const FIELDS = {
  provider: ["provider", "Provider (who gives or works)", "agent"],
  receiver: ["receiver", "Receiver", "agent"],
  resourceQuantity: ["quantity", "Quantity", "measure"],
  effortQuantity: ["effort", "Effort (time)", "measure"],
  resourceInventoriedAs: ["resource", "Resource", "resource"],
  toResourceInventoriedAs: ["toResource", "To resource", "resource"],
  newInventoriedResource: ["newResource", "New resource (id)", "new"],
  resourceConformsTo: ["conformsTo", "Kind of resource", "spec"],
  inputOf: ["inputOf", "Input of process", "process"],
  outputOf: ["outputOf", "Output of process", "process"],
  atLocation: ["atLocation", "Where", "location"],
  toLocation: ["toLocation", "To location", "location"],
  state: ["state", "State (e.g. pass, fail)", "text"],
};

// This device, from /api/info: its agent, and whether it may record for other agents.
let me = {};

function fieldInput(vf, required, pre) {
  const [name, label, kind] = FIELDS[vf];
  const r = required ? " required" : "";
  const star = required ? ` <b class="req">*</b>` : "";
  // A member records only events it takes part in: its own agent is the default provider.
  const own = vf === "provider" && !me.recordsForOthers && me.agent ? me.agent : "";
  const val = pre?.[name] ?? own;
  let input;
  switch (kind) {
    case "agent": input = `<select name="${name}"${r}>${options(objects.agents, val)}</select>`; break;
    case "resource": input = `<select name="${name}"${r}>${options(objects.resources, val)}</select>`; break;
    case "spec": input = `<select name="${name}"${r}>${options(objects.specs, val)}</select>`; break;
    case "process": input = `<select name="${name}"${r}>${options(objects.processes, val)}</select>`; break;
    case "location": input = `<select name="${name}"${r}>${options(objects.locations, val)}</select>`; break;
    case "measure": {
      const [n, u] = String(val).split(" ");
      input = `<div class="pair"><input name="${name}Value" inputmode="decimal" placeholder="e.g. 2.5"${r} value="${esc(n || "")}">` +
        `<select name="${name}Unit" aria-label="unit"${r}>${options(objects.units, u || "")}</select></div>`; break;
    }
    case "new": return `<label><span>${label}${star}</span><input name="newResource" placeholder="e.g. jam-2" value="${esc(val)}"${r}></label>` +
      `<label><span>New resource name</span><input name="newResourceName" placeholder="e.g. Plum jam"></label>`;
    default: input = `<input name="${name}" value="${esc(val)}"${r}>`;
  }
  return `<label data-field="${vf}"><span>${label}${star}</span>${input}</label>`;
}

// The form's values as the API's JSON (measures joined as "value unit").
function formBody(form) {
  const body = {};
  new FormData(form).forEach((x, k) => { if (String(x).trim()) body[k] = String(x).trim(); });
  for (const k of Object.keys(body)) {
    if (k.endsWith("Value")) {
      const base = k.slice(0, -5);
      body[base] = `${body[k]} ${body[base + "Unit"] || ""}`.trim();
      delete body[k]; delete body[base + "Unit"];
    }
  }
  for (const k of Object.keys(body)) if (k.endsWith("Unit")) delete body[k];
  return body;
}

// Prefill values (input names) from an event being corrected, or from the hash's query.
function prefill(original) {
  if (original) {
    const m = x => x ? `${x.hasNumericalValue} ${x.hasUnit}` : "";
    return {provider: original.provider, receiver: original.receiver, quantity: m(original.resourceQuantity), effort: m(original.effortQuantity),
      resource: original.resourceInventoriedAs, toResource: original.toResourceInventoriedAs, conformsTo: original.resourceConformsTo,
      inputOf: original.inputOf, outputOf: original.outputOf, atLocation: original.atLocation, toLocation: original.toLocation,
      state: original.state, note: original.note, action: original.action};
  }
  return Object.fromEntries(new URLSearchParams(location.hash.split("?")[1] || ""));
}

async function eventForm(v, original) {
  const pre = prefill(original);
  const start = pre.action || "transfer";
  v.innerHTML = (original ? `<p><a href="#events">← events</a></p><h2>Correct event ${evId(original.id)}</h2>` +
      `<div class="card">${describe(original)}</div><p class="muted small">The correcting event replaces it: change what was wrong (a quantity of 0 undoes it).</p>`
      : `<h2>Record an event</h2>`) +
    (me.recordsForOthers ? "" : `<p class="small muted" id="acting-for">This device records as ${esc(agentName(me.agent))}: as provider or receiver.</p>`) +
    `<form class="stack" id="record-form" novalidate><label><span>Action</span><select name="action" id="act"${original ? " disabled" : ""}>` +
    actions.map(a => `<option value="${a.action}"${a.action === start ? " selected" : ""}>${a.action}</option>`).join("") + `</select></label>` +
    `<p class="small muted" id="act-help"></p><div id="fields"></div><label><span>Note</span><input name="note" value="${esc(pre.note || "")}"></label>` +
    (original ? "" : `<label><span>When (ISO 8601, or now)</span><input name="atTime" value="${esc(pre.atTime || "now")}"></label>`) +
    (pre.fulfills ? `<p class="small" id="fulfils">Fulfils commitment <span class="mono">${esc(pre.fulfills)}</span></p><input type="hidden" name="fulfills" value="${esc(pre.fulfills)}">` : "") +
    (pre.realizationOf ? `<input type="hidden" name="realizationOf" value="${esc(pre.realizationOf)}">` : "") +
    `<button type="submit" id="record-submit">${original ? "Record correction" : "Record"}</button><span class="msg" id="msg"></span></form>`;
  const draw = () => {
    const a = actions.find(x => x.action === $("#act").value);
    const f = a.fields;
    $("#act-help").textContent = `${a.inputOutput === "notApplicable" ? "Between agents" : "Process " + a.inputOutput}` +
      `; on hand: ${a.onhand}; accounting: ${a.accounting}` + (a.pairsWith ? `; pairs with ${a.pairsWith}` : "");
    let html = f.required.map(x => fieldInput(x, true, pre)).join("");
    html += f.oneOf.map(g => `<fieldset data-one-of="${g.join(" ")}"><legend>One of <b class="req">*</b></legend>${g.map(x => fieldInput(x, false, pre)).join("")}</fieldset>`).join("");
    const shown = new Set(f.required.concat(...f.oneOf));
    html += f.optional.filter(x => !shown.has(x)).map(x => fieldInput(x, false, pre)).join("");
    $("#fields").innerHTML = html;
  };
  $("#act").onchange = draw;
  draw();
  $("#record-form").onsubmit = async ev => {
    ev.preventDefault();
    const form = ev.target, m = $("#msg");
    const missing = [...form.querySelectorAll("[required]")].filter(x => !x.value.trim()).map(x => x.closest("label").querySelector("span").textContent.replace("*", "").trim());
    for (const fs of form.querySelectorAll("fieldset[data-one-of]"))
      if (![...fs.querySelectorAll("input,select")].some(x => !x.name.endsWith("Unit") && x.value.trim())) missing.push("one of " + fs.dataset.oneOf);
    if (missing.length) { m.className = "msg err"; m.textContent = "Missing: " + missing.join(", "); return; }
    const body = formBody(form);
    body.action = $("#act").value;
    // The network refuses a member's event between two other agents: say so before sending.
    if (!me.recordsForOthers && me.agent && body.provider !== me.agent && body.receiver !== me.agent) {
      m.className = "msg err";
      m.textContent = `This device acts for ${agentName(me.agent)}: record events where ${agentName(me.agent)} is the provider or the receiver (an admin can record for others).`;
      return;
    }
    const r = original ? await post(`/api/events/${enc(original.id)}/correct`, body) : await post("/api/events", body);
    m.className = "msg " + (r.ok ? "ok" : "err");
    m.textContent = r.ok ? `recorded ${r.body.id}` : r.body.error;
    if (r.ok) { form.dataset.recorded = r.body.id; await loadObjects(); }
  };
}

// ---------------------------------------------------------------- map
// An offline map: an equirectangular projection of the locations' coordinates (longitude
// scaled by cos(latitude)), a graticule, a scale bar, the resources at each place and the
// moves between places. No tiles, nothing from the network.
function drawMap(v, d) {
  const placed = d.locations.filter(l => typeof l.lat === "number" && typeof l.long === "number");
  const unplaced = d.locations.filter(l => !placed.includes(l));
  if (!placed.length) { v.innerHTML = `<h2>Map</h2><p>No locations with coordinates yet (<code>reflow location add … --lat … --long …</code>).</p>`; return; }
  const W = 900, H = 560, P = 70;
  const lats = placed.map(l => l.lat), longs = placed.map(l => l.long);
  const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos(midLat * Math.PI / 180);
  let x0 = Math.min(...longs) * k, x1 = Math.max(...longs) * k, y0 = Math.min(...lats), y1 = Math.max(...lats);
  let span = Math.max(x1 - x0, y1 - y0, 0.002);
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const scale = Math.min((W - 2 * P) / span, (H - 2 * P) / span);
  const X = lon => W / 2 + (lon * k - cx) * scale, Y = lat => H / 2 - (lat - cy) * scale;
  // Graticule step: a round number of degrees giving 4 to 10 lines.
  const spanDeg = span / Math.min(1, k) * (W / Math.min(W, H));
  const step = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20].find(s => spanDeg / s <= 10) || 30;
  let grid = "";
  const lonMin = (cx - W / 2 / scale) / k, lonMax = (cx + W / 2 / scale) / k, latMin = cy - H / 2 / scale, latMax = cy + H / 2 / scale;
  for (let g = Math.ceil(lonMin / step) * step; g <= lonMax; g += step)
    grid += `<line x1="${X(g)}" y1="0" x2="${X(g)}" y2="${H}" class="grid"/><text x="${X(g) + 3}" y="${H - 6}" class="gl">${g.toFixed(4)}°</text>`;
  for (let g = Math.ceil(latMin / step) * step; g <= latMax; g += step)
    grid += `<line x1="0" y1="${Y(g)}" x2="${W}" y2="${Y(g)}" class="grid"/><text x="4" y="${Y(g) - 3}" class="gl">${g.toFixed(4)}°</text>`;
  // Scale bar: a round number of metres about a fifth of the width.
  const mPerPx = 111320 / scale;
  const target = mPerPx * W / 5;
  const bar = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000].reverse().find(b => b <= target) || 10;
  const barPx = bar / mPerPx;
  const barLabel = bar >= 1000 ? `${bar / 1000} km` : `${bar} m`;
  const at = {};
  for (const r of d.resources) if (r.currentLocation) (at[r.currentLocation] = at[r.currentLocation] || []).push(r);
  const pos = Object.fromEntries(placed.map(l => [l.id, [X(l.long), Y(l.lat)]]));
  const radius = id => 9 + Math.min((at[id] || []).length, 6) * 2;
  const moves = d.moves.filter(m => pos[m.from] && pos[m.to]).map(m => {
    const [ax, ay] = pos[m.from], [tx, ty] = pos[m.to];
    const mx = (ax + tx) / 2 - (ty - ay) * 0.15, my = (ay + ty) / 2 + (tx - ax) * 0.15;
    // End the arrow at the edge of the destination's pin.
    const dx = tx - mx, dy = ty - my, len = Math.hypot(dx, dy) || 1, back = radius(m.to) + 4;
    const bx = tx - dx / len * back, by = ty - dy / len * back;
    return `<path d="M${ax},${ay} Q${mx},${my} ${bx},${by}" class="move" marker-end="url(#arrow)"><title>${esc(m.action)} ${esc(resName(m.resource))}: ${esc(placeName(m.from))} → ${esc(placeName(m.to))}</title></path>`;
  }).join("");
  const places = placed.map(l => {
    const [x, y] = pos[l.id], here = at[l.id] || [];
    const right = x < W - 230;
    const tx = right ? x + 16 : x - 16, anchor = right ? "start" : "end";
    return `<g class="place" data-id="${esc(l.id)}"><circle cx="${x}" cy="${y}" r="${radius(l.id)}" class="pin"/>` +
      `<text x="${tx}" y="${y + 5}" text-anchor="${anchor}" class="pl">${esc(l.name)}</text>` +
      here.slice(0, 6).map((r, i) => `<a href="#resource/${enc(r.id)}"><text x="${tx}" y="${y + 24 + i * 17}" text-anchor="${anchor}" class="rl">• ${esc(r.name)} · ${qty(r.onhandQuantity)}</text></a>`).join("") +
      (here.length > 6 ? `<text x="${tx}" y="${y + 24 + 6 * 17}" text-anchor="${anchor}" class="rl">+${here.length - 6} more</text>` : "") + `</g>`;
  }).join("");
  const nowhere = d.resources.filter(r => !r.currentLocation || !pos[r.currentLocation]);
  v.innerHTML = `<h2>Map</h2><div class="map-wrap"><svg class="map" id="map-svg" viewBox="0 0 ${W} ${H}" role="img" aria-label="Map of resources and locations">` +
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#bc6c25"/></marker></defs>` +
    `<style>.grid{stroke:#d7e3da;stroke-width:1}.gl{font-size:10px;fill:#8a9a8f}.pin{fill:#2d6a4f;stroke:#fff;stroke-width:3}.pl{font-size:16px;font-weight:600;fill:#1f2421;paint-order:stroke;stroke:#f4f8f5;stroke-width:4px}.rl{font-size:13px;fill:#40554a;paint-order:stroke;stroke:#f4f8f5;stroke-width:3px}.move{fill:none;stroke:#bc6c25;stroke-width:2.5;stroke-dasharray:6 4;opacity:.85}</style>` +
    `<rect width="${W}" height="${H}" fill="#f4f8f5"/>${grid}${moves}${places}` +
    `<g transform="translate(${W - barPx - 30},${H - 40})"><rect x="-8" y="-18" width="${barPx + 16}" height="34" fill="#fff" opacity=".8" rx="4"/><line x1="0" y1="0" x2="${barPx}" y2="0" stroke="#1f2421" stroke-width="3"/><text x="${barPx / 2}" y="-5" text-anchor="middle" font-size="12">${barLabel}</text></g>` +
    `<g transform="translate(${W - 34},34)"><path d="M0,-18L7,6L0,1L-7,6z" fill="#1f2421"/><text y="20" text-anchor="middle" font-size="12">N</text></g>` +
    `</svg></div><p class="muted small">${placed.length} places, ${d.resources.length} resources, ${d.moves.length} move${d.moves.length === 1 ? "" : "s"} between places. Drawn from the locations' coordinates, offline.</p>` +
    (nowhere.length ? `<h3>Resources without a place on the map</h3><p>${nowhere.map(r => resLink(r.id)).join(", ")}</p>` : "") +
    (unplaced.length ? `<h3>Places without coordinates</h3><p>${unplaced.map(l => esc(l.name)).join(", ")}</p>` : "");
}

// ---------------------------------------------------------------- routing and live updates
const FORMS = new Set(["record", "correct", "offers", "invite", "flows"]);
let current = "inventory";
function route() {
  const h = decodeURIComponent(location.hash.slice(1).split("?")[0]) || "inventory";
  const i = h.indexOf("/");
  return i < 0 ? [h, null] : [h.slice(0, i), h.slice(i + 1)];
}
// One render at a time, in order: a live update's redraw of a page that is still fetching
// must not finish after the page the user has opened since, and draw over it.
let rendering = Promise.resolve();
function render() {
  rendering = rendering.then(renderNow, renderNow);
  return rendering;
}
async function renderNow() {
  const [page, arg] = route();
  current = page;
  const tab = page === "resource" ? "inventory" : page === "correct" ? "events" : page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.tab === tab);
  const v = $("#view");
  const f = pages[page] || pages.inventory;
  try {
    await f(v, arg);
    v.dataset.view = page;
  } catch (e) {
    v.innerHTML = `<p class="err">${esc(e.message)}</p>`;
  }
}
async function refreshBadges() {
  const cs = await get("/api/conflicts");
  $("#conflict-count").textContent = cs.length ? cs.length : "";
}
let pending = null;
async function onChange(kind) {
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  if (kind === "update") { await loadObjects(); refreshBadges(); }
  // Forms keep what the user typed; every other page redraws.
  if (current === "offers" && kind === "update") offersList();
  if (current === "flows" && kind === "update") flowsReport();
  if (!FORMS.has(current) && (kind === "update" || current === "peers")) {
    clearTimeout(pending);
    // The user may have opened a form in the meantime: it keeps what they type.
    pending = setTimeout(() => { if (!FORMS.has(route()[0])) render(); }, 50);
  }
}
function live() {
  const el = $("#live");
  const es = new EventSource("/api/updates");
  es.addEventListener("hello", () => { el.className = "live on"; el.textContent = "● live"; });
  es.addEventListener("update", () => { el.textContent = "● updated " + new Date().toLocaleTimeString(); onChange("update"); });
  es.addEventListener("peers", () => onChange("peers"));
  es.onerror = () => { el.className = "live off"; el.textContent = "○ reconnecting"; };
}
window.addEventListener("hashchange", render);
(async () => {
  try {
    const i = await get("/api/info");
    me = i;
    $("#net-name").textContent = i.name;
    $("#device").textContent = `device ${String(i.device).slice(0, 10)}… · ${i.role || "not a member"}`;
  } catch (e) {
    // Without this launch's key (see `reflow serve`) the API refuses: say how to get in.
    $("#view").innerHTML = `<p class="err" id="no-access">${esc(e.message)}</p>`;
    $("#live").textContent = "○ no access";
    return;
  }
  actions = await get("/api/actions");
  await loadObjects();
  refreshBadges();
  live();
  await render();
})();
