// The demo room page: who is here, one tab per user, read-only anonymous viewers.
//
// URL: /?topic=room:lobby&user=alice[&role=admin][&name=Ada]; without `user`, anonymous.
// The token comes from /demo/token, which exists only in demo mode (a real application gets
// it from its own backend after its login).

import { Socket, Presence } from "/assets/roster.js";

const params = new URLSearchParams(location.search);
const topic = params.get("topic") || "room:lobby";
const user = params.get("user") || null;
const role = params.get("role") || "user";
const name = params.get("name") || user;

const $ = (id) => document.getElementById(id);

// ---- tab_id: one per browser tab -------------------------------------------------------
// sessionStorage survives a refresh (so the refreshed tab resumes its slot) but is copied
// when a tab is duplicated; the copy would then resume, closing the original. So a new page
// asks the other tabs over a BroadcastChannel whether its tab_id is taken, and mints a fresh
// one if it is.

const TAB_KEY = "roster_tab_id";
const tabs = "BroadcastChannel" in globalThis ? new BroadcastChannel("roster-tabs") : null;
let tabId = null;

function freshTabId() {
  const id = crypto.randomUUID();
  sessionStorage.setItem(TAB_KEY, id);
  return id;
}

async function claimTabId() {
  const stored = sessionStorage.getItem(TAB_KEY);
  if (!stored) return freshTabId();
  if (!tabs) return stored;
  const taken = await new Promise((resolve) => {
    const onMessage = (event) => {
      if (event.data?.type === "taken" && event.data.tabId === stored) finish(true);
    };
    const finish = (result) => {
      tabs.removeEventListener("message", onMessage);
      clearTimeout(timer);
      resolve(result);
    };
    tabs.addEventListener("message", onMessage);
    // Other tabs answer at once; a refreshed tab has no other tab with its id to answer.
    const timer = setTimeout(() => finish(false), 150);
    tabs.postMessage({ type: "claim", tabId: stored });
  });
  return taken ? freshTabId() : stored;
}

tabs?.addEventListener("message", (event) => {
  if (event.data?.type === "claim" && event.data.tabId === tabId) {
    tabs.postMessage({ type: "taken", tabId });
  }
});

// ---- the page ------------------------------------------------------------------------

function setConn(state) {
  $("conn").dataset.state = state;
  $("conn").textContent = { open: "connected", connecting: "connecting", closed: "reconnecting" }[state] ?? state;
}

function notice(text, action) {
  $("notice").hidden = !text;
  $("notice-text").textContent = text ?? "";
  const button = $("notice-action");
  button.hidden = !action;
  if (action) {
    button.textContent = action.label;
    button.onclick = action.run;
  }
}

function setWritable(writable, hint) {
  $("send-input").disabled = !writable;
  $("send-button").disabled = !writable;
  $("send-hint").textContent = hint ?? "";
}

function addMessage(from, text, mine) {
  const li = document.createElement("li");
  if (mine) li.className = "mine";
  const who = document.createElement("b");
  who.textContent = from;
  li.append(who, document.createTextNode(" " + text));
  $("messages").append(li);
  li.scrollIntoView({ block: "nearest" });
}

function render(presence, away) {
  const rows = [];
  let anonymous = 0;
  for (const [key, { metas }] of Object.entries(presence.state)) {
    if (key === "anonymous") {
      // anonymous = "count": one meta holding the total; "list": one meta per viewer.
      anonymous = metas.length === 1 && typeof metas[0].count === "number" ? metas[0].count : metas.length;
      continue;
    }
    const nodes = [...new Set(metas.map((m) => m.node))].join(", ");
    rows.push({ key, name: metas[0]?.name ?? "", tabs: metas.length, nodes });
  }
  rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const body = $("members");
  body.replaceChildren(
    ...rows.map((r) => {
      const tr = document.createElement("tr");
      tr.className = "member" + (r.key === user ? " you" : "");
      tr.dataset.user = r.key;
      for (const [cls, text] of [["user", r.key], ["name", r.name], ["tabs", String(r.tabs)], ["node", r.nodes]]) {
        const td = document.createElement("td");
        td.className = cls;
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    }),
  );
  $("nobody").hidden = rows.length > 0;
  $("nobody").textContent = away ?? "Nobody is signed in here yet.";
  $("anonymous").textContent = `Anonymous: ${anonymous}`;
  $("anonymous").hidden = Boolean(away);
}

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || body.reason || `HTTP ${response.status}`);
  return body;
}

