// The operational endpoints of a lone node: /health 200, /ready 200 for anyone; /cluster and
// /metrics only with the API key (401 without it, or with another key): /cluster JSON with the
// node's name, `ready` and its leases (a lone node holds every partition), /metrics as
// Prometheus text.

import assert from "node:assert/strict";
import { api, metric, scenario, scenarioInput } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const get = (path) => api(input, path, { auth: path === "/cluster" || path === "/metrics" });

  step("/cluster and /metrics without the key, or with another: 401, nothing in the body");
  for (const path of ["/cluster", "/metrics"]) {
    const anonymous = await api(input, path, { auth: false });
    assert.deepEqual([anonymous.status, anonymous.json], [401, { reason: "unauthorized" }], `${path}: ${anonymous.text}`);
    const wrong = await api({ ...input, apiKey: "not-the-key" }, path);
    assert.deepEqual([wrong.status, wrong.json], [401, { reason: "unauthorized" }], `${path}: ${wrong.text}`);
  }

  step("/health");
  const health = await get("/health");
  assert.deepEqual([health.status, health.text], [200, "ok"]);

  step("/ready");
  const ready = await get("/ready");
  assert.equal(ready.status, 200, ready.text);

  step("/cluster");
  const cluster = await get("/cluster");
  assert.equal(cluster.status, 200, cluster.text);
  const c = cluster.json;
  assert.equal(c.node, "n1");
  assert.equal(c.ready, true);
  assert.ok(Array.isArray(c.leases), cluster.text);
  assert.equal(c.leases.length, 256, "a lone node holds all 256 partitions");
  assert.equal(c.partitions_held, 256);
  assert.deepEqual(c.leases.map((l) => l.partition).sort((x, y) => x - y), Array.from({ length: 256 }, (_, i) => i));
  for (const l of c.leases) {
    assert.ok(Number.isInteger(l.epoch) && l.epoch > 0, JSON.stringify(l));
    assert.ok(l.expires_in_ms > 0, JSON.stringify(l));
  }
  assert.ok(c.incarnation !== undefined && c.incarnation !== null, cluster.text);

  step("/metrics");
  const metrics = await get("/metrics");
  assert.equal(metrics.status, 200);
  for (const name of ["roster_sockets", "roster_joins_total", "roster_slow_clients_closed_total", "roster_presence_entries"]) {
    assert.ok(metrics.text.split("\n").some((l) => l.startsWith(`${name} `)), `${name} in:\n${metrics.text}`);
  }
  // This scrape's own connection is open while it is answered.
  assert.ok((await metric(input, "roster_connections")) >= 1, "roster_connections counts open connections");
});
