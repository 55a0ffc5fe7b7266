#!/usr/bin/env node
// Headless-browser test of the OHIF viewer served by Tessera at /viewer.
//
//   node tests/viewer/viewer.mjs --base http://127.0.0.1:8042 \
//        --study <StudyInstanceUID> [--screenshot out.png] [--timeout 120] \
//        [--user NAME --password PW --token API-TOKEN]
//
// With --user, first checks that /viewer without a session lands on the
// login page, logs in there, and goes on in that session (--token is then
// used for the script's own QIDO query). Opens the study list at /viewer, finds the CT study, launches it in the
// Basic Viewer and waits until the image canvas shows a real image (many
// distinct grey levels, not a blank or flat canvas). Saves a screenshot of the
// page (also on failure) when --screenshot or VIEWER_SCREENSHOT is given.
// Exit code 0 on success; 1 with a message on stderr when the check fails;
// 2 on bad usage or a missing browser/driver.
//
// Needs: playwright-core from web/node_modules (scripts/install-viewer) and
// Debian's chromium at /usr/bin/chromium (or --chromium / CHROMIUM).

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

function usage(msg) {
  if (msg) console.error(`viewer.mjs: ${msg}`);
  console.error(
    'usage: node tests/viewer/viewer.mjs --base URL --study UID [--screenshot PNG] ' +
      '[--timeout SECONDS] [--chromium PATH]'
  );
  process.exit(2);
}

const opts = {
  base: process.env.VIEWER_BASE,
  study: process.env.VIEWER_STUDY,
  screenshot: process.env.VIEWER_SCREENSHOT,
  timeout: Number(process.env.VIEWER_TIMEOUT || 120),
  chromium: process.env.CHROMIUM || '/usr/bin/chromium',
  user: process.env.VIEWER_USER,
  password: process.env.VIEWER_PASSWORD,
  token: process.env.VIEWER_TOKEN,
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const m = /^--(base|study|screenshot|timeout|chromium|user|password|token)(?:=(.*))?$/.exec(a);
  if (!m) usage(`unknown argument ${a}`);
  const v = m[2] ?? argv[++i];
  if (v === undefined) usage(`${a} needs a value`);
  opts[m[1]] = m[1] === 'timeout' ? Number(v) : v;
}
if (!opts.base) usage('--base is required');
if (!opts.study) usage('--study is required');
if (!(opts.timeout > 0)) usage('--timeout must be a positive number of seconds');
if (opts.user && !opts.password) usage('--user needs --password');
const base = opts.base.replace(/\/+$/, '');
const deadline = Date.now() + opts.timeout * 1000;
const remaining = () => Math.max(1000, deadline - Date.now());

let chromium;
try {
  const require = createRequire(path.join(repo, 'web', 'package.json'));
  ({ chromium } = require('playwright-core'));
} catch (e) {
  console.error(`viewer.mjs: playwright-core not installed (run scripts/install-viewer): ${e.message}`);
  process.exit(2);
}
if (!fs.existsSync(opts.chromium)) {
  console.error(`viewer.mjs: no browser at ${opts.chromium} (apt-get install -y chromium)`);
  process.exit(2);
}

const log = (...a) => console.log(`[viewer ${((Date.now() - deadline) / 1000 + opts.timeout).toFixed(1)}s]`, ...a);

class Failure extends Error {}
const fail = msg => {
  throw new Failure(msg);
};

// Diagnostics collected from the page, printed on failure.
const problems = [];
const note = s => {
  if (problems.length < 200) problems.push(s);
};

// QIDO-RS for the study itself, to narrow the study list to its patient.
async function qidoStudy() {
  const url = `${base}/dicom-web/studies?StudyInstanceUID=${encodeURIComponent(opts.study)}`;
  let res;
  try {
    const headers = { Accept: 'application/dicom+json' };
    if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
    res = await fetch(url, { headers });
  } catch (e) {
    fail(`cannot reach ${url}: ${e.cause?.message || e.message}`);
  }
  if (res.status === 204) return null;
  if (!res.ok) fail(`QIDO ${url} answered HTTP ${res.status}`);
  const text = await res.text();
  const list = text.trim() ? JSON.parse(text) : [];
  return list[0] || null;
}
const val = (ds, tag) => ds?.[tag]?.Value?.[0];

