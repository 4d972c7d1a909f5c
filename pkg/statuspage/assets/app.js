// ferry status page: renders /api/events. Every value from etcd is set as
// text (textContent), never as markup.
"use strict";

let page = null;     // the last view received
let skew = 0;        // server clock minus browser clock, in ms

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "width") e.style.width = v; // CSSOM: allowed by the page's CSP
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function now() { return Date.now() + skew; }

function isSet(t) { return t && !t.startsWith("0001-"); }

function duration(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m" + String(s % 60).padStart(2, "0") + "s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h" + String(m % 60).padStart(2, "0") + "m";
  return Math.floor(h / 24) + "d" + (h % 24) + "h";
}

function ago(t) { return isSet(t) ? duration(now() - Date.parse(t)) + " ago" : "–"; }

function when(t) {
  if (!isSet(t)) return "–";
  const d = new Date(t);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function badge(state) { return el("span", { class: "badge", "data-state": state }, state); }

function setRows(tbody, rows) { tbody.replaceChildren(...rows); }

function render() {
  if (!page) return;
  const f = page.fleet;
  renderEtcd();
  if (f) {
    renderRollout(f);
    renderServers(f);
    renderInfo(f);
  }
  renderHistory(page.history || []);
  renderConfig();
  $("footer").textContent = "served by the ferry-updater of " + (page.served_by || "?") +
    (isSet(page.etcd.read_at) ? " · read from etcd " + ago(page.etcd.read_at) : "");
}

function renderEtcd() {
  const b = $("etcd-banner");
  if (page.etcd.reachable) { b.hidden = true; return; }
  b.hidden = false;
  b.textContent = "etcd unreachable since " + when(page.etcd.since) + " (" + ago(page.etcd.since) + "): " +
    page.etcd.error + (isSet(page.etcd.read_at) ? " — showing the state read " + ago(page.etcd.read_at) : "");
}

// renderPause says who holds the rollout, why and since when, and what
// lets it go on.
function renderPause(f) {
  const p = $("rollout-pause");
  const lines = [];
  if (f.pause) {
    lines.push("Paused by " + f.pause.by + " since " + when(f.pause.at) + " (" + ago(f.pause.at) + ")" +
      (f.pause.reason ? ": " + f.pause.reason : "") + " — `ferry rollout resume` lifts it.");
  }
  if (f.canary_hold) {
    lines.push("The rest wait behind the canary of step " + f.canary_hold + " — look at it, then `ferry rollout resume` lets them take it.");
  }
  p.hidden = lines.length === 0;
  p.textContent = lines.join(" ");
}

function renderRollout(f) {
  const st = $("rollout-state");
  st.dataset.state = f.state;
  st.textContent = f.state;
  const req = f.request;
  $("rollout-stop").hidden = true;
  renderPause(f);
  if (!req) {
    $("rollout-versions").textContent = "no rollout yet";
    $("rollout-elapsed").textContent = "";
    $("steps").replaceChildren();
    return;
  }
  // The request says where the rollout came from; history only guesses.
  const from = req.from || page.from;
  $("rollout-versions").textContent = (from ? from + " → " : "to ") + req.version + " (" + req.reason + ", " + req.servers.length + " servers)";
  const end = isSet(req.finished_at) ? Date.parse(req.finished_at) : now();
  $("rollout-elapsed").textContent = "started " + when(req.started_at) + " · " +
    (isSet(req.finished_at) ? "took " : "running for ") + duration(end - Date.parse(req.started_at));
  if (req.failed && req.failed.length) {
    const p = $("rollout-stop");
    p.hidden = false;
    p.textContent = "Went on without: " + req.failed.map((f) => f.id + " (step " + f.step + " " + (f.step_name || "") + ": " + f.reason + ")").join("; ");
  }
  if (req.stop) {
    const p = $("rollout-stop");
    p.hidden = false;
    p.textContent = "Stopped: " + (req.stop_reason || "no reason given") + ". Fix the cause, then run `ferry recover`.";
  }
  const rows = (f.steps || []).map((s) => {
    const complete = s.done === s.of;
    return el("div", { class: "step", "data-step": s.step, "data-complete": String(complete) },
      el("span", {}, "step " + s.step + (s.name ? " " + s.name : "")),
      el("div", { class: "bar" },
        el("div", { class: "arrived", width: (100 * s.arrived / s.of) + "%" }),
        el("div", { class: "done", width: (100 * s.done / s.of) + "%" })),
      el("span", { class: "muted" }, s.arrived + "/" + s.of + " at barrier · " + s.done + "/" + s.of + " done"));
  });
  $("steps").replaceChildren(...rows);
}

function serverState(s) {
  if (!s.in_request && s.state === "idle") return "idle";
  return s.state;
}

function renderServers(f) {
  const req = f.request;
  const rows = (f.servers || []).map((s) => {
    const st = s.status;
    const step = st ? (st.step > 0 ? st.step + " " : "") + (st.step_name || "") : "";
    // A canary takes its step before the rest: say so, so that it does
    // not look like a server ahead of its barrier.
    const canary = s.canary ? el("span", { class: "label canary", title: "takes step " + s.canary + " before the rest" }, "canary") : null;
    let msg = st && st.message ? st.message : "";
    if (!s.alive && st && st.phase === "upgrading") msg = "restarting after its self-upgrade? " + msg;
    const labels = Object.entries(s.labels || {}).sort().map(([k, v]) => el("span", { class: "label" }, k + "=" + v));
    return el("tr", { "data-server": s.id, "data-state": s.state },
      el("td", { class: "id" }, s.id),
      el("td", { class: s.alive ? "alive yes" : "alive no" }, s.alive ? "yes" : "no"),
      el("td", { class: "installed" }, s.installed || "–"),
      el("td", { class: "target" }, req && s.in_request ? req.version : "–"),
      el("td", { class: "step" }, step || "–", canary),
      el("td", { class: "state" }, badge(serverState(s))),
      el("td", { class: "message" }, msg || "–"),
      el("td", { class: "labels" }, ...labels),
      el("td", { class: "seen" }, ago(s.last_seen)));
  });
  setRows($("servers").tBodies[0], rows);
  $("servers-empty").hidden = rows.length > 0;
}

function renderInfo(f) {
  $("leader").textContent = f.leader || "none: no updater leads";
  const c = f.last_check;
  if (c) {
    let out = c.result;
    if (c.version) out += " " + c.version;
    if (c.error) out += ": " + c.error;
    $("check").textContent = when(c.at) + " (" + ago(c.at) + ", by " + c.leader + "): " + out;
    $("check").className = c.result === "found" || c.result === "none" ? "" : "stop";
  } else {
    $("check").textContent = "none yet";
  }
  const r = f.release;
  let rel = r ? r.version + " (" + r.tag + (r.prerelease ? ", pre-release" : "") + ")" : "none seen yet";
  for (const x of page.refused || []) rel += " · REFUSED " + x.version + " since " + when(x.at) + ": " + x.reason + " (ferry release unrefuse " + x.version + ")";
  $("release").textContent = rel;
  const p = f.pin;
  $("pin").textContent = p ? p.version + " since " + when(p.pinned_at) + (p.allow_downgrade ? ", downgrade allowed" : "") : "not pinned";
  const w = page.window;
  if (!w) $("window").textContent = "–";
  else if (!w.lines || w.lines.length === 0) $("window").textContent = "any time";
  else $("window").textContent = (w.open ? "open now" : "closed; opens " + when(w.next)) + " · " + w.lines.join("; ") + " (" + w.timezone + ")";
}

// timelineRows are one rollout's step records, step by step, server by
// server: start and end from the rollout's start, attempts, result, and
// the error of every failed attempt.
function timelineRows(h) {
  const start = Date.parse(h.started_at);
  const rel = (t) => isSet(t) ? "+" + duration(Date.parse(t) - start) : "–";
  const recs = [];
  for (const id of h.servers) {
    for (const r of (h.timeline[id] || [])) recs.push([id, r]);
  }
  recs.sort((a, b) => a[1].step - b[1].step);
  return recs.map(([id, r]) => {
    const errs = (r.attempts || []).map((a, i) => a.error ? "attempt " + (i + 1) + ": " + a.error : null).filter((x) => x);
    if (errs.length === 0 && r.message) errs.push(r.message);
    return el("tr", { "data-step": r.step, "data-server": id },
      el("td", {}, r.step + " " + r.name), el("td", {}, id), el("td", {}, rel(r.start)), el("td", {}, rel(r.end)),
      el("td", {}, (r.attempts || []).length + (r.attempts && r.attempts.length === 1 ? " attempt" : " attempts")),
      el("td", {}, badge(r.result)), el("td", { class: "message" }, errs.join("; ") || "–"));
  });
}

function renderHistory(hist) {
  const rows = hist.map((h) => {
    const detail = h.timeline
      ? el("table", { class: "timeline" }, ...timelineRows(h))
      : el("table", {}, ...h.servers.map((id) => el("tr", {},
        el("td", {}, id),
        el("td", {}, h.durations && h.durations[id] !== undefined ? "last report after " + duration(1000 * h.durations[id]) : "no report"))));
    const servers = el("details", {}, el("summary", {}, h.servers.length + " servers" + (h.timeline ? ", timeline" : "")), detail);
    return el("tr", { "data-result": h.result },
      el("td", {}, when(h.started_at)),
      el("td", {}, h.version),
      el("td", {}, h.reason),
      el("td", {}, badge(h.result), h.stop_reason ? el("div", { class: "muted" }, h.stop_reason) : null),
      el("td", {}, duration(Date.parse(h.finished_at) - Date.parse(h.started_at))),
      el("td", {}, servers));
  });
  setRows($("history").tBodies[0], rows);
  $("history-empty").hidden = rows.length > 0;
}

function renderConfig() {
  const ce = $("config-error");
  ce.hidden = !page.config_error;
  ce.textContent = page.config_error ? "The stored config does not validate: " + page.config_error : "";
  const rows = (page.config || []).map((c) => el("tr", { "data-key": c.key },
    el("td", {}, el("code", {}, c.key)),
    el("td", {}, c.set ? c.value : el("span", { class: "muted" }, c.default ? "default: " + c.default : "unset"))));
  setRows($("config").tBodies[0], rows);
}

function connect() {
  const conn = $("conn");
  const es = new EventSource("api/events");
  es.addEventListener("status", (ev) => {
    page = JSON.parse(ev.data);
    skew = Date.parse(page.now) - Date.now();
    // Live means the view is current: the updater answers and so does
    // etcd behind it.
    conn.dataset.state = page.etcd.reachable ? "live" : "lost";
    conn.textContent = page.etcd.reachable ? "live" : "etcd unreachable";
    render();
  });
  es.onerror = () => {
    conn.dataset.state = "lost";
    conn.textContent = "updater unreachable; reconnecting…";
  };
}

connect();
// Ages and elapsed times move on between updates.
setInterval(render, 1000);
