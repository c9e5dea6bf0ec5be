// A refresh within reserve_ms resumes (the tab_id lives in sessionStorage); a duplicated tab,
// which copies sessionStorage, is told apart over BroadcastChannel and mints a fresh tab_id.
import { launch, waitRoom, waitJoined, waitText, log, scenario } from "./chromium.mjs";

scenario(async ({ http }) => {
  const browser = await launch();
  try {
    const room = `${http}/?topic=room:lobby`;
    const bob = await browser.page(`${room}&user=bob`);
    const alice = await browser.page(`${room}&user=alice`);
    await waitJoined(alice);
    const tabId = await alice.evaluate(() => document.body.dataset.tabId);
    const token = await alice.evaluate(() => document.getElementById("slot-token").textContent);

    await alice.reload();
    await waitJoined(alice);
    const after = await alice.evaluate(() => document.body.dataset.tabId);
    if (after !== tabId) throw new Error(`the refreshed tab has a new tab_id ${after}, not ${tabId}`);
    if (!(await alice.evaluate(() => document.getElementById("notice").hidden))) {
      throw new Error("the refreshed tab shows a notice");
    }
    const rows = [
      { user: "alice", tabs: 1 },
      { user: "bob", tabs: 1 },
    ];
    await waitRoom(alice, rows, 0);
    await waitRoom(bob, rows, 0);
    const newToken = await alice.evaluate(() => document.getElementById("slot-token").textContent);
    log(`the refreshed tab resumed with its tab_id ${tabId} (slot ${token} -> ${newToken})`);

    // A duplicate: a new page that starts with alice's sessionStorage, as Duplicate Tab does.
    const duplicate = await browser.context.newPage();
    await duplicate.addInitScript((id) => {
      if (!sessionStorage.getItem("roster_tab_id")) sessionStorage.setItem("roster_tab_id", id);
    }, tabId);
    await duplicate.goto(`${room}&user=alice`);
    await waitJoined(duplicate);
    const dupId = await duplicate.evaluate(() => document.body.dataset.tabId);
    if (dupId === tabId) throw new Error("the duplicated tab kept the original's tab_id");
    // A new tab, not a resume: in a takeover room the original is told it lost the slot.
    await waitText(alice, "#notice-text", "Logged in elsewhere");
    log(`the duplicate minted ${dupId} and took over as a second tab`);
  } finally {
    await browser.close();
  }
});