// Grey-level statistics of the viewport canvas(es), computed in the page.
async function canvasStats(page) {
  return page.evaluate(() => {
    const out = [];
    const canvases = document.querySelectorAll(
      '[data-viewport-uid] canvas, .viewport-element canvas, canvas.cornerstone-canvas'
    );
    for (const c of new Set(canvases)) {
      if (!c.width || !c.height || !c.offsetParent) continue;
      let data;
      try {
        // Cornerstone3D's viewport canvas is 2D; for a WebGL one, copy it.
        let ctx = c.getContext('2d', { willReadFrequently: true });
        if (!ctx) {
          const tmp = document.createElement('canvas');
          tmp.width = c.width;
          tmp.height = c.height;
          ctx = tmp.getContext('2d');
          ctx.drawImage(c, 0, 0);
        }
        data = ctx.getImageData(0, 0, c.width, c.height).data;
      } catch (e) {
        out.push({ error: String(e), w: c.width, h: c.height });
        continue;
      }
      const hist = new Uint32Array(256);
      let n = 0, sum = 0, sum2 = 0, lit = 0;
      const step = Math.max(1, Math.floor((c.width * c.height) / 250000)) * 4;
      for (let i = 0; i < data.length; i += step) {
        const y = Math.round(0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]);
        hist[y]++;
        n++;
        sum += y;
        sum2 += y * y;
        if (y > 16) lit++;
      }
      const mean = sum / n;
      out.push({
        w: c.width,
        h: c.height,
        levels: hist.filter(h => h > 0).length,
        mean: +mean.toFixed(1),
        std: +Math.sqrt(Math.max(0, sum2 / n - mean * mean)).toFixed(1),
        lit: +(lit / n).toFixed(3),
      });
    }
    return out;
  });
}
// A real image: many grey levels, real contrast, a good part of it not black.
const isImage = s => !s.error && s.levels >= 32 && s.std >= 8 && s.lit >= 0.05;

async function dismissTour(page) {
  const skip = page.locator('.shepherd-element').getByText(/skip/i);
  if (await skip.count()) await skip.first().click().catch(() => {});
}

