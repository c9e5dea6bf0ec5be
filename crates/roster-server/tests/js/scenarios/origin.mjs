// `allowed_origins = ["http://good.example"]`: a socket from another Origin, or with none, is
// refused with HTTP 403; the phoenix client from the good Origin joins and sees itself.

import assert from "node:assert/strict";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { joinWithPresence, metric, presenceMap, rawSocket, scenario, scenarioInput, untilPresence } from "../client.mjs";

/** The `ws` WebSocket as phoenix constructs it, sending this Origin as a browser would. */
function withOrigin(origin) {
  return class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { origin });
    }
  };
}

scenario(async (step) => {
  const input = scenarioInput();
  const refused = async (opts, label) => {
    const err = await rawSocket(input.ws, { query: { token: input.tokens.alice }, ...opts }).then(
      () => null,
      (e) => e,
    );
    assert.ok(err, `${label}: the socket was accepted`);
    assert.equal(err.statusCode, 403, `${label}: ${err.message}`);
  };

  step("Origin http://evil.example: 403");
  await refused({ wsOptions: { origin: "http://evil.example" } }, "evil origin");
  step("no Origin: 403");
  await refused({}, "no origin");
  step("Origin http://good.example.evil.example: 403 (exact match only)");
  await refused({ wsOptions: { origin: "http://good.example.evil.example" } }, "lookalike origin");

  step("raw socket from http://good.example: heartbeat answered");
  const raw = await rawSocket(input.ws, { query: { token: input.tokens.alice }, wsOptions: { origin: "http://good.example" } });
  raw.send([null, "1", "phoenix", "heartbeat", {}]);
  assert.deepEqual(await raw.next(), [null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }]);

  step("phoenix client from http://good.example joins and sees itself");
  const socket = new Socket(input.ws, { transport: withOrigin("http://good.example"), params: { token: input.tokens.alice } });
  socket.connect();
  const j = await joinWithPresence(socket, "room:origin", { tab_id: "t1" });
  assert.equal(j.status, "ok", JSON.stringify(j.response));
  await untilPresence(j.presence, (p) => presenceMap(p).alice?.length === 1, 5000, "alice sees herself");

  assert.equal(await metric(input, 'roster_refused_origins_total'), 3);
});
