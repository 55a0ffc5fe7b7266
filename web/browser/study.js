// The study page at /study/{uid}: patient and study data, the series with
// server-rendered thumbnails, the report with the search terms marked,
// worklist and MPPS steps, the patient's other studies, and the actions:
// open in the viewer (OHIF's microscopy mode for slides; each slide series
// also opens on the slide page), download as ZIP,
// upload DICOM files, copy a link, play a clip or a time-lapse.
// Sections the caller's roles do not allow are left out.
'use strict';

const $ = (id) => document.getElementById(id);
const uid = decodeURIComponent(location.pathname.split('/')[2] || '');
const query = new URLSearchParams(location.search).get('q') || '';
const SLIDE_CLASS = '1.2.840.10008.5.1.4.1.1.77.1.6';
// MPEG-4 AVC (H.264): the server rewraps these as MP4 for <video>.
const VIDEO_SYNTAXES = ['102', '103', '104', '105', '106'].map((n) => `1.2.840.10008.1.2.4.${n}`);

const first = (meta, tag) => ((meta && meta[tag] && meta[tag].Value) || [])[0];
const person = (v) => {
  const pn = typeof v === 'object' && v ? v.Alphabetic || v.Ideographic || '' : v || '';
  return pn.replace(/\^+/g, ' ').trim();
};
const clock = (tm) => String(tm || '').replace(/^(\d\d)(\d\d)\d*.*$/, '$1:$2');
const day = (da) => (/^\d{8}$/.test(da || '') ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6)}` : da || '');

function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = value ?? '';
  if (className) el.className = className;
  return el;
}

/// A table row holding one message across `columns` cells.
function note(message, columns) {
  const row = document.createElement('tr');
  const cell = text('td', message, 'muted');
  cell.colSpan = columns;
  row.append(cell);
  return row;
}

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [label, value] of pairs) {
    if (!value) continue;
    dl.append(text('dt', label), text('dd', value));
  }
}

function problem(message) {
  $('problem').textContent = message;
  $('problem').hidden = false;
}

async function get(url, accept = 'application/json') {
  const rsp = await fetch(url, { headers: { Accept: accept } });
  if (rsp.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
    throw new Error('not logged in');
  }
  if (rsp.status === 204) return [];
  return { ok: rsp.ok, status: rsp.status, body: await rsp.json().catch(() => null) };
}

const dicom = async (url) => {
  const r = await get(url, 'application/dicom+json');
  return Array.isArray(r) ? r : r.ok ? r.body || [] : Promise.reject(new Error(`${url}: ${r.status}`));
};

// Folding as the search index does: case, diacritics and the letters
// Unicode does not decompose.
const SPECIAL = { đ: 'd', ł: 'l', ø: 'o', ß: 'ss', æ: 'ae', œ: 'oe', ı: 'i' };
const fold = (s) =>
  s
    .toLowerCase()
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .replace(/[đłøßæœı]/g, (c) => SPECIAL[c]);

function searchTerms(q) {
  return q
    .replace(/\b(name|id|report):/gi, ' ')
    .split(/[^\p{L}\p{N}]+/u)
    .map(fold)
    .filter((t) => t.length > 1);
}

function withinOneEdit(a, b) {
  if (Math.abs(a.length - b.length) > 1) return false;
  let i = 0;
  let j = 0;
  let edits = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      i += 1;
      j += 1;
      continue;
    }
    edits += 1;
    if (edits > 1) return false;
    if (a.length > b.length) i += 1;
    else if (b.length > a.length) j += 1;
    else {
      i += 1;
      j += 1;
    }
  }
  return edits + (a.length - i) + (b.length - j) <= 1;
}

/// The text with every word the search matched (exactly, or within one
/// typo for words of five letters or more) in <mark>.
function highlighted(body, terms) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const m of body.matchAll(/[\p{L}\p{N}]+/gu)) {
    const word = fold(m[0]);
    const hit = terms.some((t) => t === word || (t.length >= 5 && withinOneEdit(t, word)));
    if (!hit) continue;
    out.append(body.slice(last, m.index), text('mark', m[0]));
    last = m.index + m[0].length;
  }
  out.append(body.slice(last));
  return out;
}

function seriesItem(s, instances) {
  const series = first(s, '0020000E');
  const modality = first(s, '00080060') || '';
  const count = Number(first(s, '00201209')) || instances.length;
  const li = document.createElement('li');
  li.className = 'series';
  li.dataset.series = series;
  const img = document.createElement('img');
  img.alt = `Series ${first(s, '00200011') ?? ''} ${modality}`;
  img.loading = 'lazy';
  img.width = 128;
  img.height = 128;
  img.src = `/dicom-web/studies/${uid}/series/${series}/thumbnail?viewport=128,128`;
  li.append(img);
  const caption = document.createElement('div');
  caption.append(
    text('strong', `${first(s, '00200011') ?? ''} ${modality}`.trim()),
    text('span', ` ${first(s, '0008103E') || ''}`),
    text('div', `${count} ${count === 1 ? 'image' : 'images'}`, 'muted'),
  );
  li.append(caption);
  const video = instances.find((i) => VIDEO_SYNTAXES.includes(first(i, '00083002')));
  const clip = instances.find((i) => Number(first(i, '00280008')) > 1);
  const title = `${first(s, '0008103E') || modality} (series ${first(s, '00200011') ?? ''})`;
  if (instances.some((i) => first(i, '00080016') === SLIDE_CLASS)) {
    const a = text('a', 'Open slide', 'button');
    a.href = `/slide/${encodeURIComponent(uid)}/${encodeURIComponent(series)}`;
    li.append(a);
  } else if (video) {
    // The server cannot draw an H.264 frame as a thumbnail.
    img.addEventListener('error', () => img.replaceWith(text('div', '▶', 'thumb-video')));
    const b = text('button', '▶ Play video', 'play');
    b.type = 'button';
    b.addEventListener('click', () => playVideo(series, first(video, '00080018'), title));
    li.append(b);
  } else if (clip) {
    const b = text('button', '▶ Play clip', 'play');
    b.type = 'button';
    b.addEventListener('click', () =>
      Cine.clip(uid, series, first(clip, '00080018'), title).catch((e) => problem(String(e.message || e))),
    );
    li.append(b);
  } else if (count > 1) {
    const b = text('button', '▶ Play series', 'play');
    b.type = 'button';
    b.addEventListener('click', () => Cine.stack(uid, series, title).catch((e) => problem(String(e.message || e))));
    li.append(b);
  }
  return li;
}

/// An H.264 instance in the browser's own player, as MP4 from `/rendered`.
function playVideo(series, sop, title) {
  const video = $('video');
  video.src = `/dicom-web/studies/${uid}/series/${series}/instances/${sop}/rendered`;
  $('video-title').textContent = title;
  $('video-player').hidden = false;
  video.play().catch(() => {}); // the controls remain if autoplay is refused
}

function closeVideo() {
  const video = $('video');
  video.pause();
  video.removeAttribute('src');
  video.load();
  $('video-player').hidden = true;
}

async function showSeries() {
  const [series, instances] = await Promise.all([
    dicom(`/dicom-web/studies/${uid}/series?includefield=SeriesDescription`),
    dicom(`/dicom-web/studies/${uid}/instances?includefield=NumberOfFrames&includefield=AvailableTransferSyntaxUID`),
  ]);
  series.sort((a, b) => (Number(first(a, '00200011')) || 0) - (Number(first(b, '00200011')) || 0));
  const list = $('series');
  list.replaceChildren(
    ...series.map((s) => seriesItem(s, instances.filter((i) => first(i, '0020000E') === first(s, '0020000E')))),
  );
  const slides = instances.some((i) => first(i, '00080016') === SLIDE_CLASS);
  $('open-viewer').href = slides
    ? `/viewer/microscopy?StudyInstanceUIDs=${encodeURIComponent(uid)}`
    : `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`;
}

async function showReports(terms) {
  const r = await get(`/api/v1/studies/${uid}/reports`);
  if (!r.ok) {
    // Roles without the Reports right do not see reports.
    $('report-section').hidden = true;
    return;
  }
  const box = $('reports');
  box.replaceChildren();
  if (!r.body.reports.length) box.append(text('p', 'No report yet.', 'muted'));
  for (const rep of r.body.reports) {
    const article = document.createElement('article');
    article.className = 'report';
    article.append(text('div', [rep.status, rep.author, rep.observed_at].filter(Boolean).join(' · '), 'muted'));
    const body = document.createElement('pre');
    body.append(highlighted(rep.body, terms));
    article.append(body);
    box.append(article);
  }
}

async function showWorkflow(accession) {
  const steps = [];
  const [worklist, mpps, status] = await Promise.all([
    accession ? get(`/api/v1/worklist?accession=${encodeURIComponent(accession)}`) : null,
    get(`/api/v1/mpps?study=${encodeURIComponent(uid)}`),
    get(`/api/v1/studies/${uid}/status`),
  ]);
  if (status.ok) facts($('study'), [...studyFacts, ['Status', status.body.status]]);
  if (worklist && worklist.ok) {
    for (const i of worklist.body.items) {
      steps.push(['Scheduled ' + (i.scheduled_step_id || ''), i.modality, (i.station_ae_titles || []).join(', '), `${day(i.start_date)} ${clock(i.start_time)}`.trim(), i.status]);
    }
  }
  if (mpps.ok) {
    for (const p of mpps.body.performed_steps) {
      steps.push(['Performed ' + (p.performed_step_id || ''), p.modality, p.station_ae_title, p.started_at, p.status || '']);
    }
  }
  if (!mpps.ok && !(worklist && worklist.ok)) {
    $('workflow-section').hidden = true;
    return;
  }
  const body = $('workflow').querySelector('tbody');
  body.replaceChildren();
  if (!steps.length) body.append(note('No worklist entry or performed step for this study.', 5));
  for (const s of steps) {
    const row = document.createElement('tr');
    row.append(...s.map((v) => text('td', v)));
    body.append(row);
  }
}

async function showOthers(patientId) {
  const body = $('others').querySelector('tbody');
  body.replaceChildren();
  if (!patientId) return;
  const studies = await dicom(`/dicom-web/studies?PatientID=${encodeURIComponent(patientId)}&includefield=StudyDescription&limit=100`);
  const others = studies.filter((s) => first(s, '0020000D') !== uid);
  others.sort((a, b) => String(first(b, '00080020') || '').localeCompare(String(first(a, '00080020') || '')));
  if (!others.length) body.append(note('None.', 4));
  for (const s of others) {
    const row = document.createElement('tr');
    row.dataset.study = first(s, '0020000D');
    row.append(
      text('td', day(first(s, '00080020'))),
      text('td', (((s['00080061'] || {}).Value) || []).join(', ')),
      text('td', first(s, '00081030')),
      text('td', first(s, '00080050')),
    );
    row.addEventListener('click', () => {
      location.href = `/study/${encodeURIComponent(row.dataset.study)}${query ? `?q=${encodeURIComponent(query)}` : ''}`;
    });
    body.append(row);
  }
}

function csrf() {
  return decodeURIComponent((document.cookie.match(/(?:^|; )tessera_csrf=([^;]*)/) || [])[1] || '');
}

/// STOW-RS of the chosen files in one request; the answer says what was
/// stored and what was refused.
async function upload(files) {
  const boundary = `tessera-${crypto.randomUUID()}`;
  const parts = [];
  for (const f of files) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, f, '\r\n');
  }
  parts.push(`--${boundary}--\r\n`);
  $('action-status').textContent = `Uploading ${files.length} file${files.length === 1 ? '' : 's'}…`;
  const rsp = await fetch('/dicom-web/studies', {
    method: 'POST',
    headers: {
      'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
      Accept: 'application/dicom+json',
      'X-CSRF-Token': csrf(),
    },
    body: new Blob(parts),
  });
  const body = await rsp.json().catch(() => null);
  const count = (tag) => ((body && body[tag] && body[tag].Value) || []).length;
  if (rsp.status === 403) {
    $('action-status').textContent = 'Your account may not store images.';
  } else if (!body || (rsp.status >= 400 && rsp.status !== 409)) {
    $('action-status').textContent = `Upload failed (${rsp.status}).`;
  } else {
    $('action-status').textContent = `Stored ${count('00081199')}, refused ${count('00081198')}.`;
    showSeries().catch((e) => problem(String(e.message || e)));
  }
}

let studyFacts = [];

async function main() {
  fetch('/api/v1/session')
    .then((r) => (r.ok ? r.json() : null))
    .then((s) => {
      if (!s) return;
      $('who').textContent = s.user;
      const roles = s.roles || [];
      if (!roles.includes('admin') && !roles.includes('technologist')) $('upload-label').hidden = true;
    });
  const back = document.referrer && new URL(document.referrer).origin === location.origin && new URL(document.referrer).pathname === '/';
  if (back) $('back').href = document.referrer;
  $('download').href = `/api/v1/studies/${uid}/archive`;
  $('download-uncompressed').href = `/api/v1/studies/${uid}/archive?transfer=uncompressed`;
  $('video-close').addEventListener('click', closeVideo);
  $('copy-link').addEventListener('click', async () => {
    const link = `${location.origin}/study/${encodeURIComponent(uid)}`;
    try {
      await navigator.clipboard.writeText(link);
      $('action-status').textContent = 'Link copied.';
    } catch {
      // Clipboard access needs a secure context or a permission.
      $('action-status').textContent = link;
    }
    $('action-status').dataset.link = link;
  });
  $('upload').addEventListener('change', () => {
    const files = [...$('upload').files];
    if (files.length) upload(files).catch((e) => ($('action-status').textContent = String(e.message || e)));
    $('upload').value = '';
  });
  Cine.setUp();

  const [study] = await dicom(`/dicom-web/studies?StudyInstanceUID=${encodeURIComponent(uid)}&includefield=StudyDescription`);
  if (!study) {
    problem('This study does not exist, or is not yours to see.');
    return;
  }
  const patientId = first(study, '00100020') || '';
  const name = person(first(study, '00100010'));
  document.title = `Tessera: ${name || patientId}`;
  $('patient-line').textContent = [name, patientId].filter(Boolean).join(' · ');
  facts($('patient'), [
    ['Patient', name],
    ['ID', patientId],
    ['Born', day(first(study, '00100030'))],
    ['Sex', first(study, '00100040')],
  ]);
  studyFacts = [
    ['Date', `${day(first(study, '00080020'))} ${clock(first(study, '00080030'))}`.trim()],
    ['Description', first(study, '00081030')],
    ['Modalities', ((study['00080061'] || {}).Value || []).join(', ')],
    ['Accession', first(study, '00080050')],
    ['Referring', person(first(study, '00080090'))],
    ['Study UID', uid],
  ];
  facts($('study'), studyFacts);
  const failed = (e) => problem(String(e.message || e));
  await Promise.all([
    showSeries().catch(failed),
    showReports(searchTerms(query)).catch(failed),
    showWorkflow(first(study, '00080050')).catch(failed),
    showOthers(patientId).catch(failed),
  ]);
  document.body.dataset.ready = 'true';
}

main().catch((e) => problem(String(e.message || e)));
