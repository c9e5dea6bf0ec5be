// Graceful shutdown: once the test sends SIGTERM (after this prints "joined"), every client is
// closed with 1012 (service restart), so phoenix clients reconnect, to another node behind a
// load balancer.

import assert from "node:assert/strict";
import { rawSocket, scenario, scenarioInput } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  step("alice joins room:1");
  const alice = await rawSocket(input.ws, { query: { token: input.tokens.alice } });
  alice.send(["1", "1", "room:1", "phx_join", { tab_id: "t" }]);
  assert.equal((await alice.next())[4].status, "ok");
  console.log("joined");
  step("the server is stopped: the socket closes with 1012");
  const { code } = await Promise.race([
    alice.closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error("no close within 10 s")), 10000)),
  ]);
  assert.equal(code, 1012);
});
