// A client that stops answering pings (its TCP reads paused: a half-open connection, a frozen
// laptop) is closed by the server within about two ping intervals, and its presence leaves;
// the observer sees it go, and the node counts it.

import assert from "node:assert/strict";
import { Presence } from "phoenix";
import { connect, metric, rawSocket, scenario, scenarioInput, waitFor } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();

  step("observer alice and zombie bob join room:1");
  const alice = connect(input.ws, { token: input.tokens.alice });
  const channel = alice.channel("room:1", { tab_id: "alice-tab" });
  const presence = new Presence(channel);
  await new Promise((resolve, reject) => channel.join().receive("ok", resolve).receive("error", reject));
  const zombie = await rawSocket(input.ws, { query: { token: input.tokens.bob } });
  zombie.send(["1", "1", "room:1", "phx_join", { tab_id: "bob-tab" }]);
  assert.equal((await zombie.next())[4].status, "ok");
  await waitFor(() => presence.list((key) => key).includes("bob"));

  step("bob's socket stops reading (no pongs); the server closes it and bob leaves");
  const started = Date.now();
  zombie.ws._socket.pause();
  await waitFor(() => !presence.list((key) => key).includes("bob"), 5000);
  const took = Date.now() - started;
  assert.ok(took < 3000, `bob left after ${took} ms (ping_ms is 200)`);

  step("counted as a ping timeout");
  assert.ok((await metric(input, "roster_ping_timeouts_total")) >= 1, "roster_ping_timeouts_total counts it");
});
