// Anonymous viewers (no token; the default policy counts them): each join is answered
// `{slot: null}`; a signed-in observer lists them as the key `anonymous` with one meta whose
// `count` is the number of viewers; their pushes (broadcasts and presence:update) are answered
// `{reason: "unauthorized"}`; when one leaves, the count drops.

import assert from "node:assert/strict";
import { connect, disconnect, joinWithPresence, presenceMap, scenario, scenarioInput, untilPresence } from "../client.mjs";

function push(channel, event, payload) {
  return new Promise((resolve) => {
    channel
      .push(event, payload, 5000)
      .receive("ok", (r) => resolve(["ok", r]))
      .receive("error", (r) => resolve(["error", r]))
      .receive("timeout", () => resolve(["timeout"]));
  });
}

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "room:show";
  const counted = (n) => (p) => {
    const list = presenceMap(p);
    return list.anonymous?.length === 1 && list.anonymous[0].count === n;
  };

  step("bob (signed in) observes the room");
  const bob = connect(input.ws, { token: input.tokens.bob });
  const b = await joinWithPresence(bob, topic, {});
  assert.equal(b.status, "ok", JSON.stringify(b.response));

  step("three anonymous viewers join");
  const viewers = [];
  for (let i = 0; i < 3; i++) {
    const socket = connect(input.ws);
    const v = await joinWithPresence(socket, topic, { meta: { name: `viewer ${i}` } });
    assert.equal(v.status, "ok", JSON.stringify(v.response));
    assert.deepEqual(v.response, { slot: null }, "anonymous joins hold no slot");
    viewers.push({ socket, ...v });
  }

  step("bob lists them as `anonymous`, one meta with count 3");
  await untilPresence(b.presence, counted(3), 5000, "bob sees 3 anonymous viewers");
  const list = presenceMap(b.presence);
  assert.deepEqual(Object.keys(list), ["anonymous", "bob"]);
  assert.equal(list.anonymous[0].count, 3);
  assert.equal(typeof list.anonymous[0].phx_ref, "string");
  await untilPresence(viewers[2].presence, counted(3), 5000, "the last viewer sees the same count");
  assert.deepEqual(Object.keys(presenceMap(viewers[2].presence)), ["anonymous", "bob"]);

  step("an anonymous viewer's pushes are refused: unauthorized");
  assert.deepEqual(await push(viewers[0].channel, "shout", { text: "hi" }), ["error", { reason: "unauthorized" }]);
  assert.deepEqual(await push(viewers[0].channel, "presence:update", { name: "x" }), [
    "error",
    { reason: "unauthorized" },
  ]);

  step("one viewer leaves: the count drops to 2");
  await disconnect(viewers[1].socket);
  await untilPresence(b.presence, counted(2), 5000, "bob sees 2 anonymous viewers");
  assert.deepEqual(Object.keys(presenceMap(b.presence)), ["anonymous", "bob"]);
});
