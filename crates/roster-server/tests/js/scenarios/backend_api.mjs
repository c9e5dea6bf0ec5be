// The backend API, with `Authorization: Bearer <api_key>`: GET /presence lists a topic as
// presence_state does, GET /slot says whether a slot token still holds, POST /kick revokes a
// user's slot (the client gets `slot_revoked` with the given reason, then `phx_close`). Without
// the key, or with a wrong one, each answers 401 and does nothing.

import assert from "node:assert/strict";
import { api, connect, joinWithPresence, metric, presenceMap, scenario, scenarioInput, untilPresence } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "room:api";
  const q = encodeURIComponent;
  const noKey = { auth: false };
  const wrongKey = { ...input, apiKey: `${input.apiKey}x` };

  step("alice and bob join");
  const alice = connect(input.ws, { token: input.tokens.alice });
  const a = await joinWithPresence(alice, topic, { tab_id: "alice-tab", meta: { name: "Alice" } });
  assert.equal(a.status, "ok", JSON.stringify(a.response));
  const token = a.response.slot.token;
  const bob = connect(input.ws, { token: input.tokens.bob });
  const b = await joinWithPresence(bob, topic, { tab_id: "bob-tab" });
  assert.equal(b.status, "ok", JSON.stringify(b.response));
  await untilPresence(a.presence, (p) => Object.keys(presenceMap(p)).join(",") === "alice,bob", 5000, "alice sees bob");
  const aliceEvents = [];
  for (const event of ["slot_revoked", "phx_close", "phx_error"]) {
    a.channel.on(event, (payload) => aliceEvents.push([event, payload]));
  }

  step("without the key (or with a wrong one), every call is 401");
  for (const [path, opts] of [
    [`/presence?topic=${q(topic)}`, {}],
    [`/slot?user=alice&topic=${q(topic)}&token=${q(token)}`, {}],
    ["/kick", { method: "POST", body: { user: "alice", topic, reason: "banned" } }],
  ]) {
    for (const [label, who, extra] of [["no key", input, noKey], ["wrong key", wrongKey, {}]]) {
      const r = await api(who, path, { ...opts, ...extra });
      assert.equal(r.status, 401, `${label} ${path}: ${r.status} ${r.text}`);
      assert.deepEqual(r.json, { reason: "unauthorized" });
    }
  }

  step("GET /presence: the topic's list, as the clients see it");
  const presence = await api(input, `/presence?topic=${q(topic)}`);
  assert.equal(presence.status, 200, presence.text);
  assert.deepEqual(Object.keys(presence.json).sort(), ["alice", "bob"]);
  assert.deepEqual(presence.json.alice.metas, presenceMap(a.presence).alice);
  assert.deepEqual(presence.json.bob.metas, presenceMap(a.presence).bob);
  const empty = await api(input, `/presence?topic=${q("room:nobody")}`);
  assert.deepEqual([empty.status, empty.json], [200, {}]);

  step("GET /slot: alice's live token is valid; another is not; a malformed one is 400");
  const slot = (t) => api(input, `/slot?user=alice&topic=${q(topic)}&token=${q(t)}`);
  assert.deepEqual((await slot(token)).json, { valid: true });
  const [epoch, generation] = token.split(".");
  assert.deepEqual((await slot(`${epoch}.${BigInt(generation) + 1n}`)).json, { valid: false });
  const malformed = await slot("not-a-token");
  assert.equal(malformed.status, 400, malformed.text);
  assert.equal(malformed.json.reason, "bad_request");

  step("the refused kicks did nothing: alice still joined, no event");
  assert.deepEqual(aliceEvents, []);
  assert.equal(a.channel.state, "joined");

  step("POST /kick {user: alice, topic, reason: banned}: alice gets slot_revoked {reason: banned}, then phx_close");
  const closed = new Promise((resolve) => a.channel.onClose(resolve));
  const kick = await api(input, "/kick", { method: "POST", body: { user: "alice", topic, reason: "banned" } });
  assert.equal(kick.status, 202, kick.text);
  await Promise.race([
    closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no phx_close: ${JSON.stringify(aliceEvents)}`)), 5000)),
  ]);
  assert.deepEqual(aliceEvents, [["slot_revoked", { reason: "banned" }], ["phx_close", {}]]);
  assert.equal(a.channel.state, "closed");
  await untilPresence(b.presence, (p) => Object.keys(presenceMap(p)).join(",") === "bob", 5000, "bob sees alice gone");

  step("the kick is counted under `kicked`: its free-text reason never becomes a metrics label");
  const metrics = await api(input, "/metrics");
  assert.equal(await metric(input, 'roster_revokes_total{reason="kicked"}'), 1);
  assert.equal(await metric(input, "roster_kicks_total"), 1);
  assert.ok(!metrics.text.includes("banned"), `a kick's reason in /metrics:\n${metrics.text}`);

  step("POST /kick with a reason over 256 bytes: 400 bad_request, nothing revoked");
  const long = await api(input, "/kick", { method: "POST", body: { user: "bob", topic, reason: "x".repeat(257) } });
  assert.equal(long.status, 400, long.text);
  assert.equal(long.json?.reason, "bad_request");
  assert.equal(b.channel.state, "joined");

  step("after the kick, /slot says false for alice's token, and /presence lists bob alone");
  assert.deepEqual((await slot(token)).json, { valid: false });
  const after = await api(input, `/presence?topic=${q(topic)}`);
  assert.deepEqual(Object.keys(after.json), ["bob"]);

  step("POST /kick with no body, a body without `user`, or a body that is not JSON: 400 bad_request");
  const noBody = await api(input, "/kick", { method: "POST" });
  const noUser = await api(input, "/kick", { method: "POST", body: { topic } });
  const notJson = await fetch(`${input.http}/kick`, {
    method: "POST",
    headers: { authorization: `Bearer ${input.apiKey}`, "content-type": "application/json" },
    body: "{user: alice",
  });
  for (const [label, r] of [["no body", noBody], ["no user", noUser], ["not JSON", { status: notJson.status, json: await notJson.json().catch(() => null) }]]) {
    assert.equal(r.status, 400, `${label}: ${r.status} ${r.text ?? ""}`);
    assert.equal(r.json?.reason, "bad_request", `${label}: ${JSON.stringify(r.json)}`);
  }
});
