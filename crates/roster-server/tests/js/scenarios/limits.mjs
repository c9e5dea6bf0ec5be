// Per-socket and per-user limits (server: max_sockets_per_user = 2, max_joins_per_second = 5,
// max_meta_bytes = 64), each refused for the offender only, with its answer, and counted:
// - a third socket of alice: the upgrade is refused with HTTP 429; bob still connects; once one
//   of alice's sockets closes, she may open another;
// - 12 joins sent at once on one socket: 5 are served, the rest answered `rate_limited`; a leave
//   of a joined topic is never refused;
// - a join or a presence:update whose meta is over 64 bytes: `meta_too_large`, and bob's view of
//   alice is unchanged.

import assert from "node:assert/strict";
import { connect, disconnect, joinWithPresence, metric, presenceMap, rawSocket, scenario, scenarioInput, untilPresence, waitFor } from "../client.mjs";

const error = (reason) => ({ status: "error", response: { reason } });

/** The replies to the frames with `refs`, in arrival order (other frames skipped). */
async function replies(raw, refs) {
  const out = [];
  while (out.length < refs.length) {
    const frame = await raw.next();
    if (frame[3] === "phx_reply" && refs.includes(frame[1])) out.push(frame);
  }
  return out;
}

scenario(async (step) => {
  const input = scenarioInput();

  step("alice opens two sockets; a third is refused with 429; bob connects");
  const a1 = await rawSocket(input.ws, { query: { token: input.tokens.alice } });
  const a2 = await rawSocket(input.ws, { query: { token: input.tokens.alice } });
  const third = await rawSocket(input.ws, { query: { token: input.tokens.alice } }).then(
    () => "opened",
    (e) => e.statusCode,
  );
  assert.equal(third, 429);
  const bob = connect(input.ws, { token: input.tokens.bob });
  const b = await joinWithPresence(bob, "room:meta", {});
  assert.equal(b.status, "ok");

  step("one of alice's sockets closes: she may open another");
  a2.ws.close();
  await a2.closed;
  // Until the server has seen the close, a new socket is still refused (and counted).
  let refusedUpgrades = 1;
  const a3 = await waitFor(
    () =>
      rawSocket(input.ws, { query: { token: input.tokens.alice } }).catch((e) => {
        if (e.statusCode !== 429) throw e;
        refusedUpgrades += 1;
        return null;
      }),
    5000,
  );

  step("12 joins at once: 5 served, 7 rate_limited");
  const refs = Array.from({ length: 12 }, (_, i) => `j${i}`);
  refs.forEach((r, i) => a1.send([r, r, `room:j${i}`, "phx_join", {}]));
  // Refusals are answered at once, served joins when the node has granted them: order by ref.
  const joins = (await replies(a1, refs)).sort((x, y) => Number(x[1].slice(1)) - Number(y[1].slice(1)));
  const served = joins.filter((f) => f[4].status === "ok");
  // The window is one second; in the rare case the burst straddles its end, the next admits up
  // to 5 more.
  assert.ok(served.length >= 5 && served.length <= 10, `${served.length} joins served`);
  // The first five sent are the five served (or more, if the window turned).
  for (const f of joins.slice(0, 5)) assert.equal(f[4].status, "ok", JSON.stringify(f));
  for (const f of joins.filter((f) => f[4].status !== "ok")) assert.deepEqual(f[4], error("rate_limited"), JSON.stringify(f));
  const limitedJoins = joins.length - served.length;

  step("a leave of a joined topic is served even over the limit");
  a1.send([served[0][0], "l0", served[0][2], "phx_leave", {}]);
  const [leave] = await replies(a1, ["l0"]);
  assert.equal(leave[4].status, "ok", JSON.stringify(leave));

  step("metas over 64 bytes: meta_too_large on join and on presence:update; bob's view unchanged");
  a3.send(["m1", "m1", "room:meta", "phx_join", { meta: { bio: "x".repeat(60) } }]);
  assert.deepEqual((await replies(a3, ["m1"]))[0][4], error("meta_too_large"));
  a3.send(["m2", "m2", "room:meta", "phx_join", { meta: { name: "alice" } }]);
  assert.equal((await replies(a3, ["m2"]))[0][4].status, "ok");
  await untilPresence(b.presence, (p) => presenceMap(p).alice?.[0]?.name === "alice", 5000, "bob sees alice");
  a3.send(["m2", "m3", "room:meta", "presence:update", { name: "alice", bio: "y".repeat(60) }]);
  assert.deepEqual((await replies(a3, ["m3"]))[0][4], error("meta_too_large"));
  a3.send(["m2", "m4", "room:meta", "presence:update", { name: "alice", away: true }]);
  assert.equal((await replies(a3, ["m4"]))[0][4].status, "ok");
  await untilPresence(b.presence, (p) => presenceMap(p).alice?.[0]?.away === true, 5000, "bob sees the update that fits");
  assert.equal(presenceMap(b.presence).alice.length, 1);
  assert.equal(presenceMap(b.presence).alice[0].bio, undefined);

  step("/metrics counts each limit");
  const expected = {
    'roster_limited_total{reason="max_sockets_per_user"}': refusedUpgrades,
    'roster_limited_total{reason="max_joins_per_second"}': limitedJoins,
    'roster_limited_total{reason="max_meta_bytes"}': 2,
    'roster_join_rejects_total{reason="rate_limited"}': limitedJoins,
    'roster_join_rejects_total{reason="meta_too_large"}': 1,
  };
  const actual = {};
  for (const sample of Object.keys(expected)) actual[sample] = await metric(input, sample);
  assert.deepEqual(actual, expected);
  await disconnect(bob);
});
