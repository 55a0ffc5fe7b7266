#!/usr/bin/env node
// The slide page in headless Chromium.
//
//   node tests/viewer/slide.mjs --base http://127.0.0.1:8042 --user U --password P \
//        --study UID --series UID --level0 SOP_UID [--screenshot out.png] [--chromium PATH]
//
// Opens /slide/{study}/{series} without a session (sent to the login page),
// logs in, waits for the slide to show tissue, zooms in twice at the centre
// and waits for the tiles. Prints JSON of what it saw: {"login_redirect",
// "tissue": [before, after] (share of stained pixels in the slide's area),
// "zooms", "pixel_requests" (every request for pixels that is not a
// /frames/ tile by the viewer: whole instances or rendered images), "level0_frames" (the full-resolution frames fetched after the
// zooms), "label", "overview" (natural sizes), "ohif": {frames, tissue}
// (OHIF's microscopy mode on the same study), "errors"}. Exit 0 when every
// step ran (the caller checks what was seen), 1 on a failure, 2 on bad usage.

import { chromium, options } from './driver.mjs';

const opts = options('slide.mjs', ['base', 'user', 'password', 'study', 'series', 'level0']);

const seen = { errors: [] };
const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  args: ['--no-sandbox', '--use-gl=swiftshader', '--enable-unsafe-swiftshader'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const requests = [];
page.on('request', (r) => requests.push({ url: r.url(), at: Date.now(), type: r.resourceType() }));
page.on('pageerror', (e) => seen.errors.push(String(e)));
page.on('console', (m) => {
  if (m.type() === 'error') seen.errors.push(m.text().slice(0, 300));
});
page.on('response', (r) => {
  if (r.status() >= 400) seen.errors.push(`${r.status()} ${r.url()}`);
});

/// Share of the slide area's pixels that are stained (pink or purple),
/// read from a screenshot, so WebGL and 2D canvases count alike.
async function tissue() {
  return stained(await page.locator('#slide').screenshot());
}

async function stained(png) {
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    let stained = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i] - px[i + 1] > 40) stained += 1;
    return stained / (px.length / 4);
  }, png.toString('base64'));
}

/// Wait until no tile has been asked for during `quiet` ms.
async function tilesSettled(quiet = 1500) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const last = requests.filter((r) => r.url.includes('/frames/')).map((r) => r.at);
    const newest = last.length ? Math.max(...last) : 0;
    if (Date.now() - newest > quiet) return;
    if (Date.now() > deadline) throw new Error('tiles never settled');
    await page.waitForTimeout(250);
  }
}

let failed = false;
try {
  const slide = `/slide/${opts.study}/${opts.series}`;
  await page.goto(`${opts.base}${slide}`);
  seen.login_redirect = new URL(page.url()).pathname;
  await page.fill('#name', opts.user);
  await page.fill('#password', opts.password);
  await Promise.all([page.waitForURL((u) => u.pathname === slide), page.click('button[type=submit]')]);
  await page.waitForSelector('body[data-ready=true]', { timeout: 20000 });
  await page.waitForFunction(() => document.querySelector('#slide canvas'), null, { timeout: 20000 });
  await tilesSettled();
  const before = await tissue();
  seen.zooms = [await page.evaluate(() => window.slideViewer.getMap().getView().getZoom())];
  const mark = Date.now();
  for (let i = 0; i < 2; i += 1) {
    await page.evaluate(() => {
      const view = window.slideViewer.getMap().getView();
      view.setZoom(view.getZoom() + 1);
    });
    await page.waitForTimeout(300);
    await tilesSettled();
    seen.zooms.push(await page.evaluate(() => window.slideViewer.getMap().getView().getZoom()));
  }
  seen.tissue = [before, await tissue()];
  const level0 = new Set();
  for (const r of requests.filter((q) => q.at >= mark)) {
    const m = r.url.match(/\/instances\/([0-9.]+)\/frames\/([0-9,]+)/);
    if (m && m[1] === opts.level0) m[2].split(',').forEach((n) => level0.add(Number(n)));
  }
  seen.level0_frames = [...level0].sort((a, b) => a - b);
  // The label and overview are <img> elements; the viewer's own reads are not.
  seen.pixel_requests = requests
    .filter((r) => r.type !== 'image')
    .map((r) => new URL(r.url).pathname)
    .filter((p) => p.startsWith('/dicom-web/'))
    .filter((p) => !p.includes('/frames/') && !p.endsWith('/metadata') && !p.includes('/bulk/'))
    .filter((p) => /\/instances\/[0-9.]+(\/rendered)?$/.test(p));
  seen.label = await page.$eval('#label', (i) => [i.naturalWidth, i.naturalHeight]);
  seen.overview = await page.$eval('#overview', (i) => [i.naturalWidth, i.naturalHeight]);
  seen.problem = await page.$eval('#problem', (p) => (p.hidden ? '' : p.textContent));
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot });

  // OHIF's own microscopy mode, in the same session.
  const ohifFrom = Date.now();
  await page.goto(`${opts.base}/viewer/microscopy?StudyInstanceUIDs=${opts.study}`);
  await page.waitForFunction(() => document.querySelector('.ol-viewport canvas, canvas'), null, { timeout: 30000 });
  await page.waitForTimeout(1000);
  await tilesSettled();
  const ohifShot = await page.screenshot();
  seen.ohif = {
    frames: requests.filter((r) => r.at >= ohifFrom && r.url.includes('/frames/')).length,
    tissue: await stained(ohifShot),
  };
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot.replace(/\.png$/, '-ohif.png') });
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
