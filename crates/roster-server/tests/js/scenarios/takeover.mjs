// Takeover (the default policy): the same user joins from a second socket (another tab). The
// first tab gets `slot_revoked` {reason: "logged_in_elsewhere"}, then `phx_close`: its channel
// is closed and phoenix does not rejoin it, even with a 100 ms rejoin interval, waited out
// three times over. An observer lists the user once, with the second tab's meta.

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

scenario(async (step) => {
  const input = scenarioInput();
  const topic = "room:takeover";

  step("carol observes the room");
  const carol = connect(input.ws, { token: input.tokens.carol });
  const c = await joinWithPresence(carol, topic, { tab_id: "carol-tab" });
  assert.equal(c.status, "ok", JSON.stringify(c.response));

  step("alice's first tab joins; its socket rejoins after 100 ms and heartbeats every 300 ms");
  const sentByFirst = [];
  const first = connect(
    input.ws,
    { token: input.tokens.alice },
    {
      rejoinAfterMs: () => 100,
      heartbeatIntervalMs: 300,
      logger: (kind, msg) => {
        if (kind === "push") sentByFirst.push(msg);
      },
    },
  );
  const a1 = await joinWithPresence(first, topic, { tab_id: "tab-1", meta: { which: "first" } });
  assert.equal(a1.status, "ok", JSON.stringify(a1.response));
  const firstEvents = [];
  a1.channel.on("slot_revoked", (payload) => firstEvents.push(["slot_revoked", payload]));
  a1.channel.onClose(() => firstEvents.push(["phx_close"]));
  const closedAt = new Promise((resolve) => a1.channel.onClose(() => resolve(Date.now())));
  await untilPresence(c.presence, (p) => presenceMap(p).alice?.length === 1, 5000, "carol sees alice's first tab");

  step("alice's second tab joins on another socket: it takes the slot over");
  const second = connect(input.ws, { token: input.tokens.alice });
  const a2 = await joinWithPresence(second, topic, { tab_id: "tab-2", meta: { which: "second" } });
  assert.equal(a2.status, "ok", JSON.stringify(a2.response));
  assert.ok(
    slotTokenNewer(a2.response.slot.token, a1.response.slot.token),
    `the takeover's token ${a2.response.slot.token} is newer than ${a1.response.slot.token}`,
  );

  step("the first tab gets slot_revoked {reason: logged_in_elsewhere}, then phx_close");
  const closedTime = await Promise.race([
    closedAt,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no phx_close; events: ${JSON.stringify(firstEvents)}`)), 5000)),
  ]);
  assert.deepEqual(firstEvents, [["slot_revoked", { reason: "logged_in_elsewhere" }], ["phx_close"]]);
  assert.equal(a1.channel.state, "closed");

  step("two heartbeat replies on the first socket after the close (>= 300 ms: 3 rejoin intervals)");
  let beats = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the first socket's heartbeats went unanswered")), 5000);
    first.onMessage(({ topic: t, event, payload }) => {
      if (t === "phoenix" && event === "phx_reply" && payload.status === "ok" && ++beats === 2) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  assert.ok(Date.now() - closedTime >= 300);

  step("then dave joins: carol's list, which would show a rejoin before dave, has alice once");
  const dave = connect(input.ws, { token: input.tokens.dave });
  const d = await joinWithPresence(dave, topic, {});
  assert.equal(d.status, "ok", JSON.stringify(d.response));
  await untilPresence(c.presence, (p) => presenceMap(p).dave?.length === 1, 5000, "carol sees dave");
  const list = presenceMap(c.presence);
  assert.deepEqual(Object.keys(list), ["alice", "carol", "dave"]);
  assert.equal(list.alice.length, 1, JSON.stringify(list.alice));
  assert.equal(list.alice[0].which, "second");
  assert.equal(list.alice[0].tab_id, "tab-2");

  assert.equal(a1.channel.state, "closed", "the first tab's channel stays closed");
  assert.ok(first.isConnected(), "the first tab's socket itself stays open");
  const joins = sentByFirst.filter((m) => m.startsWith(`${topic} phx_join`));
  assert.equal(joins.length, 1, `the first socket sent only its own join: ${JSON.stringify(sentByFirst)}`);
  assert.equal(a2.channel.state, "joined");
});
