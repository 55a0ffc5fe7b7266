#!/usr/bin/env node
// An H.264 clip on the study page, in headless Chromium.
//
//   node tests/viewer/video.mjs --base http://127.0.0.1:8042 --user U \
//        --password P --study UID [--screenshot out.png] [--chromium PATH]
//
// Logs in, opens the study page, presses "Play video" and waits until the
// browser's own player has decoded frames and played past 0.5 s. Prints
// JSON: {"placeholder", "width", "height", "duration", "played", "paused"}.
// Exit 0 when every step ran (the caller checks what was seen), 1 on a
// failure, 2 on bad usage.

import { chromium, options } from './driver.mjs';

const opts = options('video.mjs', ['base', 'user', 'password', 'study']);
const seen = {};
const browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args: ['--no-sandbox'] });
const page = await browser.newPage();
let failed = false;
try {
  await page.goto(`${opts.base}/login`);
  await page.fill('#name', opts.user);
  await page.fill('#password', opts.password);
  await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.click('button[type=submit]')]);
  await page.goto(`${opts.base}/study/${encodeURIComponent(opts.study)}`);
  await page.waitForSelector('body[data-ready=true]', { timeout: 15000 });
  await page.waitForSelector('.thumb-video', { timeout: 15000 });
  seen.placeholder = true;
  await page.click('text=Play video');
  await page.waitForFunction(
    () => {
      const v = document.getElementById('video');
      return v.readyState >= 2 && v.currentTime > 0.5;
    },
    null,
    { timeout: 20000 },
  );
  Object.assign(
    seen,
    await page.$eval('#video', (v) => ({
      width: v.videoWidth,
      height: v.videoHeight,
      duration: v.duration,
      played: v.currentTime,
      error: v.error && v.error.message,
    })),
  );
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
  await page.click('#video-close');
  seen.closed = await page.isHidden('#video-player');
} catch (e) {
  failed = true;
  seen.failure = String(e);
  seen.at = page.url();
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
process.exit(failed ? 1 : 0);
