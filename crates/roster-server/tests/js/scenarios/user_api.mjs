// GET /user?id=U (with `Authorization: Bearer <api_key>`): the user as its home sees it. An
// offline user has no activation and no session; a user with two tabs in a room of a
// max_slots = 2 policy lists both (tab, topic, node, token as the join replies gave them) and
// has one activation; a takeover by a third tab shows in the list; a user who left is offline
// again. Without the key it is 401, without `id` 400.

import assert from "node:assert/strict";
import { api, connect, disconnect, joinChannel, scenario, scenarioInput, waitFor } from "../client.mjs";

scenario(async (step) => {
  const input = scenarioInput();
  const user = (id) => api(input, `/user?id=${encodeURIComponent(id)}`);

  step("without the key: 401; without id: 400");
  const refused = await api(input, "/user?id=carol", { auth: false });
  assert.deepEqual([refused.status, refused.json], [401, { reason: "unauthorized" }]);
  const bad = await api(input, "/user");
  assert.deepEqual([bad.status, bad.json.reason], [400, "bad_request"]);

  step("carol offline: no activation, no session");
  const offline = await user("carol");
  assert.equal(offline.status, 200, offline.text);
  const home = offline.json.home;
  assert.equal(typeof home, "string");
  assert.deepEqual(offline.json, { user: "carol", home, activation: null, handed_over_from: null, sessions: [] });

  step("carol joins room:duo from two tabs (max_slots = 2): both listed, one activation");
  const t1 = connect(input.ws, { token: input.tokens.carol });
  const one = await joinChannel(t1, "room:duo", { tab_id: "tab-1" });
  const t2 = connect(input.ws, { token: input.tokens.carol });
  const two = await joinChannel(t2, "room:duo", { tab_id: "tab-2" });
  assert.equal(one.status, "ok", JSON.stringify(one.response));
  assert.equal(two.status, "ok", JSON.stringify(two.response));
  const both = (await user("carol")).json;
  assert.match(both.activation, /^\d+\.\d+$/);
  const sessions = both.sessions.map((s) => [s.tab_id, s.topic, s.scope, s.node, s.token, s.state, s.in_doubt]);
  assert.deepEqual(sessions.sort(), [
    ["tab-1", "room:duo", "topic:room:duo", home, one.response.slot.token, "held", false],
    ["tab-2", "room:duo", "topic:room:duo", home, two.response.slot.token, "held", false],
  ]);

  step("a third tab takes the oldest over: tab-1 leaves the list, the activation stays");
  const t3 = connect(input.ws, { token: input.tokens.carol });
  const three = await joinChannel(t3, "room:duo", { tab_id: "tab-3" });
  assert.equal(three.status, "ok", JSON.stringify(three.response));
  const after = await waitFor(async () => {
    const v = (await user("carol")).json;
    const tabs = v.sessions.map((s) => s.tab_id).sort().join(",");
    return tabs === "tab-2,tab-3" ? v : null;
  });
  assert.equal(after.activation, both.activation, "one activation through the takeover");

  step("carol closes every tab: offline again");
  await Promise.all([t1, t2, t3].map(disconnect));
  await waitFor(async () => (await user("carol")).json.activation === null);
  assert.deepEqual((await user("carol")).json.sessions, []);
});
