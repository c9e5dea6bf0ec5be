// One tab per user in a `takeover` room: alice's second tab takes the slot and the first shows
// `Logged in elsewhere`; an admin (exempt) keeps both tabs.
import { launch, screenshot, waitRoom, waitJoined, waitText, log, scenario } from "./chromium.mjs";

scenario(async ({ http, screenshots }) => {
  const browser = await launch();
  try {
    const room = `${http}/?topic=room:lobby`;
    const first = await browser.page(`${room}&user=alice`);
    await waitJoined(first);
    await waitRoom(first, [{ user: "alice", tabs: 1 }], 0);
    const second = await browser.page(`${room}&user=alice`);
    await waitJoined(second);
    await waitText(first, "#notice-text", "Logged in elsewhere");
    if (await first.evaluate(() => !document.getElementById("send-input").disabled)) {
      throw new Error("the tab that lost its slot can still write");
    }
    await waitRoom(second, [{ user: "alice", tabs: 1 }], 0);
    const noticeShown = await second.evaluate(() => !document.getElementById("notice").hidden);
    if (noticeShown) throw new Error("the new tab shows a notice");
    log("the first tab says Logged in elsewhere; the second holds the slot");
    await screenshot(first, screenshots, "takeover-first-tab");

    const admin1 = await browser.page(`${room}&user=root&role=admin`);
    await waitJoined(admin1);
    const admin2 = await browser.page(`${room}&user=root&role=admin`);
    await waitJoined(admin2);
    const rows = [
      { user: "alice", tabs: 1 },
      { user: "root", tabs: 2 },
    ];
    for (const page of [admin1, admin2, second]) await waitRoom(page, rows, 0);
    const adminNotice = await admin1.evaluate(() => document.getElementById("notice").hidden);
    if (!adminNotice) throw new Error("an exempt admin's first tab was shown a notice");
    log("an admin keeps two tabs");
  } finally {
    await browser.close();
  }
});
