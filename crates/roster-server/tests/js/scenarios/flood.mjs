// One socket floods (server: max_joins_per_second = 20, max_pushes_per_second = 20,
// max_meta_bytes = 256): mallory, a raw socket in room:calm, sends for two seconds as fast as
// it can joins and leaves of fresh topics, pushes to room:calm, text that is not JSON, reserved
// events, joins with oversized metas and oversized presence:updates. Meanwhile carol, a phoenix
// client, joins, updates and leaves room:calm2 ten times, and dave's phoenix Presence must show
// exactly her state after every step; carol and dave in room:calm receive at most the pushes
// the rate limit lets through, and nothing reserved. Afterwards mallory's socket still answers,
// and /metrics counts every kind of refusal.

import assert from "node:assert/strict";
import { connect, joinWithPresence, metric, presenceMap, rawSocket, scenario, scenarioInput, untilPresence } from "../client.mjs";

const FLOOD_MS = 2000;
// At most this many rounds of 7 frames, so the server (a debug build in tests) drains the flood
// in a few seconds.
const FLOOD_ROUNDS = 5000;

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
  const keys = (p) => Object.keys(presenceMap(p)).join(",");

  step("carol and dave join room:calm and dave room:calm2; mallory (raw) joins room:calm");
  const carol = connect(input.ws, { token: input.tokens.carol });
  const dave = connect(input.ws, { token: input.tokens.dave });
  const calm = {};
  for (const [user, socket] of [["carol", carol], ["dave", dave]]) {
    calm[user] = await joinWithPresence(socket, "room:calm", { tab_id: `${user}-calm` });
    assert.equal(calm[user].status, "ok");
  }
  const watch = await joinWithPresence(dave, "room:calm2", { tab_id: "dave-calm2" });
  assert.equal(watch.status, "ok");
  const mallory = await rawSocket(input.ws, { query: { token: input.tokens.mallory } });
  mallory.send(["1", "1", "room:calm", "phx_join", { tab_id: "m" }]);
  assert.equal((await mallory.next())[4].status, "ok");
  for (const user of ["carol", "dave"]) {
    await untilPresence(calm[user].presence, (p) => keys(p) === "carol,dave,mallory", 5000, `${user} sees all`);
  }

  const received = { carol: [], dave: [] };
  const reserved = ["phx_close", "phx_error", "presence_diff", "slot_revoked"];
  for (const user of ["carol", "dave"]) {
    for (const event of ["shout", ...reserved]) calm[user].channel.on(event, (p) => received[user].push([event, p]));
  }

  step(`mallory floods for ${FLOOD_MS} ms while carol joins, updates and leaves room:calm2 ten times`);
  let sent = 0;
  const started = Date.now();
  const flood = (async () => {
    for (let i = 0; i < FLOOD_ROUNDS && Date.now() - started < FLOOD_MS; i++) {
      const r = `f${i}`;
      mallory.send([r, r, `room:f${i}`, "phx_join", {}]);
      mallory.send([`f${i - 1}`, `${r}l`, `room:f${i - 1}`, "phx_leave", {}]);
      mallory.send(["1", `${r}s`, "room:calm", "shout", { i }]);
      mallory.send(`not json ${i} {[`);
      mallory.send(["1", `${r}r`, "room:calm", reserved[i % reserved.length], {}]);
      mallory.send([`${r}b`, `${r}b`, `room:big${i}`, "phx_join", { meta: { pad: "x".repeat(300) } }]);
      mallory.send(["1", `${r}u`, "room:calm", "presence:update", { pad: "y".repeat(300) }]);
      sent += 7;
      // Let the socket read the server's answers, as a live client would.
      if (i % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  const cycles = (async () => {
    for (let n = 1; n <= 10; n++) {
      const j = await joinWithPresence(carol, "room:calm2", { tab_id: "carol-calm2", meta: { n } });
      assert.equal(j.status, "ok", `cycle ${n}: join ${JSON.stringify(j.response)}`);
      await untilPresence(watch.presence, (p) => keys(p) === "carol,dave" && presenceMap(p).carol[0].n === n, 5000, `dave sees carol join (${n})`);
      assert.deepEqual(await push(j.channel, "presence:update", { n, away: true }), ["ok", {}], `cycle ${n}: update`);
      await untilPresence(watch.presence, (p) => presenceMap(p).carol?.[0]?.away === true && presenceMap(p).carol[0].n === n, 5000, `dave sees the update (${n})`);
      assert.equal(presenceMap(watch.presence).carol.length, 1, "one meta for carol");
      await new Promise((resolve) => j.channel.leave().receive("ok", resolve));
      await untilPresence(watch.presence, (p) => keys(p) === "dave", 5000, `dave sees carol leave (${n})`);
    }
  })();
  await Promise.all([flood, cycles]);
  step(`mallory sent ${sent} frames in ${((Date.now() - started) / 1000).toFixed(1)} s; carol's ten cycles are done`);

  step("mallory's socket still answers; carol and dave still in room:calm with everyone listed");
  mallory.send([null, "hb", "phoenix", "heartbeat", {}]);
  for (;;) {
    const frame = await mallory.next(10_000);
    if (frame[1] === "hb") {
      assert.deepEqual(frame[4], { status: "ok", response: {} });
      break;
    }
  }
  // The server has now worked through the whole flood.
  const seconds = (Date.now() - started) / 1000;
  step(`the server answered all of it ${seconds.toFixed(1)} s after the flood began`);
  for (const user of ["carol", "dave"]) {
    assert.equal(calm[user].channel.state, "joined", `${user}'s room:calm channel`);
    assert.equal(keys(calm[user].presence), "carol,dave,mallory", `${user}'s room:calm list`);
    const shouts = received[user].filter(([e]) => e === "shout").length;
    // A relayed push carries {from, body}; the server's own presence_diffs never do.
    const others = received[user].filter(([e, p]) => e !== "shout" && (e !== "presence_diff" || "from" in p));
    assert.deepEqual(others, [], `${user} got reserved events: ${JSON.stringify(others.slice(0, 10))}`);
    // 20 per one-second window; the flood spans at most ceil(seconds) + 1 windows.
    assert.ok(shouts >= 20 && shouts <= 20 * (Math.ceil(seconds) + 1), `${user} got ${shouts} shouts`);
  }

  step("/metrics counts every kind of refusal");
  for (const sample of [
    "roster_rate_limited_total",
    'roster_limited_total{reason="max_joins_per_second"}',
    'roster_limited_total{reason="max_meta_bytes"}',
    'roster_bad_frames_total{reason="invalid_json"}',
    'roster_bad_frames_total{reason="reserved_event"}',
  ]) {
    assert.ok((await metric(input, sample)) > 0, `${sample} is 0`);
  }
});
