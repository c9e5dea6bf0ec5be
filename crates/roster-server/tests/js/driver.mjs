// A long-running driver of the real `phoenix` client for the multi-node tests
// (tests/support/driver.rs is its Rust side). One JSON command per line on stdin; one JSON
// line per reply and per event on stdout. Commands run concurrently; each reply names the
// command's `id`. Every line carries `t` (performance.now(), ms) and `wall` (Date.now()).
//
// Commands (`conn` names a socket, chosen by the test):
//   {"id":1,"cmd":"connect","conn":"c1","url":"ws://…/socket","token":"…",
//    "reconnect":true,"params":{},"heartbeat_ms":30000}
//        → {"reply":1,"ok":true} once open (ok:false + error if it closes first)
//   {"id":2,"cmd":"join","conn":"c1","topic":"room:1","tab_id":"t1","meta":{…},
//    "events":true,"timeout_ms":10000}
//        → {"reply":2,"ok":true,"status":"ok","response":{…},"sent":t}   (sent: when phx_join left)
//   {"id":3,"cmd":"join_many","conn":"c1","topics":["t:0",…] | "prefix":"t:","count":1000,
//    "tab_id":"t1","meta":{…},"events":false,"timeout_ms":60000}
//        → {"reply":3,"ok":true,"joined":1000,"errors":{}}   (errors: {reason: count})
//   {"id":4,"cmd":"push","conn":"c1","topic":"room:1","event":"shout","payload":{…}}
//        → {"reply":4,"ok":true,"status":"ok","response":{}}
//   {"id":5,"cmd":"leave","conn":"c1","topic":"room:1"}       → {"reply":5,"ok":true,"status":"ok"}
//   {"id":6,"cmd":"disconnect","conn":"c1"}                   → {"reply":6,"ok":true}
//   {"id":7,"cmd":"presence","conn":"c1","topic":"room:1"}    → {"reply":7,"ok":true,"list":{key:[meta,…]}}
//   {"id":8,"cmd":"ping"}                                     → {"reply":8,"ok":true}
//
// Events (channels joined with "events":false report only slot_revoked, phx_close, errors):
//   {"event":"socket_open"|"socket_close"|"socket_error","conn",…,"code"?}
//   {"event":"presence_join"|"presence_leave","conn","topic","key","metas":[…]}  (applied by Presence)
//   {"event":"presence_sync","conn","topic","keys":{key: metas count}}
//   {"event":"broadcast","conn","topic","name":"shout","payload":{"from","body"}}
//   {"event":"slot_revoked","conn","topic","payload":{"reason"}}
//   {"event":"phx_close"|"channel_error","conn","topic"}

import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { Presence, Socket } from "phoenix";
import WebSocket from "ws";

/** conn → {socket, channels: Map(topic → {channel, presence})} */
const conns = new Map();
const NEVER = 24 * 3600 * 1000;

function emit(line) {
  process.stdout.write(`${JSON.stringify({ ...line, t: performance.now(), wall: Date.now() })}\n`);
}

function connOf(cmd) {
  const c = conns.get(cmd.conn);
  if (!c) throw new Error(`no connection ${JSON.stringify(cmd.conn)}`);
  return c;
}

function channelOf(cmd) {
  const ch = connOf(cmd).channels.get(cmd.topic);
  if (!ch) throw new Error(`connection ${cmd.conn} has not joined ${JSON.stringify(cmd.topic)}`);
  return ch;
}

/** The presence list as {key: [meta, …]}, keys sorted. */
function presenceMap(presence) {
  const out = {};
  const entries = presence.list((key, { metas }) => [key, metas]);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [key, metas] of entries) out[key] = metas;
  return out;
}

function connect(cmd) {
  if (conns.has(cmd.conn)) throw new Error(`connection ${cmd.conn} exists`);
  const reconnect = cmd.reconnect !== false;
  const socket = new Socket(cmd.url, {
    transport: WebSocket,
    params: { ...(cmd.params ?? {}), ...(cmd.token ? { token: cmd.token } : {}) },
    heartbeatIntervalMs: cmd.heartbeat_ms ?? 30000,
    timeout: cmd.timeout_ms ?? 10000,
    ...(reconnect ? {} : { reconnectAfterMs: () => NEVER, rejoinAfterMs: () => NEVER }),
  });
  conns.set(cmd.conn, { socket, channels: new Map() });
  return new Promise((resolve) => {
    let settled = false;
    socket.onOpen(() => {
      emit({ event: "socket_open", conn: cmd.conn });
      if (!settled) {
        settled = true;
        resolve({ ok: true });
      }
    });
    socket.onClose((e) => {
      emit({ event: "socket_close", conn: cmd.conn, code: e?.code ?? null, reason: e?.reason?.toString() ?? null });
      if (!settled) {
        settled = true;
        resolve({ ok: false, error: `closed before open (code ${e?.code})` });
      }
    });
    socket.onError((e) => emit({ event: "socket_error", conn: cmd.conn, error: String(e?.message ?? e?.type ?? e) }));
    socket.connect();
  });
}

