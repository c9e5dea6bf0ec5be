// Bad frames (server: max_frame_bytes = 2048, max_pushes_per_second = 10). Each is answered as
// docs/protocol.md says, and after each a normal phoenix client on another socket still joins
// and sees its presence:
// - not JSON, not an array, wrong length, wrong types: dropped without an answer (the next
//   heartbeat's reply is the very next frame), the socket stays open;
// - a push to a topic the socket has not joined: `bad_request`;
// - a join whose payload is malformed: `bad_request`; a join to `phoenix`: `forbidden_topic`;
// - a frame over max_frame_bytes: the socket is closed with 1009;
// - a flood over max_pushes_per_second: the pushes beyond the limit get `rate_limited`;
// and /metrics counts each kind exactly.

import assert from "node:assert/strict";
import { connect, disconnect, joinWithPresence, metric, presenceMap, rawSocket, scenario, scenarioInput, untilPresence } from "../client.mjs";

const ok = { status: "ok", response: {} };
const error = (reason) => ({ status: "error", response: { reason } });

scenario(async (step) => {
  const input = scenarioInput();
  let probes = 0;
  const stillServing = async (after) => {
    const socket = connect(input.ws, { token: input.tokens.probe });
    const p = await joinWithPresence(socket, "room:probe", { meta: { n: ++probes } });
    assert.equal(p.status, "ok", `after ${after}, a normal client's join: ${JSON.stringify(p.response)}`);
    await untilPresence(p.presence, (pr) => presenceMap(pr).probe?.[0]?.n === probes, 5000, `after ${after}, the probe sees itself`);
    await disconnect(socket);
  };

  const raw = await rawSocket(input.ws, { query: { token: input.tokens.alice } });
  let hb = 0;
  const assertDroppedSilently = async (label) => {
    const ref = `hb-${++hb}`;
    raw.send([null, ref, "phoenix", "heartbeat", {}]);
    assert.deepEqual(await raw.next(), [null, ref, "phoenix", "phx_reply", ok], `after ${label}: no answer, socket open`);
  };

  const malformed = [
    ["invalid_json", "not json at all"],
    ["invalid_json", '[null,"1","phoenix","heartbeat",{}'],
    ["not_an_array", '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}'],
    ["not_an_array", '"a string"'],
    ["wrong_length", "[]"],
    ["wrong_length", '[null,"1","phoenix","heartbeat"]'],
    ["wrong_length", '[null,"1","phoenix","heartbeat",{},"extra"]'],
    ["wrong_type", '[1,"1","phoenix","heartbeat",{}]'],
    ["wrong_type", '[null,2,"phoenix","heartbeat",{}]'],
    ["wrong_type", '[null,"1",["phoenix"],"heartbeat",{}]'],
    ["wrong_type", '[null,"1","phoenix",null,{}]'],
  ];
  for (const [kind, text] of malformed) {
    step(`${kind}: ${text}`);
    raw.send(text);
    await assertDroppedSilently(text);
    await stillServing(text);
  }

  step("an unknown event on a topic this socket has not joined: bad_request");
  raw.send(["9", "10", "room:nowhere", "shout", { x: 1 }]);
  assert.deepEqual(await raw.next(), ["9", "10", "room:nowhere", "phx_reply", error("bad_request")]);
  raw.send([null, "11", "room:nowhere", "presence:update", { x: 1 }]);
  assert.deepEqual(await raw.next(), [null, "11", "room:nowhere", "phx_reply", error("bad_request")]);
  await stillServing("a push to an unjoined topic");

  step("malformed joins: bad_request; a join to `phoenix`: forbidden_topic");
  const badJoins = [
    ["room:x", "not an object", "bad_request"],
    ["room:x", { tab_id: 5 }, "bad_request"],
    ["room:x", { meta: [1, 2] }, "bad_request"],
    ["phoenix", {}, "forbidden_topic"],
    ["", {}, "forbidden_topic"],
  ];
  let ref = 20;
  for (const [topic, payload, reason] of badJoins) {
    const r = String(++ref);
    raw.send([r, r, topic, "phx_join", payload]);
    assert.deepEqual(await raw.next(), [r, r, topic, "phx_reply", error(reason)], `join ${topic} ${JSON.stringify(payload)}`);
  }
  await assertDroppedSilently("the malformed joins");
  await stillServing("malformed joins");

  step("a flood of 30 pushes (limit 10 per second): the first 10 ok, the rest rate_limited");
  raw.send(["40", "40", "room:flood", "phx_join", {}]);
  const joinReply = await raw.next();
  assert.deepEqual(joinReply.slice(0, 4), ["40", "40", "room:flood", "phx_reply"]);
  assert.equal(joinReply[4].status, "ok", JSON.stringify(joinReply));
  for (let i = 0; i < 30; i++) raw.send(["40", `p${i}`, "room:flood", "shout", { i }]);
  const replies = [];
  while (replies.length < 30) {
    const frame = await raw.next();
    if (frame[3] === "phx_reply") replies.push(frame);
    else assert.ok(["presence_state", "presence_diff"].includes(frame[3]), `unexpected ${JSON.stringify(frame)}`);
  }
  assert.deepEqual(replies.map((f) => f[1]), Array.from({ length: 30 }, (_, i) => `p${i}`), "replies in order");
  const oks = replies.filter((f) => f[4].status === "ok").length;
  for (const f of replies.slice(0, 10)) assert.deepEqual(f[4], ok);
  // The window is one second; in the rare case the burst straddles a window's end, the next
  // window admits up to 10 more.
  assert.ok(oks >= 10 && oks <= 20, `${oks} pushes ok`);
  for (const f of replies.filter((f) => f[4].status !== "ok")) assert.deepEqual(f[4], error("rate_limited"));
  await stillServing("a flood");

  step("a frame over max_frame_bytes: closed with 1009");
  raw.send(JSON.stringify([null, "big", "phoenix", "heartbeat", { pad: "x".repeat(3000) }]));
  const closed = await Promise.race([
    raw.closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error("the oversized frame did not close the socket")), 5000)),
  ]);
  assert.equal(closed.code, 1009, JSON.stringify(closed));
  await stillServing("an oversized frame");

  step("a frame over the transport's own limit (1 MiB here): closed with 1009 too");
  const huge = await rawSocket(input.ws, { query: { token: input.tokens.alice } });
  huge.send(JSON.stringify([null, "huge", "phoenix", "heartbeat", { pad: "x".repeat(2 << 20) }]));
  const closedHuge = await Promise.race([
    huge.closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error("the huge frame did not close the socket")), 5000)),
  ]);
  assert.equal(closedHuge.code, 1009, JSON.stringify(closedHuge));
  await stillServing("a huge frame");

  step("/metrics counts every kind");
  const expected = {
    'roster_bad_frames_total{reason="invalid_json"}': 2,
    'roster_bad_frames_total{reason="not_an_array"}': 2,
    'roster_bad_frames_total{reason="wrong_length"}': 3,
    'roster_bad_frames_total{reason="wrong_type"}': 4,
    'roster_bad_frames_total{reason="not_joined"}': 2,
    'roster_bad_frames_total{reason="too_large"}': 2,
    'roster_join_rejects_total{reason="bad_request"}': 3,
    'roster_join_rejects_total{reason="forbidden_topic"}': 2,
    roster_rate_limited_total: 30 - oks,
  };
  const actual = {};
  for (const sample of Object.keys(expected)) actual[sample] = await metric(input, sample);
  assert.deepEqual(actual, expected);
});
