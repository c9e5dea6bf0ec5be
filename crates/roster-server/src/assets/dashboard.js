// The live dashboard: joins the admin topic "roster:admin" on the Phoenix socket and renders
// each "dashboard" push (about one a second). Nothing is polled.
//
// Outside demo mode the join needs {"api_key": K}: the page asks for it once and keeps it
// in sessionStorage (this tab only).

import { Socket } from "/assets/roster.js";

const ADMIN_TOPIC = "roster:admin";
const KEY_STORE = "roster_api_key";
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#4f7cff", "#f08c2e", "#2fb47c", "#c94fd6", "#e0b400", "#19a5c2", "#e2506a", "#7b8794"];

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// CSSOM, not a style attribute: the page's Content-Security-Policy allows no inline styles.
function swatch(i) {
  const node = el("span", { class: "swatch" });
  node.style.background = PALETTE[i % PALETTE.length];
  return node;
}

const ago = (ms) => (ms === null || ms === undefined ? "–" : ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(1)} s ago`);
const clock = (ms) => new Date(ms).toLocaleTimeString();

function renderNodes(snap) {
  $("viewer").textContent = snap.node;
  $("nodes").replaceChildren(
    ...snap.nodes.map((n, i) => {
      const tr = el("tr", { class: `node ${n.alive ? "alive" : "dead"}`, "data-node": n.name });
      const name = el("td", { class: "name" });
      name.append(swatch(i), document.createTextNode(n.name));
      const state = el("td", { class: "state" });
      state.append(el("span", { class: `pill ${n.alive ? "up" : "down"}` }, n.alive ? "up" : "down"));
      const here = el("td", { class: "here" });
      if (n.self) here.append(el("span", { class: "muted small" }, "this node"));
      else {
        const a = el("a", { href: `${location.protocol}//${n.http_addr}/dashboard`, target: "_blank", rel: "noopener" }, "its dashboard");
        here.append(a);
      }
      tr.append(
        name,
        state,
        el("td", { class: "link" }, n.link),
        el("td", { class: "incarnation mono" }, n.incarnation ?? "–"),
        el("td", { class: "heard" }, n.self ? "–" : ago(n.last_heartbeat_ms_ago)),
        el("td", { class: "partitions" }, String(n.partitions)),
        here,
      );
      return tr;
    }),
  );
}

function renderRing(snap) {
  const ring = $("ring");
  const n = snap.ring.length;
  const [inner, outer] = [62, 100];
  const parts = [];
  for (let i = 0; i < n; i++) {
    const a0 = (i / n) * 2 * Math.PI - Math.PI / 2;
    const a1 = ((i + 1) / n) * 2 * Math.PI - Math.PI / 2;
    const p = (r, a) => `${(r * Math.cos(a)).toFixed(2)} ${(r * Math.sin(a)).toFixed(2)}`;
    const large = a1 - a0 > Math.PI ? 1 : 0;
    const d = `M ${p(outer, a0)} A ${outer} ${outer} 0 ${large} 1 ${p(outer, a1)} L ${p(inner, a1)} A ${inner} ${inner} 0 ${large} 0 ${p(inner, a0)} Z`;
    const holder = snap.ring[i];
    const fill = holder === null ? "#e3e6ea" : PALETTE[holder % PALETTE.length];
    const path = svg("path", { d, fill, stroke: "#fff", "stroke-width": n > 128 ? "0.3" : "0.8" });
    const title = svg("title");
    title.textContent = `partition ${i}: ${holder === null ? "no home heard" : snap.nodes[holder].name}`;
    path.append(title);
    parts.push(path);
  }
  const unheld = snap.ring.filter((h) => h === null).length;
  const label = svg("text", { x: 0, y: -4, "text-anchor": "middle", class: "ring-count" });
  label.textContent = String(n);
  const sub = svg("text", { x: 0, y: 14, "text-anchor": "middle", class: "ring-sub" });
  sub.textContent = unheld ? `${unheld} without a home` : "partitions";
  ring.replaceChildren(...parts, label, sub);
  $("ring-legend").replaceChildren(
    ...snap.nodes.map((node, i) => {
      const li = el("li");
      li.append(swatch(i), document.createTextNode(`${node.name}: ${node.partitions}`));
      return li;
    }),
  );
}

