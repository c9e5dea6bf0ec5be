// A signed-in user joins with the token in the query string (`params: {token}`), another with
// it in the subprotocol (`authToken`); both joins carry a slot token "<digits>.<digits>", and
// phoenix's Presence on both clients lists the same two users, one meta each.

import assert from "node:assert/strict";
import { connect, joinWithPresence, parseSlotToken, presenceMap, scenario, scenarioInput, untilPresence } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "room:lobby";
  const both = (p) => Object.keys(presenceMap(p)).join(",") === "alice,bob";

  step("alice joins with her token as the `token` query parameter");
  const alice = connect(input.ws, { token: input.tokens.alice });
  const a = await joinWithPresence(alice, topic, { tab_id: "alice-tab", meta: { name: "Alice" } });
  assert.equal(a.status, "ok", `alice's join: ${JSON.stringify(a.response)}`);
  assert.match(a.response.slot?.token ?? "", /^\d+\.\d+$/, `alice's reply: ${JSON.stringify(a.response)}`);
  parseSlotToken(a.response.slot.token);
  await untilPresence(a.presence, (p) => Object.keys(presenceMap(p)).join(",") === "alice", 5000, "alice sees herself");

  step("bob joins with his token in the subprotocol (authToken)");
  const bob = connect(input.ws, {}, { authToken: input.tokens.bob });
  const b = await joinWithPresence(bob, topic, { tab_id: "bob-tab", meta: { name: "Bob" } });
  assert.equal(b.status, "ok", `bob's join: ${JSON.stringify(b.response)}`);
  assert.match(b.response.slot?.token ?? "", /^\d+\.\d+$/, `bob's reply: ${JSON.stringify(b.response)}`);
  assert.equal(bob.conn.protocol, "phoenix", "the server echoes the `phoenix` subprotocol");
  assert.ok(!bob.endPointURL().includes("token="), "bob's token travels only in the subprotocol");

  step("both clients list alice and bob, one meta each, and agree");
  await untilPresence(a.presence, both, 5000, "alice sees bob");
  await untilPresence(b.presence, both, 5000, "bob sees alice");
  const seenByAlice = presenceMap(a.presence);
  assert.deepEqual(seenByAlice, presenceMap(b.presence));
  for (const [user, name, tab] of [["alice", "Alice", "alice-tab"], ["bob", "Bob", "bob-tab"]]) {
    const metas = seenByAlice[user];
    assert.equal(metas.length, 1, `${user}: ${JSON.stringify(metas)}`);
    const [meta] = metas;
    assert.deepEqual(Object.keys(meta).sort(), ["name", "node", "online_at", "phx_ref", "tab_id"]);
    assert.equal(meta.name, name);
    assert.equal(meta.tab_id, tab);
    assert.equal(meta.node, "n1");
    assert.equal(typeof meta.phx_ref, "string");
    assert.ok(Number.isInteger(meta.online_at) && Math.abs(Date.now() - meta.online_at) < 60_000, `online_at ${meta.online_at}`);
  }
  assert.notEqual(seenByAlice.alice[0].phx_ref, seenByAlice.bob[0].phx_ref);
});
