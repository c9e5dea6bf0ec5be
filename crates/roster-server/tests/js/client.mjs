// The real `phoenix` npm client, set up for Node, and small promise helpers for tests.
// Node 20 has no global WebSocket, so the socket uses the one from `ws`.

import { Socket } from "phoenix";
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
