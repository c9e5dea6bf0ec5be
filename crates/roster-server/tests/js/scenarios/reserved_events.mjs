// Event names the protocol reserves, pushed by a signed-in member (mallory, a raw socket):
// `phx_close`, `phx_error`, `phx_reply`, `phx_join_x`, `presence_state`, `presence_diff`,
// `slot_revoked`, and `heartbeat` outside the `phoenix` topic. Each is answered `bad_request`
// and relayed to nobody: alice's and bob's phoenix channels stay joined, their presence lists
// unchanged, and a real push still reaches them. /metrics counts each as
// `roster_bad_frames_total{reason="reserved_event"}`.
// (Before: a relayed `phx_close` closed every other member's channel for good.)

import assert from "node:assert/strict";
import { connect, joinWithPresence, metric, nextEvent, presenceMap, rawSocket, scenario, scenarioInput, untilPresence } from "../client.mjs";

const error = (reason) => ({ status: "error", response: { reason } });

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "room:reserved";
  const everyone = "alice,bob,mallory";

  step("alice and bob (phoenix clients) and mallory (a raw socket) join");
  const members = {};
  for (const user of ["alice", "bob"]) {
    const socket = connect(input.ws, { token: input.tokens[user] });
    const j = await joinWithPresence(socket, topic, { tab_id: `${user}-tab`, meta: { name: user } });
    assert.equal(j.status, "ok", `${user}: ${JSON.stringify(j.response)}`);
    members[user] = j;
  }
  const mallory = await rawSocket(input.ws, { query: { token: input.tokens.mallory } });
  mallory.send(["1", "1", topic, "phx_join", { tab_id: "m" }]);
  const joined = await mallory.next();
  assert.equal(joined[4].status, "ok", JSON.stringify(joined));
  for (const user of ["alice", "bob"]) {
    await untilPresence(members[user].presence, (p) => Object.keys(presenceMap(p)).join(",") === everyone, 5000, `${user} sees all`);
  }
  const seen = { alice: [], bob: [] };
  const reserved = ["phx_close", "phx_error", "phx_reply", "phx_join_x", "presence_state", "presence_diff", "slot_revoked", "heartbeat"];
  for (const user of ["alice", "bob"]) {
    for (const event of [...reserved, "shout"]) members[user].channel.on(event, (p) => seen[user].push([event, p]));
  }

  step("mallory pushes every reserved event: each answered bad_request");
  let ref = 10;
  for (const event of reserved) {
    const r = String(++ref);
    mallory.send(["1", r, topic, event, event === "presence_diff" ? { joins: {}, leaves: { alice: { metas: [] } } } : {}]);
    let reply = await mallory.next();
    while (reply[3] !== "phx_reply") reply = await mallory.next();
    assert.deepEqual(reply, ["1", r, topic, "phx_reply", error("bad_request")], event);
  }

  step("mallory pushes `shout`: alice and bob get it, and nothing else; their channels are joined");
  const aliceGets = nextEvent(members.alice.channel, "shout");
  const bobGets = nextEvent(members.bob.channel, "shout");
  mallory.send(["1", "99", topic, "shout", { text: "hi" }]);
  assert.deepEqual(await aliceGets, { from: "mallory", body: { text: "hi" } });
  assert.deepEqual(await bobGets, { from: "mallory", body: { text: "hi" } });
  for (const user of ["alice", "bob"]) {
    assert.deepEqual(seen[user], [["shout", { from: "mallory", body: { text: "hi" } }]], `${user} got: ${JSON.stringify(seen[user])}`);
    assert.equal(members[user].channel.state, "joined", `${user}'s channel`);
    assert.equal(Object.keys(presenceMap(members[user].presence)).join(","), everyone, `${user}'s list`);
  }

  step("/metrics counts each refused push as reserved_event");
  assert.equal(await metric(input, 'roster_bad_frames_total{reason="reserved_event"}'), reserved.length);
});
