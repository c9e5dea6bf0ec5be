// Bad tokens and denied anonymous viewers (server: `[[policy]] topic = "staff:*"
// anonymous = "deny"`). A socket with a malformed, tampered, expired or reserved-user token
// opens, and every join on it is answered `unauthorized` (never downgraded to anonymous); an
// anonymous socket's join to a topic that denies anonymous viewers is `unauthorized` too
// (while it may join a counted topic). After each, a normal client still joins and sees its
// presence, and /metrics counts the refused tokens by kind.

import assert from "node:assert/strict";
import { connect, disconnect, joinWithPresence, metric, presenceMap, scenario, scenarioInput, untilPresence } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const t = input.tokens;
  let probes = 0;
  const stillServing = async (after) => {
    const socket = connect(input.ws, { token: t.probe });
    const p = await joinWithPresence(socket, "room:probe", { meta: { n: ++probes } });
    assert.equal(p.status, "ok", `after ${after}, a normal client's join: ${JSON.stringify(p.response)}`);
    await untilPresence(p.presence, (pr) => presenceMap(pr).probe?.[0]?.n === probes, 5000, `after ${after}, the probe sees itself`);
    await disconnect(socket);
  };

  const [claims, sig] = t.alice.split(".");
  const flip = (s) => (s[0] === "A" ? "B" : "A") + s.slice(1);
  const mallory = Buffer.from(JSON.stringify({ sub: "mallory", role: "admin", exp: 4102444800 })).toString("base64url");
  const bad = [
    ["malformed", "not-a-token", "query"],
    ["bad_signature: signature changed", `${claims}.${flip(sig)}`, "query"],
    ["bad_signature: claims changed", `${mallory}.${sig}`, "subprotocol"],
    ["bad_signature: another secret", t.otherSecret, "query"],
    ["expired", t.expired, "query"],
    ["expired (subprotocol)", t.expired, "subprotocol"],
    ["reserved user `anonymous`", t.reserved, "query"],
  ];
  for (const [label, token, where] of bad) {
    step(`${label} (${where}): the socket opens, every join is unauthorized`);
    const socket =
      where === "query" ? connect(input.ws, { token }) : connect(input.ws, {}, { authToken: token });
    await new Promise((resolve, reject) => {
      socket.onOpen(resolve);
      socket.onError(() => reject(new Error(`${label}: the socket did not open`)));
    });
    for (const topic of ["room:probe", "staff:1"]) {
      const j = await joinWithPresence(socket, topic, { tab_id: "t" });
      assert.equal(j.status, "error", `${label}, join ${topic}: ${JSON.stringify(j.response)}`);
      assert.deepEqual(j.response, { reason: "unauthorized" });
    }
    assert.ok(socket.isConnected(), `${label}: the socket stays open`);
    await disconnect(socket);
    await stillServing(label);
  }

  step("anonymous: staff:1 (anonymous = deny) is unauthorized; room:probe (counted) is fine");
  const anon = connect(input.ws);
  const denied = await joinWithPresence(anon, "staff:1", {});
  assert.equal(denied.status, "error");
  assert.deepEqual(denied.response, { reason: "unauthorized" });
  const counted = await joinWithPresence(anon, "room:probe", {});
  assert.equal(counted.status, "ok", JSON.stringify(counted.response));
  await stillServing("a denied anonymous join");

  step("alice's valid token joins staff:1");
  const alice = connect(input.ws, { token: t.alice });
  const a = await joinWithPresence(alice, "staff:1", {});
  assert.equal(a.status, "ok", JSON.stringify(a.response));

  step("/metrics counts the tokens by kind and the unauthorized joins");
  const expected = {
    'roster_bad_tokens_total{reason="malformed"}': 1,
    'roster_bad_tokens_total{reason="bad_signature"}': 3,
    'roster_bad_tokens_total{reason="expired"}': 2,
    'roster_bad_tokens_total{reason="reserved_subject"}': 1,
    'roster_join_rejects_total{reason="unauthorized"}': 2 * bad.length + 1,
  };
  const actual = {};
  for (const sample of Object.keys(expected)) actual[sample] = await metric(input, sample);
  assert.deepEqual(actual, expected);
});
