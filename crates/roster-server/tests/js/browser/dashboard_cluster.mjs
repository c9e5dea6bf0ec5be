// The dashboard of a three-node cluster lists its nodes, the presence and revokes it knows,
// and marks a node `down` after the test kills it with SIGKILL.
import { launch, screenshot, waitJoined, waitText, ask, assertOnlyOrigin, log, scenario } from "./chromium.mjs";

const rowsState = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll("#nodes tr.node")].map((tr) => [
      tr.dataset.node,
      tr.querySelector(".state").textContent,
    ]),
  );

async function waitNodes(page, want) {
  const w = JSON.stringify(want);
  try {
    await page.waitForFunction(
      (w) =>
        JSON.stringify(
          [...document.querySelectorAll("#nodes tr.node")].map((tr) => [tr.dataset.node, tr.querySelector(".state").textContent]),
        ) === w,
      w,
    );
  } catch {
    throw new Error(`the dashboard never showed ${w}; it shows ${JSON.stringify(await rowsState(page))}`);
  }
}

scenario(async ({ http, screenshots }) => {
  const [a, b, c] = http;
  const browser = await launch();
  try {
    const dash = await browser.page(`${a}/dashboard`);
    await waitNodes(dash, [["a", "up"], ["b", "up"], ["c", "up"]]);
    log("a's dashboard lists a, b and c, all up");

    // Some presence across the nodes, and a takeover whose revoke a delivers.
    const alice1 = await browser.page(`${a}/?topic=room:lobby&user=alice`);
    await waitJoined(alice1);
    const alice2 = await browser.page(`${b}/?topic=room:lobby&user=alice`);
    await waitJoined(alice2);
    await waitText(alice1, "#notice-text", "Logged in elsewhere");
    const bob = await browser.page(`${c}/?topic=room:lobby&user=bob`);
    await waitJoined(bob);
    const viewer = await browser.page(`${b}/?topic=room:lobby`);
    await waitJoined(viewer);
    await dash.waitForFunction(() => {
      const row = document.querySelector('#topics tr[data-topic="room:lobby"]');
      return row && [...row.children].slice(1).map((td) => td.textContent).join(",") === "2,2,1";
    });
    await waitText(dash, "#revokes", "logged_in_elsewhere");
    log("a's dashboard shows room:lobby with 2 users and 1 anonymous viewer, and alice's revoke");
    await screenshot(dash, screenshots, "dashboard-3-nodes");

    const answer = await ask("kill c");
    if (answer !== "killed") throw new Error(`unexpected answer ${answer}`);
    await waitNodes(dash, [["a", "up"], ["b", "up"], ["c", "down"]]);
    log("c is marked down");
    // c's presence is gone from a's replica (P3): bob no longer counts.
    await dash.waitForFunction(() => {
      const row = document.querySelector('#topics tr[data-topic="room:lobby"]');
      return row && row.children[1].textContent === "1";
    });
    await screenshot(dash, screenshots, "dashboard-node-down");
    assertOnlyOrigin(browser.requests, http);
  } finally {
    await browser.close();
  }
});
