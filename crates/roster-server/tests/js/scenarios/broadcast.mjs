// Pushes: a signed-in user's event reaches every other subscriber of the topic as
// `{from, body}` (the body's JSON unchanged) and the sender gets `ok` (and not its own event);
// `presence:update` replaces the sender's meta: another client sees exactly one leave (the old
// meta) and one join (the new meta, a new phx_ref, same tab_id).

import assert from "node:assert/strict";
import { connect, joinWithPresence, nextEvent, presenceMap, scenario, scenarioInput, untilPresence, waitFor } from "../client.mjs";

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
  const topic = "room:talk";
  const members = {};
  for (const user of ["alice", "bob", "carol"]) {
    const socket = connect(input.ws, { token: input.tokens[user] });
    const j = await joinWithPresence(socket, topic, { tab_id: `${user}-tab`, meta: { name: user, status: "here" } });
    assert.equal(j.status, "ok", `${user}: ${JSON.stringify(j.response)}`);
    members[user] = j;
  }
  const all = (p) => Object.keys(presenceMap(p)).join(",") === "alice,bob,carol";
  for (const user of ["alice", "bob", "carol"]) await untilPresence(members[user].presence, all, 5000, `${user} sees all`);

  step("alice pushes `shout`: ok for her, {from, body} for bob and carol");
  const received = { alice: [], bob: [], carol: [] };
  for (const user of ["alice", "bob", "carol"]) {
    for (const event of ["shout", "whisper"]) members[user].channel.on(event, (p) => received[user].push([event, p]));
  }
  const body = { text: "hi", n: 1.5, nested: { list: [1, true, null, "x"] }, "ünï": "cödé" };
  const bobGets = nextEvent(members.bob.channel, "shout");
  const carolGets = nextEvent(members.carol.channel, "shout");
  assert.deepEqual(await push(members.alice.channel, "shout", body), ["ok", {}]);
  assert.deepEqual(await bobGets, { from: "alice", body });
  assert.deepEqual(await carolGets, { from: "alice", body });

  step("bob pushes `whisper` (a string body); alice gets it, and never got her own shout");
  const aliceGets = nextEvent(members.alice.channel, "whisper");
  assert.deepEqual(await push(members.bob.channel, "whisper", "psst"), ["ok", {}]);
  assert.deepEqual(await aliceGets, { from: "bob", body: "psst" });
  assert.deepEqual(received.alice, [["whisper", { from: "bob", body: "psst" }]]);
  await waitFor(() => received.carol.length === 2); // carol's copy of the whisper
  assert.deepEqual(received.carol, [
    ["shout", { from: "alice", body }],
    ["whisper", { from: "bob", body: "psst" }],
  ]);
  assert.deepEqual(received.bob, [["shout", { from: "alice", body }]]);

  step("alice's presence:update: bob sees exactly one leave of her old meta and one join of the new");
  const before = presenceMap(members.bob.presence).alice;
  assert.equal(before.length, 1);
  const joins = [];
  const leaves = [];
  members.bob.presence.onJoin((key, _current, joined) => joins.push([key, joined.metas]));
  members.bob.presence.onLeave((key, _current, left) => leaves.push([key, left.metas]));
  const rawDiffs = [];
  members.bob.channel.on("presence_diff", (d) => rawDiffs.push(d));
  assert.deepEqual(await push(members.alice.channel, "presence:update", { name: "alice", status: "away" }), ["ok", {}]);
  await untilPresence(
    members.bob.presence,
    (p) => presenceMap(p).alice?.[0]?.status === "away",
    5000,
    "bob sees alice away",
  );
  assert.equal(joins.length, 1, `joins: ${JSON.stringify(joins)}`);
  assert.equal(leaves.length, 1, `leaves: ${JSON.stringify(leaves)}`);
  const [[joinKey, joinedMetas]] = joins;
  const [[leaveKey, leftMetas]] = leaves;
  assert.equal(joinKey, "alice");
  assert.equal(leaveKey, "alice");
  assert.deepEqual(leftMetas, before, "the leave is the old meta");
  assert.equal(joinedMetas.length, 1);
  const [meta] = joinedMetas;
  assert.equal(meta.status, "away");
  assert.equal(meta.tab_id, "alice-tab");
  assert.equal(meta.node, "n1");
  assert.notEqual(meta.phx_ref, before[0].phx_ref, "an updated meta has a new phx_ref");
  const after = presenceMap(members.bob.presence);
  assert.deepEqual(after.alice, [meta]);
  assert.equal(after.bob.length, 1);
  assert.equal(after.carol.length, 1);
  // The raw diffs: both keys always present; only alice in them.
  for (const d of rawDiffs) {
    assert.deepEqual(Object.keys(d).sort(), ["joins", "leaves"]);
    assert.deepEqual([...Object.keys(d.joins), ...Object.keys(d.leaves)].filter((k) => k !== "alice"), []);
  }

  step("presence:update with a payload that is not an object: bad_request");
  assert.deepEqual(await push(members.alice.channel, "presence:update", "away"), ["error", { reason: "bad_request" }]);
});
