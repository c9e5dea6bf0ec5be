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
  return {
    context,
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
