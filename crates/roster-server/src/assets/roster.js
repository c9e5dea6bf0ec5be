// roster.js: the socket client of Roster's built-in pages, and a readable example of the
// protocol (docs/protocol.md). Written for Roster; it speaks what the `phoenix` npm client
// speaks, so an application can use either.
//
// - Socket: one WebSocket at /socket/websocket?vsn=2.0.0, frames [join_ref, ref, topic,
//   event, payload] as JSON text; a heartbeat on topic "phoenix" every 30 s (an unanswered
//   one means the connection is dead); reconnects with a back-off and rejoins its channels.
// - Channel: one topic on the socket. A join's reply is ok or error; "phx_close" ends the
//   channel for good (the server revoked it, or it left); "phx_error" makes it rejoin.
// - syncState / syncDiff / Presence: a topic's presence list, with the same semantics as
//   phoenix.js's Presence (tests/js/presence_semantics.mjs checks them against it):
//   presence_state replaces the list, presence_diff adds joined metas and removes left ones
//   by phx_ref, and diffs that arrive before the state of the current join wait for it.
//
// Works in browsers and in Node 22+ (pass {transport: WebSocket} from `ws` in older Node).

const VSN = "2.0.0";
const PHOENIX = "phoenix";

/** Reconnect after 1, 2, 5, then every 10 seconds. */
const defaultBackoff = (tries) => [1000, 2000, 5000][tries - 1] ?? 10000;

export class Socket {
  /**
   * @param {string} endPoint  "/socket", "ws://host:4000/socket" (…/websocket is appended)
   * @param {{params?: object, heartbeatMs?: number, backoff?: (tries: number) => number,
   *          transport?: typeof WebSocket, onState?: (state: string) => void}} opts
   */
  constructor(endPoint, opts = {}) {
    this.endPoint = endPoint;
    this.params = opts.params ?? {};
    this.heartbeatMs = opts.heartbeatMs ?? 30000;
    this.backoff = opts.backoff ?? defaultBackoff;
    this.transport = opts.transport ?? globalThis.WebSocket;
    this.onState = opts.onState ?? (() => {});
    this.channels = [];
    this.replies = new Map(); // ref -> callback(payload)
    this.ref = 0;
    this.ws = null;
    this.tries = 0;
    this.wanted = false;
    this.timers = { heartbeat: null, reconnect: null };
    this.pendingHeartbeat = null;
  }

  url() {
    let base = this.endPoint;
    if (base.startsWith("/")) {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      base = `${scheme}//${location.host}${base}`;
    }
    const query = new URLSearchParams({ ...this.params, vsn: VSN });
    return `${base.replace(/\/$/, "")}/websocket?${query}`;
  }

  makeRef() {
    this.ref += 1;
    return String(this.ref);
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  connect() {
    this.wanted = true;
    if (this.ws) return;
    this.onState("connecting");
    const ws = new this.transport(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.tries = 0;
      this.onState("open");
      this.startHeartbeat();
      // After a reconnect, every channel that should be joined joins again.
      for (const ch of this.channels) if (ch.wantsJoin()) ch.rejoin();
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = () => this.closed(ws);
    ws.onerror = () => {}; // onclose follows
  }

  disconnect() {
    this.wanted = false;
    clearTimeout(this.timers.reconnect);
    if (this.ws) this.ws.close(1000);
  }

  closed(ws) {
    if (this.ws !== ws) return;
    this.ws = null;
    clearInterval(this.timers.heartbeat);
    this.pendingHeartbeat = null;
    this.replies.clear();
    for (const ch of this.channels) ch.socketClosed();
    this.onState("closed");
    if (this.wanted) {
      this.tries += 1;
      this.timers.reconnect = setTimeout(() => this.connect(), this.backoff(this.tries));
    }
  }

  startHeartbeat() {
    clearInterval(this.timers.heartbeat);
    this.timers.heartbeat = setInterval(() => {
      if (this.pendingHeartbeat) {
        // The last one was never answered: the connection is dead, however it looks.
        this.pendingHeartbeat = null;
        this.ws?.close(1000, "heartbeat timeout");
        return;
      }
      const ref = this.makeRef();
      this.pendingHeartbeat = ref;
      this.replies.set(ref, () => (this.pendingHeartbeat = null));
      this.send([null, ref, PHOENIX, "heartbeat", {}]);
    }, this.heartbeatMs);
  }

  send(frame) {
    if (this.isOpen()) this.ws.send(JSON.stringify(frame));
  }

  /** Send and call `onReply(payload)` with the phx_reply's payload ({status, response}). */
  request(joinRef, topic, event, payload, onReply) {
    const ref = this.makeRef();
    if (onReply) this.replies.set(ref, onReply);
    this.send([joinRef, ref, topic, event, payload]);
    return ref;
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!Array.isArray(frame) || frame.length !== 5) return;
    const [joinRef, ref, topic, event, payload] = frame;
    if (event === "phx_reply" && ref !== null && this.replies.has(ref)) {
      const onReply = this.replies.get(ref);
      this.replies.delete(ref);
      onReply(payload);
      return;
    }
    for (const ch of this.channels) {
      if (ch.topic === topic) ch.receive(joinRef, event, payload);
    }
  }

  /** A channel for `topic`; `params` (or a function returning them) is its join payload. */
  channel(topic, params = {}) {
    const ch = new Channel(this, topic, params);
    this.channels.push(ch);
    return ch;
  }
}

export class Channel {
  constructor(socket, topic, params) {
    this.socket = socket;
    this.topic = topic;
    this.params = typeof params === "function" ? params : () => params;
    // closed | joining | joined | errored | refused | leaving
    this.state = "closed";
    this.joinRef = null;
    this.handlers = new Map(); // event -> [callback]
    this.joinListeners = [];
    this.rejoinTimer = null;
    this.rejoinTries = 0;
  }