/** Create, hook and join one channel; resolves to {status, response}. */
function joinOne(c, conn, topic, payload, events, timeoutMs) {
  if (c.channels.has(topic)) throw new Error(`connection ${conn} already joined ${topic}`);
  const channel = c.socket.channel(topic, payload);
  const presence = new Presence(channel);
  c.channels.set(topic, { channel, presence });
  channel.onMessage = (event, msg) => {
    if (event === "slot_revoked") emit({ event, conn, topic, payload: msg });
    else if (events && !event.startsWith("phx_") && !event.startsWith("chan_reply_") && !event.startsWith("presence_")) {
      emit({ event: "broadcast", conn, topic, name: event, payload: msg });
    }
    return msg;
  };
  channel.onClose(() => emit({ event: "phx_close", conn, topic }));
  channel.onError((reason) => emit({ event: "channel_error", conn, topic, reason: reason ?? null }));
  if (events) {
    presence.onJoin((key, _current, joined) => emit({ event: "presence_join", conn, topic, key, metas: joined.metas }));
    presence.onLeave((key, _current, left) => emit({ event: "presence_leave", conn, topic, key, metas: left.metas }));
    presence.onSync(() => {
      const keys = {};
      for (const [key, n] of presence.list((k, { metas }) => [k, metas.length])) keys[key] = n;
      emit({ event: "presence_sync", conn, topic, keys });
    });
  }
  return new Promise((resolve) => {
    const done = (status) => (response) => resolve({ status, response: response ?? null });
    channel
      .join(timeoutMs)
      .receive("ok", done("ok"))
      .receive("error", done("error"))
      .receive("timeout", done("timeout"));
  });
}

function joinPayload(cmd) {
  const payload = {};
  if (cmd.tab_id !== undefined) payload.tab_id = cmd.tab_id;
  if (cmd.meta !== undefined) payload.meta = cmd.meta;
  return payload;
}

async function join(cmd) {
  const sent = performance.now();
  const r = await joinOne(connOf(cmd), cmd.conn, cmd.topic, joinPayload(cmd), cmd.events !== false, cmd.timeout_ms ?? 10000);
  return { ok: r.status === "ok", ...r, sent };
}

async function joinMany(cmd) {
  const c = connOf(cmd);
  const topics = cmd.topics ?? Array.from({ length: cmd.count }, (_, i) => `${cmd.prefix}${i}`);
  const results = await Promise.all(
    topics.map((topic) => joinOne(c, cmd.conn, topic, joinPayload(cmd), cmd.events === true, cmd.timeout_ms ?? 60000)),
  );
  const errors = {};
  let joined = 0;
  for (const r of results) {
    if (r.status === "ok") joined += 1;
    else {
      const why = r.status === "error" ? (r.response?.reason ?? JSON.stringify(r.response)) : r.status;
      errors[why] = (errors[why] ?? 0) + 1;
    }
  }
  return { ok: joined === topics.length, joined, errors };
}

function push(cmd) {
  const { channel } = channelOf(cmd);
  return new Promise((resolve) => {
    const done = (status) => (response) => resolve({ ok: status === "ok", status, response: response ?? null });
    channel
      .push(cmd.event, cmd.payload ?? {}, cmd.timeout_ms ?? 10000)
      .receive("ok", done("ok"))
      .receive("error", done("error"))
      .receive("timeout", done("timeout"));
  });
}

function leave(cmd) {
  const c = connOf(cmd);
  const { channel } = channelOf(cmd);
  c.channels.delete(cmd.topic);
  return new Promise((resolve) => {
    const done = (status) => () => resolve({ ok: status === "ok", status });
    channel
      .leave(cmd.timeout_ms ?? 10000)
      .receive("ok", done("ok"))
      .receive("timeout", done("timeout"));
  });
}

function disconnect(cmd) {
  const c = connOf(cmd);
  conns.delete(cmd.conn);
  return new Promise((resolve) => c.socket.disconnect(() => resolve({ ok: true }), cmd.code ?? 1000));
}

const commands = {
  connect,
  join,
  join_many: joinMany,
  push,
  leave,
  disconnect,
  presence: (cmd) => ({ ok: true, list: presenceMap(channelOf(cmd).presence) }),
  ping: () => ({ ok: true }),
};

async function run(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ event: "bad_command", line, error: String(e) });
    return;
  }
  try {
    const handler = commands[cmd.cmd];
    if (!handler) throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
    emit({ reply: cmd.id, ...(await handler(cmd)) });
  } catch (e) {
    emit({ reply: cmd.id, ok: false, error: String(e?.message ?? e) });
  }
}

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", (line) => {
  if (line.trim()) run(line);
});
// The test dropped its end: exit at once, whatever sockets are still open.
input.on("close", () => process.exit(0));
emit({ event: "driver_ready", pid: process.pid });
