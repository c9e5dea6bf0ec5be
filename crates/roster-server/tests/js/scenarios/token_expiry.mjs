// A token expires while its socket is open (server: token_leeway_ms = 0; alice's token `soon`
// expires within two seconds). Each of alice's channels gets `slot_revoked` with reason
// `token_expired`, then `phx_close` (so phoenix.js does not rejoin); her socket is closed with
// 1008 (policy violation); bob, in the same room, sees her leave. /metrics counts one revocation
// per channel under `token_expired`.
// (Before: the socket stayed open and present for as long as it liked.)

import assert from "node:assert/strict";
import { connect, joinWithPresence, metric, presenceMap, scenario, scenarioInput, untilPresence } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const rooms = ["room:a", "room:b"];

  step("alice (a token expiring within 2 s) joins two rooms; bob joins room:a");
  const alice = connect(input.ws, { token: input.tokens.soon }, { reconnectAfterMs: () => 60_000 });
  const closes = [];
  alice.onClose((e) => closes.push(e.code));
  const events = [];
  for (const topic of rooms) {
    const j = await joinWithPresence(alice, topic, { tab_id: "alice-tab" });
    assert.equal(j.status, "ok", `${topic}: ${JSON.stringify(j.response)}`);
    for (const event of ["slot_revoked", "phx_close", "phx_error"]) j.channel.on(event, (p) => events.push([topic, event, p]));
  }
  const bob = connect(input.ws, { token: input.tokens.bob });
  const b = await joinWithPresence(bob, "room:a", { tab_id: "bob-tab" });
  assert.equal(b.status, "ok");
  await untilPresence(b.presence, (p) => Object.keys(presenceMap(p)).join(",") === "alice,bob", 5000, "bob sees alice");

  step("at expiry: slot_revoked token_expired and phx_close on each channel, then close 1008");
  const deadline = Date.now() + 10_000;
  while (closes.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(closes.slice(0, 1), [1008], `close codes ${JSON.stringify(closes)}`);
  const expected = rooms.flatMap((topic) => [
    [topic, "slot_revoked", { reason: "token_expired" }],
    [topic, "phx_close", {}],
  ]);
  assert.deepEqual(
    events.slice().sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0)),
    expected,
    JSON.stringify(events),
  );

  step("bob sees alice leave");
  await untilPresence(b.presence, (p) => Object.keys(presenceMap(p)).join(",") === "bob", 5000, "alice gone");
  assert.equal(b.channel.state, "joined");

  step("/metrics: two revocations for token_expired");
  assert.equal(await metric(input, 'roster_revokes_total{reason="token_expired"}'), 2);
  alice.disconnect();
});
