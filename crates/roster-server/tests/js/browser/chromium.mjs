// Headless Chromium for the browser tests: Debian's `chromium` (installed by
// scripts/browser-deps.sh), driven by playwright-core, which never downloads a browser.
//
// Every launch gets a fresh profile (--user-data-dir) and the flags that keep Chromium from
// opening connections of its own (without them, its background requests crowd the machine's
// loopback and its connections are refused many at a time).

import { chromium } from "playwright-core";
import { mkdtemp, rm, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM = process.env.ROSTER_CHROMIUM || "/usr/bin/chromium";

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A browser with a fresh profile; `close()` ends it and removes the profile. */
export async function launch() {
  const profile = await mkdtemp(join(tmpdir(), "roster-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1100, height: 760 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(15_000);
  // Every URL any page asked for: the pages must load nothing from another origin.
  const requests = [];
  context.on("request", (r) => requests.push(r.url()));
  return {
    context,
    requests,
    async page(url) {
      const page = await context.newPage();
      page.on("console", (m) => m.type() === "error" && log(`console error on ${page.url()}: ${m.text()}`));
      page.on("pageerror", (e) => log(`page error on ${page.url()}: ${e.message}`));
      if (url) await page.goto(url);
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      await rm(profile, { recursive: true, force: true }).catch(() => {});
    },
  };
}

/** Fail unless every request went to `origins` (one or a list: the pages are built in, no CDN). */
export function assertOnlyOrigin(requests, origins) {
  const own = [origins].flat().map((o) => o + "/");
  const foreign = requests.filter((u) => !own.some((o) => u.startsWith(o)) && !u.startsWith("data:"));
  if (foreign.length > 0) throw new Error(`requests to other origins: ${foreign.join(", ")}`);
  if (requests.length === 0) throw new Error("no request recorded");
}

/** Wait until `page`'s element `selector` has text containing `text`; returns that text. */
export async function waitText(page, selector, text) {
  try {
    await page.waitForFunction(
      ([s, t]) => document.querySelector(s)?.textContent.includes(t),
      [selector, text],
    );
  } catch (e) {
    const now = await page.evaluate((s) => document.querySelector(s)?.textContent, selector).catch(() => "?");
    throw new Error(`${page.url()}: ${selector} never contained ${JSON.stringify(text)} (it has ${JSON.stringify(now)})`);
  }
  return page.evaluate((s) => document.querySelector(s).textContent, selector);
}

/** The demo page's member rows: [{user, name, tabs, node}]. */
export function members(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll("#members tr.member")].map((tr) => ({
      user: tr.querySelector(".user").textContent,
      name: tr.querySelector(".name").textContent,
      tabs: Number(tr.querySelector(".tabs").textContent),
      node: tr.querySelector(".node").textContent,
    })),
  );
}

/** Wait until the demo page shows exactly `rows` member rows (as `members` returns them,
 * compared by user and tabs) and the line `Anonymous: N`. */
export async function waitRoom(page, rows, anonymous) {
  const want = JSON.stringify(rows.map((r) => [r.user, r.tabs]));
  try {
    await page.waitForFunction(
      ([w, a]) => {
        const got = [...document.querySelectorAll("#members tr.member")].map((tr) => [
          tr.querySelector(".user").textContent,
          Number(tr.querySelector(".tabs").textContent),
        ]);
        return JSON.stringify(got) === w && document.getElementById("anonymous").textContent === `Anonymous: ${a}`;
      },
      [want, anonymous],
    );
  } catch {
    const got = await members(page);
    const anon = await page.evaluate(() => document.getElementById("anonymous").textContent);
    throw new Error(`${page.url()}: wanted rows ${want} and "Anonymous: ${anonymous}", the page shows ${JSON.stringify(got)} and "${anon}"`);
  }
}

/** Wait until the demo page's join was answered `status` (ok or error). */
export async function waitJoined(page, status = "ok") {
  await page.waitForFunction((s) => document.body.dataset.joined === s, status);
}

/** Save a screenshot of `page` as `<dir>/<name>.png`. */
export async function screenshot(page, dir, name) {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
  return path;
}

/** A step, on stderr (shown by the Rust test with --nocapture, and on failure). */
export function log(...args) {
  console.error(`[${(performance.now() / 1000).toFixed(2)}s]`, ...args);
}

/** Ask the Rust test to do something (`@@ <request>` on stdout) and wait for its answer line. */
export async function ask(request) {
  console.log(`@@ ${request}`);
  const { createInterface } = await import("node:readline");
  ask.lines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const { value, done } = await ask.lines.next();
  if (done) throw new Error(`no answer to ${request}`);
  return value;
}

/** Run `body(input)` with the JSON input of argv[2]; print `ok` on success, exit 1 on failure. */
export async function scenario(body) {
  const input = JSON.parse(process.argv[2] ?? "{}");
  const watchdog = setTimeout(() => {
    log("scenario timed out");
    process.exit(2);
  }, input.timeoutMs ?? 90_000);
  try {
    await body(input);
    clearTimeout(watchdog);
    console.log("ok");
    process.exit(0);
  } catch (e) {
    log(`FAILED: ${e.stack ?? e}`);
    process.exit(1);
  }
}
