// A big push carries pings in line with it: a client reading it answers one every 32 KiB it
// reads, so it is heard while it reads a long backlog (the node's regular pings are an hour
// apart here, so every ping seen is an in-line one).

import assert from "node:assert/strict";
import { metric, rawSocket, scenario, scenarioInput } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "room:big";

  step("alice and bob join");
  const alice = await rawSocket(input.ws, { query: { token: input.tokens.alice } });
  let pings = 0;
  alice.ws.on("ping", () => pings++);
  alice.send(["1", "1", topic, "phx_join", {}]);
  assert.equal((await alice.next())[3], "phx_reply");
  assert.equal((await alice.next())[3], "presence_state");
  const bob = await rawSocket(input.ws, { query: { token: input.tokens.bob } });
  bob.send(["1", "1", topic, "phx_join", {}]);
  assert.equal((await bob.next())[3], "phx_reply");
  assert.equal((await bob.next())[3], "presence_state");
  assert.equal((await alice.next())[3], "presence_diff");
  const before = pings;

  step("bob pushes 100 KB: alice receives it whole, with at least three pings read before its end");
  const data = "x".repeat(100_000);
  let pingsAtMessage = -1;
  alice.ws.on("message", (raw) => {
    if (raw.toString().includes('"big"')) pingsAtMessage = pings;
  });
  bob.send(["1", "2", topic, "big", { data }]);
  assert.deepEqual(await bob.next(), ["1", "2", topic, "phx_reply", { status: "ok", response: {} }]);
  const frame = await alice.next();
  assert.deepEqual(frame.slice(0, 4), ["1", null, topic, "big"]);
  assert.ok(frame[4].body?.data === data, `the push arrived as ${JSON.stringify(frame).slice(0, 300)}`);
  assert.ok(pingsAtMessage - before >= 3, `${pingsAtMessage - before} pings in line with 100 KB`);

  step("both sockets are still open and nothing was refused as a protocol error");
  assert.equal(alice.ws.readyState, 1);
  assert.equal(bob.ws.readyState, 1);
  assert.equal(await metric(input, 'roster_bad_frames_total{reason="ws_protocol"}'), 0);
  alice.ws.close();
  bob.ws.close();
});
