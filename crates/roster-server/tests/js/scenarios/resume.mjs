// Resume (P2), under `on_conflict = "reject"` for call:*: a tab's socket dies without a close
// frame (its TCP socket destroyed) and the tab, on a new socket with the same tab_id, gets its
// slot back at once, with a newer token. Then the same tab arrives on yet another socket while
// the previous one is still open (the server was not told anything): a resume too, and the
// previous socket's channel gets `phx_close` alone, no `slot_revoked`. A different tab of the
// same user is still refused.

import assert from "node:assert/strict";
import {
  connect,
  joinWithPresence,
  presenceMap,
  scenario,
  scenarioInput,
  slotTokenNewer,
  untilPresence,
} from "../client.mjs";

// No reconnect behind the test's back: a dead socket stays dead.
const noReconnect = { reconnectAfterMs: () => 3_600_000, rejoinAfterMs: () => 3_600_000 };
// P2 says "at once"; a join that waited for an in-doubt slot would take isolation_ms (4 s).
const AT_ONCE_MS = 2000;

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "call:resume";
  const aliceIs = (conn) => (p) => {
    const metas = presenceMap(p).alice;
    return metas?.length === 1 && metas[0].conn === conn;
  };

  step("bob observes the call");
  const bob = connect(input.ws, { token: input.tokens.bob });
  const b = await joinWithPresence(bob, topic, {});
  assert.equal(b.status, "ok", JSON.stringify(b.response));

  step("alice's tab joins on socket 1");
  const s1 = connect(input.ws, { token: input.tokens.alice }, noReconnect);
  const j1 = await joinWithPresence(s1, topic, { tab_id: "tab-A", meta: { conn: 1 } });
  assert.equal(j1.status, "ok", JSON.stringify(j1.response));
  await untilPresence(b.presence, aliceIs(1), 5000, "bob sees alice on socket 1");

  step("socket 2 opens; socket 1's TCP connection is destroyed (no close frame); the tab joins on socket 2");
  const s2 = connect(input.ws, { token: input.tokens.alice }, noReconnect);
  await new Promise((resolve) => s2.onOpen(resolve));
  s1.conn._socket.destroy();
  const t2 = Date.now();
  const j2 = await joinWithPresence(s2, topic, { tab_id: "tab-A", meta: { conn: 2 } }, { timeoutMs: AT_ONCE_MS });
  const took2 = Date.now() - t2;
  assert.equal(j2.status, "ok", `the resume is not refused under reject: ${j2.status} ${JSON.stringify(j2.response)}`);
  assert.ok(took2 < AT_ONCE_MS, `the resume took ${took2} ms`);
  assert.ok(
    slotTokenNewer(j2.response.slot.token, j1.response.slot.token),
    `resumed token ${j2.response.slot.token} is newer than ${j1.response.slot.token}`,
  );
  await untilPresence(b.presence, aliceIs(2), 5000, "bob sees alice once, on socket 2");

  step("socket 3 (socket 2 still open and silent) resumes the same tab");
  const s2Events = [];
  for (const event of ["slot_revoked", "phx_close", "phx_error"]) {
    j2.channel.on(event, (payload) => s2Events.push([event, payload]));
  }
  const s2Closed = new Promise((resolve) => j2.channel.onClose(resolve));
  const s3 = connect(input.ws, { token: input.tokens.alice }, noReconnect);
  const t3 = Date.now();
  const j3 = await joinWithPresence(s3, topic, { tab_id: "tab-A", meta: { conn: 3 } }, { timeoutMs: AT_ONCE_MS });
  const took3 = Date.now() - t3;
  assert.equal(j3.status, "ok", `${j3.status} ${JSON.stringify(j3.response)}`);
  assert.ok(took3 < AT_ONCE_MS, `the resume took ${took3} ms`);
  assert.ok(slotTokenNewer(j3.response.slot.token, j2.response.slot.token));
  await Promise.race([
    s2Closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`socket 2 got no phx_close: ${JSON.stringify(s2Events)}`)), 5000)),
  ]);
  assert.deepEqual(s2Events, [["phx_close", {}]], "the replaced socket's channel is closed quietly");
  assert.equal(j2.channel.state, "closed");
  assert.ok(s2.isConnected(), "the replaced socket itself stays open");
  await untilPresence(b.presence, aliceIs(3), 5000, "bob sees alice once, on socket 3");

  step("another tab of alice is still refused: already_joined");
  const s4 = connect(input.ws, { token: input.tokens.alice }, noReconnect);
  const j4 = await joinWithPresence(s4, topic, { tab_id: "tab-B", meta: { conn: 4 } });
  assert.equal(j4.status, "error");
  assert.deepEqual(j4.response, { reason: "already_joined" });
  assert.deepEqual(Object.keys(presenceMap(b.presence)), ["alice", "bob"]);
  assert.equal(presenceMap(b.presence).alice[0].conn, 3);
});
