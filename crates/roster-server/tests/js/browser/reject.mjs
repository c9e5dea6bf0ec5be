// One tab per user in a `reject` room: alice's second tab is refused and says so
// (`open in another tab`); the first keeps its place.
import { launch, screenshot, waitRoom, waitJoined, waitText, log, scenario } from "./chromium.mjs";

scenario(async ({ http, screenshots }) => {
  const browser = await launch();
  try {
    const call = `${http}/?topic=call:standup&user=alice`;
    const first = await browser.page(call);
    await waitJoined(first);
    const second = await browser.page(call);
    await waitJoined(second, "error");
    await waitText(second, "#notice-text", "open in another tab");
    if (await second.evaluate(() => !document.getElementById("send-input").disabled)) {
      throw new Error("the refused tab can write");
    }
    await waitRoom(first, [{ user: "alice", tabs: 1 }], 0);
    if (!(await first.evaluate(() => document.getElementById("notice").hidden))) {
      throw new Error("the first tab was shown a notice");
    }
    log("the second tab is refused (open in another tab); the first keeps its slot");
    await screenshot(second, screenshots, "reject-second-tab");
  } finally {
    await browser.close();
  }
});
