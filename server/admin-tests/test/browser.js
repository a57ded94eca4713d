// Debian's Chromium (/usr/bin/chromium, or CHROMIUM_PATH), headless, driven by
// playwright-core; never a downloaded browser. Without Chromium the test fails in CI
// (CI=true or TETHER_REQUIRE_ROOT=1) and is skipped elsewhere, saying how to install it.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Why the browser test cannot run here, or null when it can. */
export function missingBrowser() {
  if (existsSync(CHROMIUM)) return null;
  const why = `no Chromium at ${CHROMIUM}: apt-get install -y chromium`;
  if (process.env.CI === 'true' || process.env.TETHER_REQUIRE_ROOT === '1') throw new Error(why);
  return why;
}

/**
 * A fresh browser context with its own new profile directory (playwright passes it as
 * --user-data-dir); `close()` removes both.
 */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'tether-admin-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
