// The real `phoenix` npm client, set up for Node, and small promise helpers for tests.
// Node 20 has no global WebSocket, so the socket uses the one from `ws`.

import { Presence, Socket } from "phoenix";
import WebSocket from "ws";

/**
 * A connected phoenix Socket: `connect("ws://127.0.0.1:4000/socket", {token})`.
 * `params` go in the query string (`token` authenticates); `opts` are passed to the
 * Socket (e.g. `{authToken}` for the subprotocol instead, `heartbeatIntervalMs`,
 * `reconnectAfterMs`, `logger`).
 */
export function connect(url, params = {}, opts = {}) {
  const socket = new Socket(url, { transport: WebSocket, params, ...opts });
  socket.connect();
  return socket;
}

/**
 * Join `topic` and wait for the reply: resolves to
 * `{status: "ok"|"error"|"timeout", ok, response, channel}`.
 * A refused or timed-out channel is left (unless `leaveOnError: false`), so the client
 * does not keep rejoining behind the test's back.
 */
export function joinChannel(socket, topic, payload = {}, { timeoutMs = 5000, leaveOnError = true } = {}) {
  const channel = socket.channel(topic, payload);
  return new Promise((resolve) => {
    const done = (status) => (response) => {
      if (status !== "ok" && leaveOnError) channel.leave();
      resolve({ status, ok: status === "ok", response, channel });
    };
    channel
      .join(timeoutMs)
      .receive("ok", done("ok"))
      .receive("error", done("error"))
      .receive("timeout", done("timeout"));
  });
}

/**
 * Poll `fn` (sync or async) every 10 ms until it returns a truthy value, and resolve to
 * that value; reject after `timeoutMs` with the last error `fn` threw, if any.
 */
