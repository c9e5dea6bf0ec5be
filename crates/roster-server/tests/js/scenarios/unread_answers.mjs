// A client that keeps sending while it reads nothing (server: outbound_queue_bytes = 65536,
// ping_ms = 60000, so no ping verdict comes first). Once its flow window is full, the answers
// to what it sends wait in the node; past outbound_queue_bytes the socket is closed 1013 as a
// slow client, counted, and its presence leaves.

import assert from "node:assert/strict";
import { connect, joinWithPresence, metric, presenceMap, rawSocket, scenario, scenarioInput, untilPresence, waitFor } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();

  step("bob (a phoenix client) and carol (raw) join room:1");
  const bob = connect(input.ws, { token: input.tokens.bob });
  const b = await joinWithPresence(bob, "room:1", {});
  assert.equal(b.status, "ok", JSON.stringify(b.response));
  const carol = await rawSocket(input.ws, { query: { token: input.tokens.carol } });
  carol.send(["1", "1", "room:1", "phx_join", {}]);
  assert.equal((await carol.next())[4].status, "ok");
  await untilPresence(b.presence, (p) => presenceMap(p).carol?.length === 1, 5000, "bob sees carol");

  step("carol stops reading; bob pushes 40 KB, more than her window");
  carol.ws._socket.pause();
  const blob = "x".repeat(10_000);
  for (let i = 0; i < 4; i++) {
    const r = await new Promise((resolve) => b.channel.push("blob", { i, blob }).receive("ok", () => resolve("ok")).receive("error", resolve));
    assert.equal(r, "ok");
  }

  step("carol sends heartbeats without reading: the node closes her 1013 once their answers pass 64 KiB");
  let sent = 0;
  while ((await metric(input, "roster_slow_clients_closed_total")) === 0) {
    assert.ok(sent < 20_000, `carol was still open after ${sent} heartbeats`);
    for (let i = 0; i < 500; i++) carol.send([null, String(++sent), "phoenix", "heartbeat", {}]);
    await new Promise((resolve) => setImmediate(resolve));
  }
  step(`closed after about ${sent} heartbeats`);
  await untilPresence(b.presence, (p) => !presenceMap(p).carol, 5000, "carol leaves");
  carol.ws._socket.resume();
  const closed = await Promise.race([
    carol.closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error("carol's socket was not closed")), 10_000)),
  ]);
  assert.deepEqual(closed, { code: 1013, reason: "slow client: outbound queue full" });
  assert.equal(await metric(input, "roster_ping_timeouts_total"), 0);
});