  /** Call `callback(payload)` on every `event` pushed to this channel's current join. */
  on(event, callback) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(callback);
  }

  emit(event, payload) {
    for (const cb of this.handlers.get(event) ?? []) cb(payload);
  }

  /** Call `callback({status, response})` on every join reply (the first and each rejoin). */
  onJoinReply(callback) {
    this.joinListeners.push(callback);
  }

  wantsJoin() {
    return this.state === "joining" || this.state === "joined" || this.state === "errored";
  }

  join() {
    this.state = "joining";
    this.rejoin();
  }

  rejoin() {
    clearTimeout(this.rejoinTimer);
    this.state = "joining";
    if (!this.socket.isOpen()) return; // the socket rejoins when it opens
    const ref = this.socket.makeRef();
    this.joinRef = ref;
    this.socket.replies.set(ref, (reply) => {
      if (this.joinRef !== ref) return; // an answer to an earlier join
      if (reply.status === "ok") {
        this.state = "joined";
        this.rejoinTries = 0;
      } else {
        // A refused join stays refused: the page decides (e.g. "open in another tab").
        this.state = "refused";
      }
      for (const cb of this.joinListeners) cb(reply);
    });
    this.socket.send([ref, ref, this.topic, "phx_join", this.params()]);
  }

  /** Push an event; `onReply({status, response})` gets the answer. */
  push(event, payload, onReply) {
    if (this.state !== "joined") {
      onReply?.({ status: "error", response: { reason: "not_joined" } });
      return;
    }
    this.socket.request(this.joinRef, this.topic, event, payload, onReply);
  }

  leave() {
    clearTimeout(this.rejoinTimer);
    if (this.state === "joined" || this.state === "joining") {
      this.socket.request(this.joinRef, this.topic, "phx_leave", {});
    }
    this.state = "closed";
    this.joinRef = null;
  }

  socketClosed() {
    if (this.state === "joined" || this.state === "joining") this.state = "errored";
  }

  receive(joinRef, event, payload) {
    // Anything for an earlier join of this topic is stale.
    if (joinRef !== null && joinRef !== this.joinRef) return;
    if (event === "phx_close") {
      this.state = "closed";
      this.joinRef = null;
      this.emit("phx_close", payload);
      return;
    }
    if (event === "phx_error") {
      this.state = "errored";
      this.emit("phx_error", payload);
      this.rejoinTries += 1;
      this.rejoinTimer = setTimeout(() => this.rejoin(), this.socket.backoff(this.rejoinTries));
      return;
    }
    this.emit(event, payload);
  }
}

// ---- Presence --------------------------------------------------------------------------
// A presence list is {key: {metas: [meta, ...]}}; every meta has a unique phx_ref. Lists
// are objects without a prototype, so a user id such as "constructor" is just a key.