export async function waitFor(fn, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      const why = lastError ? `: ${lastError.message ?? lastError}` : "";
      throw new Error(`waitFor: condition not met within ${timeoutMs} ms${why}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The payload of the next `event` on `channel`; rejects after `timeoutMs`. */
export function nextEvent(channel, event, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      channel.off(event, ref);
      reject(new Error(`nextEvent: no ${event} on ${channel.topic} within ${timeoutMs} ms`));
    }, timeoutMs);
    const ref = channel.on(event, (payload) => {
      clearTimeout(timer);
      channel.off(event, ref);
      resolve(payload);
    });
  });
}

/** Close the socket cleanly (no reconnect) and resolve once it is closed. */
export function disconnect(socket) {
  return new Promise((resolve) => socket.disconnect(() => resolve()));
}

// ---------------------------------------------------------------------------------------------
// For the scenario scripts (scenarios/*.mjs), which the Rust tests run against a real server.

/**
 * The scenario's input: the JSON the Rust test passes as the only argument,
 * `{ws, http, apiKey, tokens: {name: token}}` (see tests/support/server.rs).
 */
export function scenarioInput() {
  const arg = process.argv[2];
  if (!arg) throw new Error("usage: node scenarios/NAME.mjs '{\"ws\":..., \"http\":..., \"apiKey\":..., \"tokens\":{...}}'");
  return JSON.parse(arg);
}

/**
 * Run a scenario: print each step to stderr (so a failure shows how far it got), `ok` on
 * stdout at the end, exit 0; on any error print it and exit 1. Exits explicitly, so timers of
 * sockets left open do not keep the process alive.
 */
export function scenario(main) {
  main(step).then(
    () => {
      console.log("ok");
      process.exit(0);
    },
    (e) => {
      console.error(`FAILED: ${e?.stack ?? e}`);
      process.exit(1);
    },
  );
}

function step(what) {
  console.error(`[${new Date().toISOString().slice(11, 23)}] ${what}`);
}

/**
 * A channel with a phoenix `Presence` attached before its join (the `presence_state` comes
 * right with the join reply), joined: `{status, ok, response, channel, presence}`.
 */
export async function joinWithPresence(socket, topic, payload = {}, opts = {}) {
  const channel = socket.channel(topic, payload);
  const presence = new Presence(channel);
  const reply = await new Promise((resolve) => {
    const done = (status) => (response) => {
      if (status !== "ok" && opts.leaveOnError !== false) channel.leave();
      resolve({ status, ok: status === "ok", response });
    };
    channel
      .join(opts.timeoutMs ?? 5000)
      .receive("ok", done("ok"))
      .receive("error", done("error"))
      .receive("timeout", done("timeout"));
  });
  return { ...reply, channel, presence };
}

/**
 * A presence list as `{key: [meta, ...]}`, sorted by key, for `deepEqual`-style checks.
 */
export function presenceMap(presence) {
  const out = {};
  for (const [key, metas] of presence.list((k, { metas }) => [k, metas]).sort(([a], [b]) => (a < b ? -1 : 1))) {
    out[key] = metas;
  }
  return out;
}

/**
 * Resolve once `predicate(presence)` holds, checked now and after every sync of `presence`;
 * reject after `timeoutMs` with `describe()` of the last state.
 */
export function untilPresence(presence, predicate, timeoutMs = 5000, what = "presence condition") {
  return new Promise((resolve, reject) => {
    const previous = presence.caller.onSync;
    const finish = (fn) => {
      clearTimeout(timer);
      presence.onSync(previous);
      fn();
    };
    const check = () => {
      try {
        if (predicate(presence)) finish(resolve);
      } catch (e) {
        finish(() => reject(e));
      }
    };
    const timer = setTimeout(
      () =>
        finish(() =>
          reject(new Error(`${what}: not met within ${timeoutMs} ms; list: ${JSON.stringify(presenceMap(presence))}`)),
        ),
      timeoutMs,
    );
    presence.onSync(() => {
      previous();
      check();
    });
    check();
  });
}

/**
 * A slot token `"<epoch>.<generation>"` as a pair of BigInts; throws unless it has that form.
 */
export function parseSlotToken(token) {
  const m = /^(\d+)\.(\d+)$/.exec(token ?? "");
  if (!m) throw new Error(`slot token ${JSON.stringify(token)} is not "<digits>.<digits>"`);
  return [BigInt(m[1]), BigInt(m[2])];
}

/** Whether slot token `a` is strictly newer than `b` (compared as pairs of integers). */
export function slotTokenNewer(a, b) {
  const [ea, ga] = parseSlotToken(a);
  const [eb, gb] = parseSlotToken(b);
  return ea > eb || (ea === eb && ga > gb);
}

/**
 * A raw `ws` WebSocket speaking v2 frames by hand, for what the phoenix client never sends.
 * `url` is the scenario's `ws` (`.../socket`); `query` goes in the query string, `wsOptions`
 * to `ws` (e.g. `{origin}`), `protocols` as the subprotocols.
 *
 * Resolves once open to `{ws, send(array|string), next(timeoutMs), closed}`: `next` is the
 * next received frame, parsed; `closed` resolves to `{code, reason}` when the socket closes.
 * Rejects if the upgrade is refused, with `err.statusCode` set to the HTTP status.
 */
export function rawSocket(url, { query = {}, protocols, wsOptions = {} } = {}) {
  const qs = new URLSearchParams({ vsn: "2.0.0", ...query }).toString();
  const ws = new WebSocket(`${url}/websocket?${qs}`, protocols, wsOptions);
  const received = [];
  const waiters = [];
  let closedResolve;
  const closed = new Promise((r) => (closedResolve = r));
  ws.on("message", (data) => {
    const frame = JSON.parse(data.toString());
    const waiter = waiters.shift();
    if (waiter) waiter(frame);
    else received.push(frame);
  });
  ws.on("close", (code, reason) => closedResolve({ code, reason: reason.toString() }));
  // After the open, a transport error always ends in "close", which is what tests await.
  ws.on("error", () => {});
  const api = {
    ws,
    closed,
    send(frame) {
      ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    },
    next(timeoutMs = 5000) {
      if (received.length > 0) return Promise.resolve(received.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`raw socket: no frame within ${timeoutMs} ms`));
        }, timeoutMs);
        const waiter = (frame) => {
          clearTimeout(timer);
          resolve(frame);
        };
        waiters.push(waiter);
      });
    },
  };
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(api));
    ws.once("unexpected-response", (_req, res) => {
      const err = new Error(`upgrade refused with HTTP ${res.statusCode}`);
      err.statusCode = res.statusCode;
      ws.terminate();
      reject(err);
    });
    ws.once("error", reject);
  });
}

/**
 * An HTTP request to the node (`GET` unless `method`; `body` is sent as JSON), with the API key
 * as a bearer token unless `auth: false`. Resolves to `{status, text, json}` (`json` undefined
 * when the body is not JSON).
 */
export async function api(input, path, { auth = true, method = "GET", body } = {}) {
  const headers = {};
  if (auth) headers.authorization = `Bearer ${input.apiKey}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${input.http}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

/**
 * The value of one sample in `/metrics` (Prometheus text, read with the API key), e.g.
 * `metric(input, 'roster_bad_frames_total{reason="invalid_json"}')`; 0 when absent.
 */
export async function metric(input, sample) {
  const { status, text } = await api(input, "/metrics");
  if (status !== 200) throw new Error(`GET /metrics answered ${status}: ${text}`);
  for (const line of text.split("\n")) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return 0;
}
