// Flow control by pings (server: ping_ms = 300, max_pushes_per_second = 1000, the default
// outbound queue bounds). The node writes a client at most a window beyond the last ping it
// answered; the rest waits in the node.
// 1. A client that reads a big backlog slowly but steadily (one TCP read every 50 ms, for
//    several times two pings) is never closed and gets every push, in order.
// 2. A client that stops reading entirely, while the node has data waiting for it, is closed
//    with 1013 and a reason, counted as a slow client, and its presence leaves.

import assert from "node:assert/strict";
import { connect, joinWithPresence, metric, presenceMap, rawSocket, scenario, scenarioInput, untilPresence, waitFor } from "../client.mjs";

const BLOB = "x".repeat(50_000);
const PUSHES = 30; // 1.5 MB: many windows, far beyond what the node writes ahead

function push(channel, i) {
  return new Promise((resolve) => {
    channel
      .push("blob", { i, blob: BLOB }, 10_000)
      .receive("ok", () => resolve("ok"))
      .receive("error", (r) => resolve(["error", r]))
      .receive("timeout", () => resolve("timeout"));
  });
}

// Read the socket one TCP chunk at a time, `everyMs` apart.
function throttle(raw, everyMs) {
  const socket = raw.ws._socket;
  socket.on("data", () => {
    socket.pause();
    setTimeout(() => socket.resume(), everyMs);
  });
}

async function rawJoin(input, user, topic) {
  const raw = await rawSocket(input.ws, { query: { token: input.tokens[user] } });
  raw.send(["1", "1", topic, "phx_join", {}]);
  const reply = await raw.next();
  assert.deepEqual(reply.slice(0, 4), ["1", "1", topic, "phx_reply"]);
  assert.equal(reply[4].status, "ok", JSON.stringify(reply));
  return raw;
}

scenario(async (step) => {
  const input = scenarioInput();

  step("bob (a phoenix client) and alice (raw, reading one chunk every 50 ms) join room:slow");
  const bob = connect(input.ws, { token: input.tokens.bob });
  const bobCloses = [];
  bob.onClose((e) => bobCloses.push(e.code));
  const b = await joinWithPresence(bob, "room:slow", {});
  assert.equal(b.status, "ok", JSON.stringify(b.response));
  const alice = await rawJoin(input, "alice", "room:slow");
  const got = [];
  alice.ws.on("message", (data) => {
    const text = data.toString();
    if (text.includes('"blob"')) got.push(JSON.parse(text)[4].body.i);
  });
  let aliceClosed = null;
  alice.closed.then((c) => (aliceClosed = c));
  await untilPresence(b.presence, (p) => presenceMap(p).alice?.length === 1, 5000, "bob sees alice");
  throttle(alice, 50);

  step(`bob pushes ${PUSHES} events of 50 KB; alice reads them all, slowly, and stays open`);
  for (let i = 0; i < PUSHES; i++) assert.equal(await push(b.channel, i), "ok");
  const started = Date.now();
  await waitFor(() => got.length === PUSHES || aliceClosed, 60_000).catch(() => {
    throw new Error(`alice got ${got.length} of ${PUSHES} pushes`);
  });
  step(`alice read the last push ${Date.now() - started} ms after bob's last`);
  assert.equal(aliceClosed, null, `alice was closed: ${JSON.stringify(aliceClosed)}`);
  assert.deepEqual(got, Array.from({ length: PUSHES }, (_, i) => i), "every push, in order");
  assert.equal(alice.ws.readyState, 1);
  assert.equal(await metric(input, "roster_slow_clients_closed_total"), 0);
  assert.equal(await metric(input, "roster_ping_timeouts_total"), 0);
  alice.ws.close();
  await untilPresence(b.presence, (p) => !presenceMap(p).alice, 5000, "alice leaves");

  step("carol (raw) joins room:stalled, then stops reading; bob pushes 1 MB there");
  const b2 = await joinWithPresence(bob, "room:stalled", {});
  assert.equal(b2.status, "ok", JSON.stringify(b2.response));
  const carol = await rawJoin(input, "carol", "room:stalled");
  await untilPresence(b2.presence, (p) => presenceMap(p).carol?.length === 1, 5000, "bob sees carol");
  carol.ws._socket.pause();
  for (let i = 0; i < 20; i++) assert.equal(await push(b2.channel, i), "ok");

  step("the node closes carol as a slow client, counted; reading again, she finds why");
  await waitFor(async () => (await metric(input, "roster_slow_clients_closed_total")) === 1, 10_000);
  carol.ws._socket.resume();
  const closed = await Promise.race([
    carol.closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error("carol's socket was not closed")), 10_000)),
  ]);
  assert.deepEqual(closed, { code: 1013, reason: "slow client: no answer to in-line pings" });
  await untilPresence(b2.presence, (p) => !presenceMap(p).carol, 5000, "carol leaves");
  assert.equal(await metric(input, "roster_ping_timeouts_total"), 0);
  assert.deepEqual(bobCloses, [], "bob's socket never closed");
  assert.ok(bob.isConnected());
});
