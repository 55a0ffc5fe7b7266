// The cine player of the study page: the frames of a multi-frame instance
// (ultrasound clips, XA runs, embryo time-lapse), or the instances of a
// series one per time point, played at the rate the objects give.
//
// Frames come from the server as rendered JPEG. Every frame's JPEG is kept
// (small), and a window of frames ahead of the one shown is decoded into
// bitmaps, so playback does not wait on decoding; bitmaps behind the
// window are released, so a long clip does not hold all its pixels.
'use strict';

const Cine = (() => {
  const AHEAD = 24;
  const FETCHES = 4;
  const BLOB_BUDGET = 256 * 1024 * 1024;
  const $ = (id) => document.getElementById(id);

  const value = (meta, tag) => (meta && meta[tag] && meta[tag].Value) || [];
  const first = (meta, tag) => value(meta, tag)[0];
  const number = (meta, tag) => {
    const n = Number(first(meta, tag));
    return Number.isFinite(n) && n > 0 ? n : undefined;
  };

  /// Milliseconds each frame stays, from the attributes PS3.3 C.7.6.5
  /// names, in the order the frame increment pointer asks for.
  function delays(meta, frames) {
    const pointer = String(first(meta, '00280009') || '').toUpperCase();
    const vector = value(meta, '00181065').map(Number);
    const frameTime = number(meta, '00181063');
    const cineRate = number(meta, '00180040');
    const recommended = number(meta, '00082144');
    // The vector gives the time since the previous frame; its first entry is 0.
    const fromVector = () =>
      Array.from({ length: frames }, (_, k) => (vector[k + 1] > 0 ? vector[k + 1] : vector.find((v) => v > 0)));
    if (pointer === '00181065' && vector.some((v) => v > 0)) return { source: 'FrameTimeVector', ms: fromVector() };
    if (frameTime) return { source: 'FrameTime', ms: Array(frames).fill(frameTime) };
    if (vector.some((v) => v > 0)) return { source: 'FrameTimeVector', ms: fromVector() };
    if (cineRate) return { source: 'CineRate', ms: Array(frames).fill(1000 / cineRate) };
    if (recommended) return { source: 'RecommendedDisplayFrameRate', ms: Array(frames).fill(1000 / recommended) };
    return undefined;
  }

  /// DICOM DT (or DA + TM) as milliseconds since 1970, UTC, or undefined.
  function moment(meta) {
    let dt = String(first(meta, '0008002A') || '');
    if (!dt) {
      const da = String(first(meta, '00080022') || first(meta, '00080023') || '');
      const tm = String(first(meta, '00080032') || first(meta, '00080033') || '');
      dt = da ? da + tm : '';
    }
    const m = /^(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(\.\d+)?/.exec(dt);
    if (!m) return undefined;
    const [, y, mo, d, h = '0', mi = '0', s = '0', frac = ''] = m;
    return Date.UTC(+y, +mo - 1, +d, +h, +mi, +s, frac ? Math.round(Number(frac) * 1000) : 0);
  }

  let player;

  class Player {
    constructor(title, urls, delayMs, labels, source) {
      this.urls = urls;
      this.delayMs = delayMs;
      this.labels = labels;
      this.index = 0;
      this.playing = false;
      this.blobs = new Map();
      this.bitmaps = new Map();
      this.blobBytes = 0;
      this.queue = [];
      this.active = 0;
      this.closed = false;
      $('cine-title').textContent = title;
      $('cine-rate').textContent = source;
      $('cine-slider').max = String(urls.length);
      $('cine-frame').dataset.index = '0';
      $('cine-frame').textContent = 'loading…';
      $('cine-time').textContent = '';
      $('player').hidden = false;
      this.show(0);
    }

    blob(k) {
      if (!this.blobs.has(k)) {
        const promise = new Promise((resolve, reject) => this.queue.push({ k, resolve, reject }));
        this.blobs.set(k, promise);
        this.pump();
      }
      return this.blobs.get(k);
    }

    // At most FETCHES requests at a time, nearest frames first.
    pump() {
      while (this.active < FETCHES && this.queue.length && !this.closed) {
        const { k, resolve, reject } = this.queue.shift();
        this.active += 1;
        fetch(this.urls[k], { headers: { Accept: 'image/jpeg' } })
          .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`frame ${k + 1}: ${r.status}`))))
          .then((b) => {
            this.blobBytes += b.size;
            // Past the budget, JPEGs are fetched again when needed.
            if (this.blobBytes > BLOB_BUDGET) this.blobs.delete(k);
            resolve(b);
          }, reject)
          .finally(() => {
            this.active -= 1;
            this.pump();
          });
      }
    }

    bitmap(k) {
      if (!this.bitmaps.has(k)) {
        this.bitmaps.set(k, this.blob(k).then((b) => createImageBitmap(b)));
      }
      return this.bitmaps.get(k);
    }

    decodeAhead(k) {
      const n = this.urls.length;
      const keep = new Set();
      for (let i = 0; i <= Math.min(AHEAD, n - 1); i += 1) keep.add((k + i) % n);
      keep.add((k - 1 + n) % n);
      for (const i of keep) this.bitmap(i).catch(() => {});
      for (const [i, p] of this.bitmaps) {
        if (!keep.has(i)) {
          this.bitmaps.delete(i);
          p.then((bm) => bm.close(), () => {});
        }
      }
    }

    async show(k) {
      const n = this.urls.length;
      k = ((k % n) + n) % n;
      this.index = k;
      this.decodeAhead(k);
      let bm;
      try {
        bm = await this.bitmap(k);
      } catch (e) {
        $('cine-frame').textContent = String(e.message || e);
        this.pause();
        return;
      }
      if (this.closed || this.index !== k) return;
      const canvas = $('cine-canvas');
      if (canvas.width !== bm.width || canvas.height !== bm.height) {
        canvas.width = bm.width;
        canvas.height = bm.height;
        // Small images (ultrasound, 64² test clips) are shown enlarged.
        const scale = Math.min((0.94 * innerWidth) / bm.width, (0.75 * innerHeight) / bm.height);
        canvas.style.width = `${Math.round(bm.width * scale)}px`;
        canvas.style.height = `${Math.round(bm.height * scale)}px`;
      }
      canvas.getContext('2d').drawImage(bm, 0, 0);
      $('cine-slider').value = String(k + 1);
      $('cine-frame').textContent = `Frame ${k + 1} / ${n}`;
      $('cine-frame').dataset.index = String(k + 1);
      $('cine-time').textContent = this.labels[k] || '';
    }

    play() {
      if (this.playing) return;
      this.playing = true;
      $('cine-play').textContent = 'Pause';
      const tick = async () => {
        if (!this.playing || this.closed) return;
        const started = performance.now();
        await this.show(this.index + 1);
        const speed = Number($('cine-speed').value) || 1;
        const wait = this.delayMs[this.index] / speed - (performance.now() - started);
        this.timer = setTimeout(tick, Math.max(0, wait));
      };
      this.timer = setTimeout(tick, this.delayMs[this.index] / (Number($('cine-speed').value) || 1));
    }

    pause() {
      this.playing = false;
      clearTimeout(this.timer);
      $('cine-play').textContent = 'Play';
    }

    close() {
      this.pause();
      this.closed = true;
      for (const p of this.bitmaps.values()) p.then((bm) => bm.close(), () => {});
      $('player').hidden = true;
    }
  }

  async function json(url) {
    const rsp = await fetch(url, { headers: { Accept: 'application/dicom+json' } });
    if (!rsp.ok) throw new Error(`${url}: ${rsp.status}`);
    return rsp.json();
  }

  /// Play the frames of one multi-frame instance.
  async function clip(study, series, instance, title) {
    const base = `/dicom-web/studies/${study}/series/${series}/instances/${instance}`;
    const [meta] = await json(`${base}/metadata`);
    const frames = number(meta, '00280008') || 1;
    const timing = delays(meta, frames) || { source: 'no frame time given: 10/s', ms: Array(frames).fill(100) };
    const elapsed = [];
    let t = 0;
    for (let k = 0; k < frames; k += 1) {
      elapsed.push(`${(t / 1000).toFixed(2)} s`);
      t += timing.ms[k];
    }
    const rate = timing.source.startsWith('no') ? timing.source : `${(1000 / timing.ms[0]).toFixed(1)}/s from ${timing.source}`;
    const urls = Array.from({ length: frames }, (_, k) => `${base}/frames/${k + 1}/rendered`);
    return start(title, urls, timing.ms, elapsed, rate);
  }

  /// Play a series one instance per frame: a time-lapse in acquisition
  /// order with the hours since the first, else a stack in instance order.
  async function stack(study, series, title) {
    const metas = await json(`/dicom-web/studies/${study}/series/${series}/metadata`);
    const items = metas.map((m) => ({
      uid: first(m, '00080018'),
      at: moment(m),
      number: Number(first(m, '00200013')) || 0,
      meta: m,
    }));
    const timed = items.length > 1 && items.every((i) => i.at !== undefined) && new Set(items.map((i) => i.at)).size > 1;
    items.sort((a, b) => (timed ? a.at - b.at : 0) || a.number - b.number);
    const labels = timed ? items.map((i) => `+${((i.at - items[0].at) / 3600000).toFixed(1)} h`) : [];
    const fps = number(items[0].meta, '00082144') || number(items[0].meta, '00180040') || (timed ? 4 : 10);
    const urls = items.map((i) => `/dicom-web/studies/${study}/series/${series}/instances/${i.uid}/rendered`);
    const source = `${fps}/s${timed ? ', time-lapse by acquisition time' : ''}`;
    return start(title, urls, Array(urls.length).fill(1000 / fps), labels, source);
  }

  function start(title, urls, delayMs, labels, source) {
    if (player) player.close();
    player = new Player(title, urls, delayMs, labels, source);
    return player;
  }

  function setUp() {
    $('cine-play').addEventListener('click', () => (player.playing ? player.pause() : player.play()));
    $('cine-prev').addEventListener('click', () => {
      player.pause();
      player.show(player.index - 1);
    });
    $('cine-next').addEventListener('click', () => {
      player.pause();
      player.show(player.index + 1);
    });
    $('cine-slider').addEventListener('input', () => player.show(Number($('cine-slider').value) - 1));
    $('cine-close').addEventListener('click', () => player.close());
    document.addEventListener('keydown', (e) => {
      if (!player || $('player').hidden) return;
      if (e.key === ' ') {
        e.preventDefault();
        player.playing ? player.pause() : player.play();
      } else if (e.key === 'ArrowRight') {
        player.pause();
        player.show(player.index + 1);
      } else if (e.key === 'ArrowLeft') {
        player.pause();
        player.show(player.index - 1);
      } else if (e.key === 'Escape') {
        player.close();
      }
    });
  }

  return { clip, stack, setUp };
})();
