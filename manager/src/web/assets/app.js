// The visualizer page: one column per node, one card per task, kept as
// the manager's store changes through server-sent events (/events): a
// "snapshot" replaces everything, a "change" puts and deletes objects.
// The DOM is redrawn at most once per animation frame.
"use strict";

const nodes = new Map();
const services = new Map();
const tasks = new Map();
let manager = "";
let pending = false;

function redrawSoon() {
  if (!pending) {
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// A stable colour per service name, so a service reads across columns.
function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function taskName(t) {
  const svc = t.service || (services.get(t.service_id) || {}).name || t.service_id;
  return t.slot > 0 ? `${svc}.${t.slot}` : svc;
}

// A card names its slot only: its service heads the group it is in. The
// image tag shows on the card when the group's tasks differ in it (during
// a rolling update), else once in the group's head.
function card(t, withTag) {
  const name = taskName(t);
  const health = t.health ? ` (${t.health})` : "";
  const label = t.slot > 0 ? `.${t.slot}` : (nodes.get(t.node) || {}).hostname || "global";
  return el("div", {
    class: "task", "data-task-id": t.id, "data-service": t.service, "data-state": t.state,
    "data-desired": t.desired, "data-health": t.health, style: `--hue:${hue(t.service || "")}`,
    title: `${name} ${t.image}\n${t.state}${health}${t.error ? "\n" + t.error : ""}\n${t.id}`,
  }, el("span", { class: "dot" }), el("span", { class: "slot" }, label),
  ...(withTag ? [" ", el("span", { class: "tag" }, t.tag)] : []));
}

// One node's tasks, grouped by service, each group in slot order.
function groups(list) {
  const bySvc = new Map();
  for (const t of list) {
    const svc = t.service || (services.get(t.service_id) || {}).name || t.service_id;
    if (!bySvc.has(svc)) bySvc.set(svc, []);
    bySvc.get(svc).push(t);
  }
  return [...bySvc.keys()].sort().map(svc => {
    const ts = bySvc.get(svc).sort((a, b) => a.slot - b.slot);
    const tags = new Set(ts.map(t => t.tag));
    const head = el("div", { class: "group-head", style: `--hue:${hue(svc)}` },
      el("span", { class: "svc" }, svc), " ",
      el("span", { class: "tag" }, tags.size === 1 ? `:${ts[0].tag}` : "mixed"), " ",
      el("span", { class: "n" }, `×${ts.length}`));
    return el("div", { class: "group" }, head,
      el("div", { class: "tasks" }, ...ts.map(t => card(t, tags.size > 1))));
  });
}

function column(n, list) {
  const labels = el("div", { class: "labels" },
    ...Object.entries(n.labels || {}).sort().map(([k, v]) => el("span", {}, v ? `${k}=${v}` : k)));
  const role = n.role + (n.leader ? " (leader)" : "");
  return el("section", { class: "node", "data-node-id": n.id, "data-hostname": n.hostname, "data-status": n.status },
    el("h2", { title: n.id }, n.hostname || n.id),
    el("div", { class: "meta" }, role, " · ", el("span", { class: "status" }, n.status), " · ", n.availability),
    labels,
    el("div", { class: "count" }, `${list.length} task${list.length === 1 ? "" : "s"}`),
    ...groups(list));
}

function draw() {
  const byNode = new Map();
  for (const t of tasks.values()) {
    if (!byNode.has(t.node)) byNode.set(t.node, []);
    byNode.get(t.node).push(t);
  }
  const sorted = [...nodes.values()].sort((a, b) =>
    (a.role === b.role ? 0 : a.role === "manager" ? -1 : 1) ||
    (a.hostname || "").localeCompare(b.hostname || "", undefined, { numeric: true }));
  const columns = sorted.map(n => column(n, byNode.get(n.id) || []));
  // Tasks not placed yet (pending) get a column of their own.
  const unplaced = [...tasks.values()].filter(t => !t.node || !nodes.has(t.node));
  if (unplaced.length) {
    columns.push(column({ id: "", hostname: "unassigned", role: "", status: "unknown", availability: "" }, unplaced));
  }
  document.getElementById("nodes").replaceChildren(...columns);
  const running = [...tasks.values()].filter(t => t.state === "running").length;
  document.getElementById("summary").textContent =
    `${nodes.size} nodes · ${services.size} services · ${tasks.size} tasks (${running} running) · via ${manager}`;
}

function put(map, o) { map.set(o.id, o); }

function onSnapshot(s) {
  manager = s.manager;
  nodes.clear(); services.clear(); tasks.clear();
  s.nodes.forEach(n => put(nodes, n));
  s.services.forEach(v => put(services, v));
  s.tasks.forEach(t => put(tasks, t));
  redrawSoon();
}

function onChange(c) {
  const maps = { node: nodes, service: services, task: tasks };
  for (const p of c.put) put(maps[p.kind], p[p.kind]);
  for (const d of c.delete) maps[d.kind].delete(d.id);
  redrawSoon();
}

function connect() {
  const link = document.getElementById("link");
  const source = new EventSource("/events");
  source.addEventListener("snapshot", e => onSnapshot(JSON.parse(e.data)));
  source.addEventListener("change", e => onChange(JSON.parse(e.data)));
  source.onopen = () => { link.dataset.state = "live"; link.textContent = "live"; };
  // EventSource reconnects by itself; the next snapshot sets everything anew.
  source.onerror = () => { link.dataset.state = "lost"; link.textContent = "reconnecting…"; };
}

connect();
