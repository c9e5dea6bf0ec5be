// A client that stops reading (server: outbound_queue = 16, max_pushes_per_second = 1000).
// A raw socket joins a busy topic and pauses its TCP socket; a flooder pushes 60 KB events
// until the server gives the stalled client up: it leaves the presence list and
// `roster_slow_clients_closed_total` counts it, while the observer, reading normally, got every
// single event and stays joined. After resuming, the stalled socket finds itself closed (1013,
// if the close frame got through behind the backlog).

import assert from "node:assert/strict";
import { connect, joinWithPresence, metric, presenceMap, rawSocket, scenario, scenarioInput, untilPresence, waitFor } from "../client.mjs";

// Events in flight per batch: below outbound_queue, and the next batch waits until the
// observer has read this one, so a client that reads is never too slow.
const BATCH = 8;
const MAX_PUSHES = 2000; // 120 MB: far beyond any kernel socket buffer

function push(channel, event, payload) {
  return new Promise((resolve) => {
    channel
      .push(event, payload, 10_000)
      .receive("ok", (r) => resolve(["ok", r]))
      .receive("error", (r) => resolve(["error", r]))
      .receive("timeout", () => resolve(["timeout"]));
  });
}

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "room:busy";

  step("an observer and a flooder join");
  const observer = connect(input.ws, { token: input.tokens.observer });
  const o = await joinWithPresence(observer, topic, {});
  assert.equal(o.status, "ok", JSON.stringify(o.response));
  let observed = 0;
  o.channel.on("blob", () => observed++);
  const socketCloses = [];
  observer.onClose((e) => socketCloses.push(["observer", e.code]));
  const flooder = connect(input.ws, { token: input.tokens.flooder });
  flooder.onClose((e) => socketCloses.push(["flooder", e.code]));
  const f = await joinWithPresence(flooder, topic, {});
  assert.equal(f.status, "ok", JSON.stringify(f.response));

  step("the slow client joins, then stops reading");
  const slow = await rawSocket(input.ws, { query: { token: input.tokens.slow } });
  slow.send(["1", "1", topic, "phx_join", {}]);
  const reply = await slow.next();
  assert.deepEqual(reply.slice(0, 4), ["1", "1", topic, "phx_reply"]);
  assert.equal(reply[4].status, "ok", JSON.stringify(reply));
  slow.ws._socket.pause();
  await untilPresence(o.presence, (p) => presenceMap(p).slow?.length === 1, 5000, "the observer sees the slow client");

  step("flood 60 KB events until the slow client leaves the list");
  const blob = "x".repeat(60_000);
  let pushed = 0;
  while (presenceMap(o.presence).slow) {
    assert.ok(pushed < MAX_PUSHES, `the slow client was still listed after ${pushed} pushes`);
    const replies = await Promise.all(Array.from({ length: BATCH }, (_, i) => push(f.channel, "blob", { i: pushed + i, blob })));
    for (const r of replies) assert.deepEqual(r, ["ok", {}]);
    pushed += BATCH;
    await waitFor(() => observed === pushed, 10_000).catch(() => {
      throw new Error(`the observer got ${observed} of ${pushed} events`);
    });
  }
  step(`the slow client left after ${pushed} pushes`);

  step("it is counted; the observer got every event and is still joined");
  await waitFor(async () => (await metric(input, "roster_slow_clients_closed_total")) > 0, 5000);
  assert.deepEqual(await push(f.channel, "blob", { i: pushed, blob: "last" }), ["ok", {}]);
  pushed += 1;
  await waitFor(() => observed === pushed, 10_000).catch(() => {
    throw new Error(`the observer got ${observed} of ${pushed} events`);
  });
  assert.deepEqual(Object.keys(presenceMap(o.presence)), ["flooder", "observer"]);
  assert.equal(o.channel.state, "joined");
  assert.deepEqual(socketCloses, [], "the observer's and the flooder's sockets never closed");
  assert.ok(observer.isConnected() && flooder.isConnected());

  step("the stalled socket, reading again, finds itself closed");
  slow.ws._socket.resume();
  const closed = await Promise.race([
    slow.closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error("the stalled socket was not closed")), 10_000)),
  ]);
  step(`closed with ${JSON.stringify(closed)}`);
  // 1013 when the close frame got through behind the backlog; 1006 (no close frame) when not.
  assert.ok([1013, 1006].includes(closed.code), JSON.stringify(closed));
});
