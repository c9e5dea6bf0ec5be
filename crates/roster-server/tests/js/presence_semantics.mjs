// The pages' presence code (src/assets/roster.js) against phoenix.js's Presence: the same
// presence_state and presence_diff sequences, random but seeded, must give the same list and
// the same onJoin/onLeave calls after every step, directly (syncState/syncDiff) and through
// the Presence classes with their pending-diff logic (diffs that arrive before the state of
// the current join wait for it). Prints `ok`; on a difference, the seed, step and both sides.
//
//   node presence_semantics.mjs [runs] [first_seed]

import { Presence as PhxPresence } from "phoenix";
import { syncState, syncDiff, Presence } from "../../src/assets/roster.js";

const runs = Number(process.argv[2] ?? 300);
const firstSeed = Number(process.argv[3] ?? 1);
const KEYS = ["1", "2", "42", "alice", "bob", "anonymous", "zoë"];

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A server's view of one topic, and the frames a client of it receives. */
function workload(seed, steps) {
  const random = rng(seed);
  const pick = (xs) => xs[Math.floor(random() * xs.length)];
  const truth = new Map(); // key -> [meta]
  let ref = 0;
  const meta = (key) => ({ phx_ref: `r${++ref}`, tab_id: `t${ref}`, name: key, online_at: ref });
  const snapshot = () => Object.fromEntries([...truth].filter(([, m]) => m.length).map(([k, m]) => [k, { metas: m.map((x) => ({ ...x })) }]));
  const frames = [];
  let joinRef = 1;
  frames.push({ joinRef, event: "presence_state", payload: snapshot() });
  for (let i = 0; i < steps; i++) {
    const roll = random();
    if (roll < 0.08) {
      // A rejoin (new join_ref): diffs of the new join may arrive before its state.
      joinRef += 1;
      const early = random() < 0.5;
      const diff = { joins: {}, leaves: {} };
      const key = pick(KEYS);
      const m = meta(key);
      truth.set(key, [...(truth.get(key) ?? []), m]);
      diff.joins[key] = { metas: [m] };
      if (early) frames.push({ joinRef, event: "presence_diff", payload: diff });
      frames.push({ joinRef, event: "presence_state", payload: snapshot() });
      if (!early) frames.push({ joinRef, event: "presence_diff", payload: diff });
      continue;
    }
    if (roll < 0.15) {
      // A resync: a whole state on the same join (a node's list after a snapshot).
      frames.push({ joinRef, event: "presence_state", payload: snapshot() });
      continue;
    }
    const diff = { joins: {}, leaves: {} };
    const changes = 1 + Math.floor(random() * 4);
    for (let c = 0; c < changes; c++) {
      const key = pick(KEYS);
      const metas = truth.get(key) ?? [];
      const r = random();
      if (r < 0.45 || metas.length === 0) {
        const m = meta(key);
        truth.set(key, [...metas, m]);
        (diff.joins[key] ??= { metas: [] }).metas.push(m);
      } else if (r < 0.8) {
        const gone = pick(metas);
        truth.set(key, metas.filter((x) => x !== gone));
        (diff.leaves[key] ??= { metas: [] }).metas.push(gone);
      } else if (r < 0.9) {
        // An update: the old meta leaves and a new one joins in the same diff.
        const gone = pick(metas);
        const m = { ...meta(key), name: `${key}!` };
        truth.set(key, [...metas.filter((x) => x !== gone), m]);
        (diff.leaves[key] ??= { metas: [] }).metas.push(gone);
        (diff.joins[key] ??= { metas: [] }).metas.push(m);
      } else {
        // Noise a client must tolerate: a leave of a key it does not have.
        (diff.leaves[`ghost${c}`] ??= { metas: [] }).metas.push({ phx_ref: `g${ref}` });
      }
    }
    frames.push({ joinRef, event: "presence_diff", payload: diff });
  }
  return frames;
}

/** A channel stand-in that both Presence classes accept. */
function fakeChannel() {
  const handlers = new Map();
  const ch = {
    current: null,
    on: (event, cb) => handlers.set(event, cb),
    deliver: (event, payload) => handlers.get(event)?.(JSON.parse(JSON.stringify(payload))),
  };
  return ch;
}

const show = (state) => JSON.stringify(state);
let compared = 0;

function fail(seed, step, what, theirs, ours) {
  console.error(`seed ${seed}, step ${step}: ${what} differ\nphoenix.js: ${theirs}\nroster.js:  ${ours}`);
  process.exit(1);
}

for (let seed = firstSeed; seed < firstSeed + runs; seed++) {
  const frames = workload(seed, 60);

  // 1. The functions, one frame at a time (a client that always has the current join).
  let theirs = {};
  let ours = {};
  frames.forEach((f, step) => {
    const calls = [[], []];
    const record = (i, kind) => (key, a, b) => calls[i].push(JSON.stringify([kind, key, a ?? null, b]));
    // Each gets its own copy: phoenix.js's syncState writes into the state it is given.
    const [forThem, forUs] = [structuredClone(f.payload), structuredClone(f.payload)];
    if (f.event === "presence_state") {
      theirs = PhxPresence.syncState(theirs, forThem, record(0, "join"), record(0, "leave"));
      ours = syncState(ours, forUs, record(1, "join"), record(1, "leave"));
    } else {
      theirs = PhxPresence.syncDiff(theirs, forThem, record(0, "join"), record(0, "leave"));
      ours = syncDiff(ours, forUs, record(1, "join"), record(1, "leave"));
    }
    if (show(theirs) !== show(ours)) fail(seed, step, "lists", show(theirs), show(ours));
    if (calls[0].join("\n") !== calls[1].join("\n")) fail(seed, step, "callbacks", calls[0].join("\n"), calls[1].join("\n"));
    compared += 1;
  });

  // 2. The classes, with joins changing under them.
  const phxChannel = fakeChannel();
  const ourChannel = fakeChannel();
  phxChannel.joinRef = () => phxChannel.current;
  const phx = new PhxPresence(phxChannel);
  const mine = new Presence(ourChannel);
  const syncs = [0, 0];
  phx.onSync(() => (syncs[0] += 1));
  mine.onSync(() => (syncs[1] += 1));
  frames.forEach((f, step) => {
    phxChannel.current = String(f.joinRef);
    ourChannel.joinRef = String(f.joinRef);
    phxChannel.deliver(f.event, f.payload);
    ourChannel.deliver(f.event, f.payload);
    const [a, b] = [show(phx.list((k, p) => [k, p])), show(mine.list((k, p) => [k, p]))];
    if (a !== b) fail(seed, step, "Presence lists", a, b);
    if (syncs[0] !== syncs[1]) fail(seed, step, "onSync counts", String(syncs[0]), String(syncs[1]));
    compared += 1;
  });
}

console.error(`${runs} seeds from ${firstSeed}: ${compared} steps agree`);
console.log("ok");
