// A token whose `topics` claim is ["room:*", "lobby"] joins room:1 and lobby, and is answered
// `forbidden_topic` for call:1 and lobby2 (its socket stays usable); a token without the claim
// (bob) joins call:1. /metrics counts the refusals as join rejects `forbidden_topic`.

import assert from "node:assert/strict";
import { connect, joinWithPresence, metric, scenario, scenarioInput } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const alice = connect(input.ws, { token: input.tokens.rooms });

  step("topics the claim lists: ok");
  for (const topic of ["room:1", "lobby"]) {
    const j = await joinWithPresence(alice, topic, {});
    assert.equal(j.status, "ok", `${topic}: ${JSON.stringify(j.response)}`);
  }

  step("topics it does not list: forbidden_topic");
  for (const topic of ["call:1", "lobby2"]) {
    const j = await joinWithPresence(alice, topic, {});
    assert.deepEqual([j.status, j.response], ["error", { reason: "forbidden_topic" }], topic);
  }

  step("the socket still joins what it may; a token without the claim joins anything");
  assert.equal((await joinWithPresence(alice, "room:2", {})).status, "ok");
  const bob = connect(input.ws, { token: input.tokens.bob });
  assert.equal((await joinWithPresence(bob, "call:1", {})).status, "ok");

  step("/metrics");
  assert.equal(await metric(input, 'roster_join_rejects_total{reason="forbidden_topic"}'), 2);
});
