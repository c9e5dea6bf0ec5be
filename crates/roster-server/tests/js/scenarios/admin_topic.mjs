// The dashboard's admin topic `roster:admin` on the ordinary socket. Outside demo mode
// (input.demo false) the real phoenix client is refused without the api_key and with a
// wrong one, and gets `dashboard` pushes with the right one. In demo mode the pages' own
// client (src/assets/roster.js) joins without a key.
import { Socket } from "phoenix";
import { Socket as PageSocket } from "../../../src/assets/roster.js";
import WebSocket from "ws";

const input = JSON.parse(process.argv[2]);
const step = (s) => console.error(`- ${s}`);
const deadline = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms));

function checkSnapshot(snap) {
  const me = snap.nodes.find((n) => n.self);
  if (snap.node !== "n1" || !me || me.name !== "n1" || me.alive !== true || me.partitions !== snap.ring.length) {
    throw new Error(`unexpected snapshot: ${JSON.stringify(snap).slice(0, 400)}`);
  }
  if (!snap.ring.every((holder) => holder === 0)) throw new Error("a single node holds every partition");
  if (!Array.isArray(snap.history.sockets) || typeof snap.topics.total !== "number" || !Array.isArray(snap.revokes)) {
    throw new Error(`snapshot lacks history, topics or revokes: ${JSON.stringify(snap).slice(0, 400)}`);
  }
}

async function phoenixJoin(socket, payload) {
  const channel = socket.channel("roster:admin", payload);
  const snapshots = [];
  channel.on("dashboard", (s) => snapshots.push(s));
  const reply = await Promise.race([
    new Promise((resolve) => channel.join().receive("ok", (r) => resolve(["ok", r])).receive("error", (r) => resolve(["error", r]))),
    deadline(5000, "join reply"),
  ]);
  if (reply[0] === "error") channel.leave();
  return { reply, snapshots, channel };
}

async function main() {
  if (!input.demo) {
    const socket = new Socket(input.ws, { transport: WebSocket });
    socket.connect();
    for (const payload of [{}, { api_key: "wrong" }]) {
      const { reply } = await phoenixJoin(socket, payload);
      if (reply[0] !== "error" || reply[1].reason !== "unauthorized") throw new Error(`${JSON.stringify(payload)}: ${JSON.stringify(reply)}`);
      step(`join with ${JSON.stringify(payload)}: unauthorized`);
    }
    const { reply, snapshots } = await phoenixJoin(socket, { api_key: input.apiKey });
    if (reply[0] !== "ok") throw new Error(`with the key: ${JSON.stringify(reply)}`);
    const t0 = Date.now();
    while (snapshots.length < 2) {
      if (Date.now() - t0 > 5000) throw new Error(`${snapshots.length} snapshots in 5 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
    snapshots.forEach(checkSnapshot);
    step(`with the key: ${snapshots.length} dashboard pushes, node n1 holds all ${snapshots[0].ring.length} partitions`);
    socket.disconnect();
  } else {
    const socket = new PageSocket(input.ws, { transport: WebSocket });
    const channel = socket.channel("roster:admin", {});
    const got = new Promise((resolve, reject) => {
      channel.onJoinReply((r) => r.status !== "ok" && reject(new Error(JSON.stringify(r))));
      channel.on("dashboard", resolve);
    });
    socket.connect();
    channel.join();
    const snap = await Promise.race([got, deadline(5000, "a dashboard push")]);
    checkSnapshot(snap);
    if (snap.demo !== true) throw new Error("the snapshot does not say demo");
    step("demo mode: the page client joined without a key and got a snapshot");
    socket.disconnect();
  }
  console.log("ok");
  process.exit(0);
}

main().catch((e) => {
  console.error(e.stack ?? String(e));
  process.exit(1);
});
