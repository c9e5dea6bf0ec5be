// Reject (`[[policy]] topic = "call:*" on_conflict = "reject"`): a second tab of the same user,
// on another socket, is refused with `already_joined`; the first tab keeps its slot and gets
// no event. Another topic of the same pattern is another scope: the second tab may join it.

import assert from "node:assert/strict";
import { connect, joinWithPresence, presenceMap, scenario, scenarioInput, untilPresence } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "call:1";

  step("bob observes call:1");
  const bob = connect(input.ws, { token: input.tokens.bob });
  const b = await joinWithPresence(bob, topic, {});
  assert.equal(b.status, "ok", JSON.stringify(b.response));

  step("alice's first tab joins call:1");
  const first = connect(input.ws, { token: input.tokens.alice });
  const a1 = await joinWithPresence(first, topic, { tab_id: "tab-1" });
  assert.equal(a1.status, "ok", JSON.stringify(a1.response));
  const firstEvents = [];
  for (const event of ["slot_revoked", "phx_close", "phx_error"]) {
    a1.channel.on(event, (payload) => firstEvents.push([event, payload]));
  }

  step("alice's second tab, on another socket, is refused with already_joined");
  const second = connect(input.ws, { token: input.tokens.alice });
  const a2 = await joinWithPresence(second, topic, { tab_id: "tab-2" });
  assert.equal(a2.status, "error");
  assert.deepEqual(a2.response, { reason: "already_joined" });

  step("the second tab may join call:2 (a topic is its own scope)");
  const other = await joinWithPresence(second, "call:2", { tab_id: "tab-2" });
  assert.equal(other.status, "ok", JSON.stringify(other.response));

  step("carol joins call:1; once everyone sees her, alice is still there once, with tab-1");
  const carol = connect(input.ws, { token: input.tokens.carol });
  const c = await joinWithPresence(carol, topic, {});
  assert.equal(c.status, "ok", JSON.stringify(c.response));
  const three = (p) => Object.keys(presenceMap(p)).join(",") === "alice,bob,carol";
  await untilPresence(b.presence, three, 5000, "bob sees carol");
  await untilPresence(a1.presence, three, 5000, "alice's first tab sees carol");
  const list = presenceMap(b.presence);
  assert.equal(list.alice.length, 1);
  assert.equal(list.alice[0].tab_id, "tab-1");
  assert.deepEqual(firstEvents, [], "the first tab got no revoke, close or error");
  assert.equal(a1.channel.state, "joined");
});
