#!/usr/bin/env node
// The study browser at `/` in headless Chromium.
//
//   node tests/viewer/browser.mjs --base http://127.0.0.1:8042 --user U \
//        --password P [--screenshot out.png] [--chromium PATH]
//
// Opens `/` without a session (sent to the login page), logs in, types a
// search, filters by modality, sorts by date, reopens the page from its
// own URL, and opens a study. Prints JSON of what it saw at each step:
// {"login_redirect", "typed": {rows, count, url}, "filtered": …,
// "sorted_dates", "reloaded": {q, rows}, "opened"}. Exit 0 when every
// step ran (the caller checks what was seen), 1 on a failure, 2 on bad
// usage.

import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', '..', 'web', 'package.json'));
const { chromium } = require('playwright-core');

const opts = { chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, '');
  if (argv[i + 1] === undefined) {
    console.error(`browser.mjs: ${argv[i]} needs a value`);
    process.exit(2);
  }
  opts[key] = argv[i + 1];
}
if (!opts.base || !opts.user || !opts.password) {
  console.error('browser.mjs: --base, --user and --password are required');
  process.exit(2);
}

const seen = {};
const browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args: ['--no-sandbox'] });
const page = await browser.newPage();
const rows = async () =>
  page.$$eval('#results tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
// The rows once the count shows `want` studies.
const settle = async (want) => {
  await page.waitForFunction((w) => document.getElementById('count').textContent.startsWith(w), want, {
    timeout: 15000,
  });
  return rows();
};
let failed = false;
try {
  await page.goto(`${opts.base}/`);
  seen.login_redirect = new URL(page.url()).pathname;
  await page.fill('#name', opts.user);
  await page.fill('#password', opts.password);
  await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.click('button[type=submit]')]);
  await settle('3 studies');

  await page.fill('#q', 'nguyen');
  const typed = await settle('2 studies');
  seen.typed = { rows: typed.length, names: typed.map((r) => r[0]), url: page.url() };

  await page.check('#modalities input[value=MR]');
  const filtered = await settle('1 study');
  seen.filtered = { rows: filtered.map((r) => r[1]), url: page.url() };

  await page.uncheck('#modalities input[value=MR]');
  await page.fill('#q', '');
  await settle('3 studies');
  await page.click('button.sort');
  await page.waitForFunction(() => location.search.includes('sort=date'));
  await page.waitForTimeout(300);
  seen.sorted_dates = (await rows()).map((r) => r[2]);

  await page.goto(`${opts.base}/?q=nguyen&modality=MR`);
  const reloaded = await settle('1 study');
  seen.reloaded = {
    q: await page.inputValue('#q'),
    mr_checked: await page.isChecked('#modalities input[value=MR]'),
    rows: reloaded.map((r) => r[1]),
  };
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });

  await Promise.all([
    page.waitForURL((u) => u.pathname.startsWith('/viewer')),
    page.click('#results tbody tr'),
  ]);
  seen.opened = page.url();
} catch (e) {
  failed = true;
  seen.failure = String(e);
  seen.at = page.url();
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
process.exit(failed ? 1 : 0);
