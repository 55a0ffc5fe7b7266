#!/usr/bin/env node
// Time to first results in the study browser, in headless Chromium.
//
//   node bench/paint.mjs --base http://127.0.0.1:8042 [--runs 20] [--chromium PATH]
//                        [--browser-ui keep]
//
// For each address (the newest studies, a name, a name and a word, as a
// shared link would open them), loads the page --runs times in a fresh tab
// and takes the time from navigation start to the first frame painted
// after the first result row appeared (a MutationObserver, then two
// animation frames). Prints JSON: {address: {p50_ms, p95_ms, runs,
// median_ms, slowest_ms}}, the last two with the moments of a run: the
// page's HTML received, the search request's start and end (absent when
// the page arrived with its results), and the first paint.
// Loopback before the first account is served without a login.
//
// Chromium 156 in headless mode loads its address bar's pop-up, a web page
// of its own (chrome://omnibox-popup), with every new tab: about 100 ms of
// script on the same two cores as the page measured. It is switched off
// unless --browser-ui keep is given, so that the figure is the page's.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'web', 'package.json'));
const { chromium } = require('playwright-core');

const opts = { runs: '20', chromium: '/usr/bin/chromium', 'browser-ui': 'off' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) opts[argv[i].replace(/^--/, '')] = argv[i + 1];
if (!opts.base) {
  console.error('paint.mjs: --base is required');
  process.exit(2);
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const args = ['--no-sandbox'];
if (opts['browser-ui'] !== 'keep') {
  args.push('--disable-features=WebUIOmniboxPopup,WebUIOmniboxFullPopup,WebUIOmniboxAimPopup');
}
const browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args });
const context = await browser.newContext();
await context.addInitScript(() => {
  new MutationObserver((_, observer) => {
    if (document.querySelector('#results tbody tr')) {
      observer.disconnect();
      requestAnimationFrame(() => requestAnimationFrame(() => (window.__painted = performance.now())));
    }
  }).observe(document, { childList: true, subtree: true });
});
const out = {};
for (const address of ['/', '/?q=nguyen', '/?q=muller%20chest']) {
  const times = [];
  const phases = [];
  for (let i = 0; i < Number(opts.runs); i += 1) {
    const page = await context.newPage();
    await page.goto(`${opts.base}${address}`);
    await page.waitForFunction(() => window.__painted !== undefined, null, { timeout: 30000 });
    times.push(await page.evaluate(() => window.__painted));
    phases.push(
      await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const res = (part) => performance.getEntriesByType('resource').find((r) => r.name.includes(part));
        const search = res('/api/v1/search');
        return {
          html: nav.responseEnd,
          search_start: search ? search.startTime : undefined,
          search_end: search ? search.responseEnd : undefined,
          painted: window.__painted,
        };
      }),
    );
    await page.close();
  }
  const median = (key) => Math.round(pct(phases.map((p) => p[key]).filter((v) => v !== undefined), 50));
  const slowest = phases.reduce((a, b) => (b.painted > a.painted ? b : a));
  out[address] = {
    p50_ms: Math.round(pct(times, 50)),
    p95_ms: Math.round(pct(times, 95)),
    runs: times.length,
    // Where the time goes: medians of each moment, and the slowest run's.
    median_ms: Object.fromEntries(['html', 'search_start', 'search_end', 'painted'].map((k) => [k, median(k)])),
    slowest_ms: Object.fromEntries(Object.entries(slowest).map(([k, v]) => [k, v === undefined ? v : Math.round(v)])),
  };
}
await browser.close();
console.log(JSON.stringify(out));