const clone = (value) => JSON.parse(JSON.stringify(value));
const has = (list, key) => Object.prototype.hasOwnProperty.call(list, key);
const refsOf = (presence) => new Set(presence.metas.map((m) => m.phx_ref));

/** A copy of `list` as a prototype-less object, keys in the same order. */
function copyList(list) {
  const copy = Object.create(null);
  for (const [key, presence] of Object.entries(clone(list))) copy[key] = presence;
  return copy;
}

/**
 * Apply a whole presence_state: the keys and metas it lacks leave, its new ones join (as one
 * diff, so onJoin/onLeave see exactly what changed). Returns the new list.
 */
export function syncState(current, incoming, onJoin = () => {}, onLeave = () => {}) {
  const state = copyList(current);
  const joins = {};
  const leaves = {};
  for (const key of Object.keys(state)) {
    if (!has(incoming, key)) leaves[key] = state[key];
  }
  for (const [key, next] of Object.entries(incoming)) {
    if (!has(state, key)) {
      joins[key] = next;
      continue;
    }
    const now = state[key];
    const nowRefs = refsOf(now);
    const nextRefs = refsOf(next);
    const joined = next.metas.filter((m) => !nowRefs.has(m.phx_ref));
    const left = now.metas.filter((m) => !nextRefs.has(m.phx_ref));
    if (joined.length > 0) joins[key] = { ...next, metas: joined };
    if (left.length > 0) leaves[key] = { ...clone(now), metas: left };
  }
  return syncDiff(state, { joins, leaves }, onJoin, onLeave);
}

/**
 * Apply a presence_diff {joins, leaves}: a joined key's new metas come after the metas it
 * already had; left metas are removed by phx_ref, and a key with none left is gone. Returns
 * the list (updated in place).
 */
export function syncDiff(state, diff, onJoin = () => {}, onLeave = () => {}) {
  const { joins, leaves } = clone(diff);
  for (const [key, joined] of Object.entries(joins)) {
    const before = has(state, key) ? state[key] : undefined;
    const after = clone(joined);
    if (before) {
      const newRefs = refsOf(after);
      after.metas.unshift(...before.metas.filter((m) => !newRefs.has(m.phx_ref)));
    }
    state[key] = after;
    onJoin(key, before, joined);
  }
  for (const [key, left] of Object.entries(leaves)) {
    if (!has(state, key)) continue;
    const present = state[key];
    const gone = refsOf(left);
    present.metas = present.metas.filter((m) => !gone.has(m.phx_ref));
    onLeave(key, present, left);
    if (present.metas.length === 0) delete state[key];
  }
  return state;
}

/** `chooser(key, presence)` for every key of a list, in the list's order. */
export function listOf(state, chooser = (key, presence) => presence) {
  return Object.getOwnPropertyNames(state).map((key) => chooser(key, state[key]));
}

/** A channel's presence list, kept current from its presence_state and presence_diff. */
export class Presence {
  constructor(channel) {
    this.channel = channel;
    this.state = Object.create(null);
    this.pending = []; // diffs that arrived before the current join's state
    this.syncedJoinRef = null;
    this.callbacks = { join: () => {}, leave: () => {}, sync: () => {} };
    channel.on("presence_state", (incoming) => {
      this.syncedJoinRef = channel.joinRef;
      this.state = syncState(this.state, incoming, this.callbacks.join, this.callbacks.leave);
      for (const diff of this.pending) {
        this.state = syncDiff(this.state, diff, this.callbacks.join, this.callbacks.leave);
      }
      this.pending = [];
      this.callbacks.sync();
    });
    channel.on("presence_diff", (diff) => {
      if (this.syncedJoinRef === null || this.syncedJoinRef !== channel.joinRef) {
        this.pending.push(diff);
        return;
      }
      this.state = syncDiff(this.state, diff, this.callbacks.join, this.callbacks.leave);
      this.callbacks.sync();
    });
  }

  onJoin(callback) {
    this.callbacks.join = callback;
  }

  onLeave(callback) {
    this.callbacks.leave = callback;
  }

  onSync(callback) {
    this.callbacks.sync = callback;
  }

  list(chooser) {
    return listOf(this.state, chooser);
  }
}