async function main() {
  $("topic").textContent = topic;
  $("me").textContent = user ? `${user}${role !== "user" ? ` (${role})` : ""}` : "anonymous";
  $("open-again").href = location.href;
  $("signin-topic").value = topic;
  document.title = `${topic} · Roster demo`;

  fetchJson(`/demo/policy?topic=${encodeURIComponent(topic)}`)
    .then((p) => {
      const exempt = p.exempt_roles.length ? `, ${p.exempt_roles.join(", ")} exempt` : "";
      const reserve = p.reserve_ms ? `, reserve ${p.reserve_ms} ms` : "";
      $("policy").textContent = `${p.topic}: ${p.on_conflict}, ${p.max_slots} slot${p.max_slots > 1 ? "s" : ""}${reserve}${exempt}`;
    })
    .catch(() => ($("policy").textContent = "unknown"));

  let token = null;
  if (user) {
    tabId = await claimTabId();
    $("tab-id").textContent = tabId;
    try {
      token = (await fetchJson(`/demo/token?user=${encodeURIComponent(user)}&role=${encodeURIComponent(role)}`)).token;
    } catch (e) {
      notice(`Cannot sign in as ${user}: ${e.message}`);
      return;
    }
    setWritable(false, "Joining…");
  } else {
    $("tab-id").textContent = "(anonymous: no slot)";
    $("slot-token").textContent = "(none)";
    setWritable(false, "Anonymous viewers are read-only: sign in to write.");
  }
  document.body.dataset.tabId = tabId ?? "";

  const socket = new Socket("/socket", { params: token ? { token } : {}, onState: setConn });
  const channel = socket.channel(topic, () => (user ? { tab_id: tabId, meta: { name } } : {}));
  const presence = new Presence(channel);
  presence.onSync(() => render(presence));
  let revoked = false;

  channel.onJoinReply(({ status, response }) => {
    document.body.dataset.joined = status;
    if (status === "ok") {
      revoked = false;
      notice(null);
      $("slot-token").textContent = response.slot?.token ?? (user ? "(exempt: no slot)" : "(none)");
      if (user) setWritable(true);
      return;
    }
    setWritable(false, "");
    $("slot-token").textContent = `(refused: ${response.reason})`;
    render({ state: {} }, "This tab is not in the room.");
    if (response.reason === "already_joined") {
      notice("This room is already open in another tab: close it there, then try again here.", {
        label: "Try again",
        run: () => channel.join(),
      });
    } else {
      notice(`The join was refused: ${response.reason}.`, { label: "Try again", run: () => channel.join() });
    }
  });

  channel.on("slot_revoked", ({ reason }) => {
    revoked = true;
    setWritable(false, "");
    $("slot-token").textContent = "(revoked)";
    const text =
      reason === "logged_in_elsewhere"
        ? "Logged in elsewhere: you opened this room in another tab, which took your place."
        : `Your place here was revoked (${reason}).`;
    notice(text, { label: "Use it here", run: () => channel.join() });
    render({ state: {} }, "This tab is not in the room any more.");
  });

  channel.on("phx_close", () => {
    setWritable(false, "");
    // Without slot_revoked: this tab's session was resumed by another socket of the same tab.
    if (!revoked) notice("This tab's session continues in another tab.", { label: "Rejoin", run: () => channel.join() });
    render({ state: {} }, "This tab is not in the room any more.");
  });

  channel.on("shout", ({ from, body }) => addMessage(from, String(body?.text ?? ""), false));

  $("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("send-input").value.trim();
    if (!text) return;
    channel.push("shout", { text }, ({ status, response }) => {
      if (status === "ok") addMessage(user, text, true);
      else $("send-hint").textContent = `Not sent: ${response.reason}`;
    });
    $("send-input").value = "";
  });

  socket.connect();
  channel.join();
}

main();