// Without a session the viewer must send the browser to the login page;
// logging in there must lead back to the viewer.
async function logIn(page) {
  const target = `${base}/viewer/`;
  log(`open ${target} without a session`);
  await page.goto(target, { timeout: remaining() });
  if (!/\/login\?next=/.test(page.url())) fail(`without a session ${target} showed ${page.url()}, not the login page`);
  await page.locator('#name').fill(opts.user);
  await page.locator('#password').fill(opts.password);
  await Promise.all([
    page.waitForURL(/\/viewer\//, { timeout: Math.min(30000, remaining()) }),
    page.getByRole('button', { name: /log in/i }).click(),
  ]).catch(async () => {
    const body = (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ');
    fail(`logging in as ${opts.user} did not lead to the viewer (at ${page.url()}: ${body.slice(0, 200)})`);
  });
  log(`logged in as ${opts.user}, at ${page.url()}`);
}

async function main() {
  const study = await qidoStudy();
  if (!study) fail(`study ${opts.study} is not returned by QIDO-RS ${base}/dicom-web/studies`);
  const modalities = study['00080061']?.Value || [];
  const patientId = val(study, '00100020');
  log(`QIDO: study found, patient id ${JSON.stringify(patientId)}, modalities ${modalities.join('\\') || '?'}`);
  if (modalities.length && !modalities.includes('CT')) {
    fail(`study ${opts.study} has modalities ${modalities.join('\\')}, not CT`);
  }

  const browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: true,
    args: [
      '--no-sandbox', // runs as root in CI
      '--disable-dev-shm-usage',
      // WebGL through SwiftShader: no GPU in headless CI.
      '--use-angle=swiftshader',
      '--enable-unsafe-swiftshader',
      '--ignore-gpu-blocklist',
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(30000);
  // OHIF's first-visit tour would cover the viewport in the screenshot.
  await page.addInitScript(() => {
    try {
      localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
    } catch {}
  });
  page.on('console', m => {
    if (m.type() === 'error') note(`console.error: ${m.text().slice(0, 300)}`);
  });
  page.on('pageerror', e => note(`page error: ${e.message.slice(0, 300)}`));
  page.on('requestfailed', r => note(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', r => {
    if (r.status() >= 400) note(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });

  let stats = [];
  try {
    if (opts.user) await logIn(page);
    // 1. Study list, narrowed to the study's patient and to CT through the
    // list's URL filters (QIDO PatientID=*id* and ModalitiesInStudy=CT). If a
    // filter finds nothing, retry with fewer filters and say so.
    const filters = [];
    if (patientId) filters.push({ modalities: 'CT', mrn: patientId });
    filters.push({ modalities: 'CT' }, {});
    // Data rows carry aria-selected; the filter row does not.
    const rows = page.locator('tr[aria-selected]').filter({
      has: page.locator('td').filter({ hasText: /(^|[\\/,\s])CT($|[\\/,\s])/ }),
    });
    let listUrl;
    let count = 0;
    for (const [i, f] of filters.entries()) {
      listUrl = `${base}/viewer${Object.keys(f).length ? '?' + new URLSearchParams(f) : ''}`;
      log(`open ${listUrl}`);
      const res = await page.goto(listUrl, { timeout: remaining() });
      if (!res || !res.ok()) fail(`GET ${listUrl} answered HTTP ${res?.status()}`);
      const ctype = res.headers()['content-type'] || '';
      if (!ctype.startsWith('text/html')) fail(`GET ${listUrl}: Content-Type ${ctype}, not text/html`);
      try {
        await rows.first().waitFor({ timeout: Math.min(i === filters.length - 1 ? 60000 : 20000, remaining()) });
        await page.waitForTimeout(500); // let the whole page of rows render
        count = await rows.count();
        break;
      } catch {
        const body = (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ');
        if (i === filters.length - 1) {
          fail(`no CT study in the study list at ${listUrl} (page text: ${body.slice(0, 300)})`);
        }
        log(`WARNING: no CT study listed at ${listUrl}; retrying with fewer filters`);
      }
    }
    log(`study list shows ${count} CT stud${count === 1 ? 'y' : 'ies'}`);

    // 2. Launch each candidate in the Basic Viewer until it is our study.
    let opened = false;
    for (let i = 0; i < Math.min(count, 20) && !opened; i++) {
      if (i > 0) {
        await page.goto(listUrl, { timeout: remaining() });
        await rows.nth(i).waitFor({ timeout: remaining() });
      }
      await rows.nth(i).locator('td').first().click();
      const launch = page.getByRole('button', { name: /^Basic Viewer$/ });
      await launch.waitFor({ timeout: Math.min(30000, remaining()) }).catch(() =>
        fail('selected the study, but no "Basic Viewer" launch button appeared')
      );
      if (await launch.isDisabled()) fail('"Basic Viewer" is disabled for the selected CT study');
      await launch.click();
      await page.waitForURL(/\/viewer\/viewer\?/, { timeout: Math.min(30000, remaining()) });
      const uids = new URL(page.url()).searchParams.get('StudyInstanceUIDs') || '';
      log(`launched ${page.url()}`);
      opened = uids.split(',').includes(opts.study);
    }
    if (!opened) fail(`none of the CT studies in the study list is ${opts.study}`);

    // 3. Wait for a real image in the viewport canvas.
    await dismissTour(page);
    for (;;) {
      stats = await canvasStats(page);
      if (stats.some(isImage)) break;
      if (Date.now() > deadline) {
        fail(
          `the viewport shows no image within ${opts.timeout}s: canvas stats ${JSON.stringify(stats)} ` +
            '(need >= 32 grey levels, std >= 8, >= 5% non-black pixels)'
        );
      }
      await page.waitForTimeout(500);
      await dismissTour(page);
    }
    log(`image rendered: ${JSON.stringify(stats.find(isImage))}`);
    // Let overlays and thumbnails settle for the screenshot.
    await page.waitForTimeout(1000);
  } finally {
    if (opts.screenshot) {
      fs.mkdirSync(path.dirname(path.resolve(opts.screenshot)), { recursive: true });
      await page.screenshot({ path: opts.screenshot }).catch(e => note(`screenshot failed: ${e.message}`));
      log(`screenshot ${opts.screenshot}`);
    }
    await browser.close();
  }
}

try {
  await main();
  console.log(`viewer test passed: study ${opts.study} rendered at ${base}/viewer`);
  process.exit(0);
} catch (e) {
  const msg = e instanceof Failure ? e.message : `${e.name}: ${e.message.split('\n')[0]}`;
  console.error(`viewer test FAILED: ${msg}`);
  if (problems.length) {
    console.error(`browser-side problems (${problems.length}):`);
    for (const p of problems.slice(0, 40)) console.error(`  ${p}`);
  }
  process.exit(1);
}
