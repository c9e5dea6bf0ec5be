// Outside demo mode the dashboard asks for the api_key once, refuses a wrong one, and opens
// with the right one.
import { launch, screenshot, waitText, log, scenario } from "./chromium.mjs";

scenario(async ({ http, apiKey, screenshots }) => {
  const browser = await launch();
  try {
    const dash = await browser.page(`${http}/dashboard`);
    await dash.waitForSelector("#key-form:not([hidden])");
    if (await dash.evaluate(() => !document.getElementById("board").hidden)) throw new Error("the board shows without a key");
    log("the dashboard asks for the api_key");
    await dash.fill("#key-input", "not-the-key");
    await dash.press("#key-input", "Enter");
    await waitText(dash, "#key-error", "refused");
    log("a wrong key is refused");
    await screenshot(dash, screenshots, "dashboard-key");
    await dash.fill("#key-input", apiKey);
    await dash.press("#key-input", "Enter");
    await dash.waitForSelector("#board:not([hidden])");
    await dash.waitForFunction(() => document.querySelector('#nodes tr.node[data-node="n1"] .state')?.textContent === "up");
    log("the right key opens it: n1 is up");
  } finally {
    await browser.close();
  }
});
