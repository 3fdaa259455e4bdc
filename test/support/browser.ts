import { chromium, type Browser, type BrowserContext } from 'playwright-core';

/** Debian's chromium, driven by playwright-core (which downloads no browser of its own). */
const CHROMIUM = '/usr/bin/chromium';

/** Headless Chromium that makes no requests of its own (no updates, sync or safe-browsing look-ups). */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-default-apps',
      '--disable-sync',
      '--no-first-run',
      ...extraArgs,
    ],
  });
}

export interface PageLog {
  /** every URL the context's pages requested, in order */
  requests: string[];
  /** console errors and uncaught exceptions */
  errors: string[];
}

/** Records what a browser context asks for and complains about, so a test can assert both. */
export function watchContext(context: BrowserContext): PageLog {
  const log: PageLog = { requests: [], errors: [] };
  context.on('request', (r) => log.requests.push(r.url()));
  context.on('console', (m) => {
    if (m.type() === 'error') log.errors.push(m.text());
  });
  context.on('weberror', (e) => log.errors.push(String(e.error())));
  return log;
}
