// Proves the npm install works: phoenix and ws import, and a Socket built the way
// client.mjs builds it speaks serializer 2.0.0. Prints `ok`; needs no server.

import { Socket } from "phoenix";
import WebSocket from "ws";

const socket = new Socket("ws://127.0.0.1:1/socket", { transport: WebSocket });
const url = socket.endPointURL();
if (typeof WebSocket !== "function" || !url.includes("vsn=2.0.0")) {
  console.error(`unexpected phoenix/ws setup: ${url}`);
  process.exit(1);
}
console.log("ok");