/** A line over the last `window` samples, newest at the right edge. */
function spark(target, values, window, color) {
  const max = Math.max(1, ...values);
  const w = 300;
  const h = 60;
  const step = w / Math.max(1, window - 1);
  const x0 = w - (values.length - 1) * step;
  const points = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 6)).toFixed(1)}`);
  const line = svg("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": "1.5", "vector-effect": "non-scaling-stroke" });
  const area = svg("polygon", { points: `${x0.toFixed(1)},${h} ${points.join(" ")} ${w},${h}`, fill: color, opacity: "0.12" });
  const top = svg("text", { x: 2, y: 9, class: "chart-max" });
  top.textContent = `max ${max}`;
  target.replaceChildren(area, line, top);
}

function renderChart(snap) {
  const { sockets, joins_per_s: joins, capacity, interval_ms: interval } = snap.history;
  // The last minute at least, up to all the history kept (five minutes).
  const window = Math.min(capacity, Math.max(60, sockets.length));
  const seconds = (window * interval) / 1000;
  $("chart-window").textContent = seconds >= 120 ? `last ${Math.round(seconds / 60)} minutes` : `last ${Math.round(seconds)} s`;
  spark($("chart-sockets"), sockets, window, "#4f7cff");
  spark($("chart-joins"), joins, window, "#2fb47c");
  $("sockets-now").textContent = String(sockets.at(-1) ?? 0);
  $("joins-now").textContent = String(joins.at(-1) ?? 0);
}

function renderTopics(snap) {
  const { total, shown } = snap.topics;
  $("topics-total").textContent = total > shown.length ? `${shown.length} busiest of ${total}` : `${total}`;
  $("no-topics").hidden = total > 0;
  $("topics").replaceChildren(
    ...shown.map((t) => {
      const tr = el("tr", { "data-topic": t.topic });
      tr.append(el("td", { class: "mono" }, t.topic), el("td", {}, String(t.users)), el("td", {}, String(t.tabs)), el("td", {}, String(t.anonymous)));
      return tr;
    }),
  );
}

function renderRevokes(snap) {
  $("no-revokes").hidden = snap.revokes.length > 0;
  $("revokes").replaceChildren(
    ...snap.revokes.map((r) => {
      const tr = el("tr");
      tr.append(el("td", {}, clock(r.at_ms)), el("td", {}, r.user ?? "–"), el("td", { class: "mono" }, r.topic), el("td", { class: "reason" }, r.reason));
      return tr;
    }),
  );
}

function render(snap) {
  $("node").textContent = `node ${snap.node}`;
  $("ready").textContent = snap.ready ? "ready" : "not ready";
  $("updated").textContent = `updated ${clock(snap.at_ms)}`;
  renderNodes(snap);
  renderRing(snap);
  renderChart(snap);
  renderTopics(snap);
  renderRevokes(snap);
  document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots ?? 0) + 1);
}

function setConn(state) {
  $("conn").dataset.state = state;
  $("conn").textContent = { open: "live", connecting: "connecting", closed: "reconnecting" }[state] ?? state;
}

function main() {
  const socket = new Socket("/socket", { onState: setConn });
  const channel = socket.channel(ADMIN_TOPIC, () => {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { api_key: key } : {};
  });
  channel.onJoinReply(({ status, response }) => {
    if (status === "ok") {
      $("key-form").hidden = true;
      $("board").hidden = false;
      return;
    }
    if (response.reason === "unauthorized") {
      const hadKey = sessionStorage.getItem(KEY_STORE) !== null;
      sessionStorage.removeItem(KEY_STORE);
      $("key-error").hidden = !hadKey;
      $("key-error").textContent = hadKey ? "That key was refused." : "";
      $("key-form").hidden = false;
      $("board").hidden = true;
      $("key-input").focus();
    }
  });
  channel.on("dashboard", render);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value);
    $("key-input").value = "";
    channel.join();
  });
  socket.connect();
  channel.join();
}

main();
