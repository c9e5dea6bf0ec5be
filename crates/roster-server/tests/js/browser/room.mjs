// Two signed-in users and one anonymous viewer in one room: every page shows two rows and
// `Anonymous: 1`; the viewer's send box is disabled, a user's message reaches the others.
import { launch, screenshot, waitRoom, waitJoined, waitText, members, assertOnlyOrigin, log, scenario } from "./chromium.mjs";

scenario(async ({ http, screenshots }) => {
  const browser = await launch();
  try {
    const room = `${http}/?topic=room:lobby`;
    const alice = await browser.page(`${room}&user=alice&name=Alice`);
    const bob = await browser.page(`${room}&user=bob&name=Bob`);
    const viewer = await browser.page(room);
    const rows = [
      { user: "alice", tabs: 1 },
      { user: "bob", tabs: 1 },
    ];
    for (const page of [alice, bob, viewer]) await waitRoom(page, rows, 1);
    log("every page shows alice and bob, and Anonymous: 1");
    const shown = await members(viewer);
    if (shown[0].name !== "Alice" || shown[1].name !== "Bob" || !shown.every((r) => r.node === "n1")) {
      throw new Error(`rows show the wrong names or nodes: ${JSON.stringify(shown)}`);
    }

    await waitJoined(viewer);
    const viewerCanWrite = await viewer.evaluate(() => !document.getElementById("send-input").disabled);
    if (viewerCanWrite) throw new Error("the anonymous viewer's send box is enabled");
    await waitText(viewer, "#send-hint", "read-only");
    await waitJoined(alice);
    await alice.waitForFunction(() => !document.getElementById("send-input").disabled);
    log("the viewer cannot write; alice can");

    await alice.fill("#send-input", "hello from alice");
    await alice.click("#send-button");
    await waitText(bob, "#messages", "hello from alice");
    await waitText(viewer, "#messages", "hello from alice");
    log("alice's message reached bob and the viewer");

    // The count, not the number of metas: a second viewer makes it 2, its leaving 1 again.
    const second = await browser.page(room);
    for (const page of [alice, viewer]) await waitRoom(page, rows, 2);
    await second.close();
    for (const page of [alice, viewer]) await waitRoom(page, rows, 1);
    log("a second viewer counts 2, and 1 again once it left");

    await screenshot(alice, screenshots, "room-alice");
    await screenshot(viewer, screenshots, "room-anonymous");
    assertOnlyOrigin(browser.requests, http);
  } finally {
    await browser.close();
  }
});
