#!/usr/bin/env node
// The study browser at `/` and the study page in headless Chromium.
//
//   node tests/viewer/browser.mjs --base http://127.0.0.1:8042 --user U \
//        --password P --download study.zip [--screenshot out.png] [--chromium PATH]
//
// Opens `/` without a session (sent to the login page), logs in, types a
// search, filters by modality, sorts by date, reopens the page from its
// own URL; then searches a report word, opens the study page, downloads
// the study as ZIP, plays its clip and its time-lapse, copies its link and
// opens it in the viewer; last, the search and the study page on a
// tablet, upright and on its side. Prints JSON of what it saw at each step:
// {"login_redirect", "typed": {rows, count, url}, "filtered": …,
// "sorted_dates", "reloaded": {search_requests, q, rows}, "study": {…}, "download",
// "cine": {…}, "time_lapse", "opened", "tablet": {portrait, landscape}}. Exit 0 when every step ran (the
// caller checks what was seen), 1 on a failure, 2 on bad usage.

import { chromium, options } from './driver.mjs';

const opts = options('browser.mjs', ['base', 'user', 'password', 'download']);

const seen = {};
const browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args: ['--no-sandbox'] });
const context = await browser.newContext({ acceptDownloads: true });
const page = await context.newPage();
const shot = async (suffix, fullPage = true) => {
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot.replace(/\.png$/, `${suffix}.png`), fullPage });
};
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
  await settle('4 studies');

  await page.fill('#q', 'nguyen');
  const typed = await settle('3 studies');
  seen.typed = { rows: typed.length, names: typed.map((r) => r[0]), url: page.url() };

  await page.check('#modalities input[value=MR]');
  const filtered = await settle('1 study');
  seen.filtered = { rows: filtered.map((r) => r[1]), url: page.url() };

  await page.uncheck('#modalities input[value=MR]');
  await page.fill('#q', '');
  await settle('4 studies');
  await page.click('button.sort');
  await page.waitForFunction(() => location.search.includes('sort=date'));
  await page.waitForTimeout(300);
  seen.sorted_dates = (await rows()).map((r) => r[2]);

  // An address opened anew: the page arrives with its results.
  let searches = 0;
  const countSearches = (r) => {
    if (r.url().includes('/api/v1/search')) searches += 1;
  };
  page.on('request', countSearches);
  await page.goto(`${opts.base}/?q=nguyen&modality=MR`);
  const reloaded = await settle('1 study');
  page.off('request', countSearches);
  seen.reloaded = {
    search_requests: searches,
    q: await page.inputValue('#q'),
    mr_checked: await page.isChecked('#modalities input[value=MR]'),
    rows: reloaded.map((r) => r[1]),
  };
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });

  // A report word finds the study; its row opens the study page.
  await page.goto(`${opts.base}/?q=oberlappen`);
  await settle('1 study');
  await Promise.all([page.waitForURL((u) => u.pathname.startsWith('/study/')), page.click('#results tbody tr')]);
  await page.waitForSelector('body[data-ready=true]', { timeout: 15000 });
  await page.waitForFunction(
    () => [...document.querySelectorAll('#series img')].every((i) => i.complete),
    null,
    { timeout: 15000 },
  );
  const cells = (sel) => page.$$eval(sel, (rows) => rows.map((r) => r.textContent.trim()));
  seen.study = {
    path: new URL(page.url()).pathname,
    patient: await page.textContent('#patient-line'),
    series: await page.locator('#series li').count(),
    thumbnails_painted: await page.$$eval('#series img', (imgs) => imgs.filter((i) => i.naturalWidth > 0).length),
    marks: await cells('#reports mark'),
    workflow: await cells('#workflow tbody tr'),
    others: await page.$$eval('#others tbody tr', (rows) => rows.map((r) => r.children[0].textContent)),
  };
  await page.click('#copy-link');
  await page.waitForFunction(() => document.getElementById('action-status').dataset.link);
  seen.study.link = await page.getAttribute('#action-status', 'data-link');
  await shot('-study');

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  await download.saveAs(opts.download);
  seen.download = download.suggestedFilename();

  // The clip: played, paused, stepped.
  const frame = () => page.$eval('#cine-frame', (f) => Number(f.dataset.index));
  await page.click('text=Play clip');
  await page.waitForFunction(() => document.getElementById('cine-frame').dataset.index === '1');
  seen.cine = { frames: await page.textContent('#cine-frame'), rate: await page.textContent('#cine-rate') };
  await page.click('#cine-play');
  await page.waitForFunction(() => Number(document.getElementById('cine-frame').dataset.index) >= 4, null, {
    timeout: 10000,
  });
  seen.cine.advanced_to = await frame();
  await page.click('#cine-play');
  await page.waitForTimeout(300);
  seen.cine.paused_at = await frame();
  await page.click('#cine-next');
  await page.waitForFunction((was) => Number(document.getElementById('cine-frame').dataset.index) !== was, seen.cine.paused_at);
  seen.cine.stepped = await frame();
  seen.cine.painted = await page.$eval('#cine-canvas', (c) => {
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i] > 200) lit += 1;
    return c.width > 0 && lit > 0;
  });
  await shot('-cine', false);
  await page.click('#cine-close');

  // The time-lapse: each time point with its hours since the first.
  await page.click('text=Play series');
  seen.time_lapse = [];
  for (let k = 1; k <= 3; k += 1) {
    await page.waitForFunction((want) => document.getElementById('cine-frame').dataset.index === String(want), k);
    seen.time_lapse.push(await page.textContent('#cine-time'));
    if (k < 3) await page.click('#cine-next');
  }
  await page.click('#cine-close');

  await Promise.all([page.waitForURL((u) => u.pathname.startsWith('/viewer')), page.click('#open-viewer')]);
  seen.opened = page.url();

  // On a tablet, upright and on its side, with the same session: nothing
  // wider than the screen, every visible control at least 44 px high, and
  // a tap on a result opens the study.
  const session = await context.storageState();
  seen.tablet = {};
  for (const [name, viewport] of [
    ['portrait', { width: 768, height: 1024 }],
    ['landscape', { width: 1024, height: 768 }],
  ]) {
    const tablet = await browser.newContext({ viewport, isMobile: true, hasTouch: true, deviceScaleFactor: 2, storageState: session });
    const tab = await tablet.newPage();
    const measure = () =>
      tab.evaluate(() => ({
        coarse: matchMedia('(pointer:coarse)').matches,
        overflow: document.documentElement.scrollWidth - innerWidth,
        small: [...document.querySelectorAll('button, .button, select, input:not([type=checkbox]), #filters label')]
          .filter((e) => e.offsetParent !== null)
          .map((e) => [e.id || e.textContent.trim().slice(0, 24), Math.round(e.getBoundingClientRect().height)])
          .filter(([, h]) => h < 44),
      }));
    await tab.goto(`${opts.base}/?q=oberlappen`);
    await tab.waitForFunction(() => document.getElementById('count').textContent.startsWith('1 study'), null, { timeout: 15000 });
    const search = await measure();
    await Promise.all([tab.waitForURL((u) => u.pathname.startsWith('/study/')), tab.tap('#results tbody tr')]);
    await tab.waitForSelector('body[data-ready=true]', { timeout: 15000 });
    const study = await measure();
    if (opts.screenshot) await tab.screenshot({ path: opts.screenshot.replace(/\.png$/, `-tablet-${name}.png`), fullPage: true });
    seen.tablet[name] = { search, study, tapped: new URL(tab.url()).pathname };
    await tablet.close();
  }
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
