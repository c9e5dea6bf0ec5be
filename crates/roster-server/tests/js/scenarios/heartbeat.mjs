// Heartbeats are answered at once, exactly as Phoenix answers them, on an anonymous and a
// signed-in socket; a phoenix client heartbeating every 50 ms keeps its socket (it would close
// and reconnect on a missing reply).

import assert from "node:assert/strict";
import { connect, rawSocket, scenario, scenarioInput } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();

  step("raw anonymous socket: heartbeat ref 1");
  const anon = await rawSocket(input.ws);
  anon.send([null, "1", "phoenix", "heartbeat", {}]);
  assert.deepEqual(await anon.next(), [null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }]);

  step("raw signed-in socket: heartbeats ref 7 and ref 8, answered in order");
  const alice = await rawSocket(input.ws, { query: { token: input.tokens.alice } });
  alice.send([null, "7", "phoenix", "heartbeat", {}]);
  alice.send([null, "8", "phoenix", "heartbeat", {}]);
  assert.deepEqual(await alice.next(), [null, "7", "phoenix", "phx_reply", { status: "ok", response: {} }]);
  assert.deepEqual(await alice.next(), [null, "8", "phoenix", "phx_reply", { status: "ok", response: {} }]);

  step("phoenix client heartbeating every 50 ms: 5 replies, no close");
  const closes = [];
  const socket = connect(input.ws, { token: input.tokens.alice }, { heartbeatIntervalMs: 50 });
  socket.onClose((e) => closes.push(e.code));
  let replies = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${replies} heartbeat replies`)), 5000);
    socket.onMessage(({ topic, event, payload }) => {
      if (topic === "phoenix" && event === "phx_reply") {
        assert.deepEqual(payload, { status: "ok", response: {} });
        if (++replies === 5) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
  });
  assert.deepEqual(closes, []);
  assert.ok(socket.isConnected());
});
