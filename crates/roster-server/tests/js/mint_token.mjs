// Mints a Roster token with Node's standard library only, exactly as docs/protocol.md shows:
// `node mint_token.mjs SECRET USER ROLE EXP` prints the token. The Rust tests check it
// against their own minting and verification.

import { createHmac } from "node:crypto";

const [secret, sub, role, exp] = process.argv.slice(2);
const body = Buffer.from(JSON.stringify({ sub, role, exp: Number(exp) })).toString("base64url");
const sig = createHmac("sha256", secret).update(body).digest("base64url");
console.log(`${body}.${sig}`);
