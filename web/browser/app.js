// The study browser: a search box with results as you type, filters,
// sorting and paging over GET /api/v1/search. The URL holds the whole
// search, so a link shows the same results to a colleague. A row opens
// the study page; its View link opens the study in the OHIF viewer.
'use strict';

const PAGE = 50;
const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'US', 'MG', 'NM', 'PT', 'XA', 'SM'];
const $ = (id) => document.getElementById(id);

let state = fromUrl();
let sequence = 0;
// The page may arrive with the results of the search its address names,
// so that a new tab paints them without asking (src/web/front_page.rs).
let embedded = (() => {
  const el = document.getElementById('first');
  if (!el) return null;
  el.remove();
  try {
    return JSON.parse(el.textContent);
  } catch {
    return null;
  }
})();

function fromUrl() {
  const p = new URLSearchParams(location.search);
  return {
    q: p.get('q') || '',
    preset: p.get('preset') || '',
    from: p.get('from') || '',
    to: p.get('to') || '',
    modality: (p.get('modality') || '').split(',').filter(Boolean),
    status: p.get('status') || '',
    sort: p.get('sort') || 'relevance',
    offset: Number(p.get('offset') || 0),
  };
}

function toUrl() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) {
    const value = Array.isArray(v) ? v.join(',') : String(v);
    if (value && !(k === 'sort' && value === 'relevance') && !(k === 'offset' && value === '0')) {
      p.set(k, value);
    }
  }
  const query = p.toString();
  history.replaceState(null, '', query ? `?${query}` : location.pathname);
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

/// The date bounds a preset stands for.
function range() {
  const today = new Date();
  if (state.preset === 'range') return [state.from, state.to];
  if (state.preset === 'today') return [isoDay(today), isoDay(today)];
  const days = Number(state.preset);
  if (days > 0) {
    const from = new Date(today.getTime() - days * 86400000);
    return [isoDay(from), isoDay(today)];
  }
  return ['', ''];
}

function text(tag, value) {
  const el = document.createElement(tag);
  el.textContent = value ?? '';
  return el;
}

function person(pn) {
  return (pn || '').split('=')[0].replace(/\^+/g, ' ').trim();
}

function day(yyyymmdd) {
  return /^\d{8}$/.test(yyyymmdd || '')
    ? `${yyyymmdd.slice(0, 4)}-${yyyymmdd.slice(4, 6)}-${yyyymmdd.slice(6)}`
    : '';
}

function render(page) {
  const body = $('results').querySelector('tbody');
  body.replaceChildren();
  for (const s of page.results) {
    const row = document.createElement('tr');
    row.dataset.study = s.study_instance_uid;
    row.append(
      text('td', person(s.patient_name)),
      text('td', s.patient_id),
      text('td', day(s.study_date)),
      text('td', (s.modalities || []).join(', ')),
      text('td', s.description),
      text('td', s.accession_number),
      text('td', String(s.series_count)),
      text('td', s.status),
    );
    const report = document.createElement('td');
    if (s.report_snippet) {
      // The server escapes the report and adds only <mark>.
      const snippet = document.createElement('div');
      snippet.className = 'snippet';
      snippet.innerHTML = s.report_snippet;
      report.append(snippet);
    } else {
      report.textContent = s.has_report ? 'yes' : '';
    }
    row.append(report);
    const open = document.createElement('td');
    const viewer = text('a', 'View');
    viewer.className = 'view';
    viewer.href = `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(s.study_instance_uid)}`;
    viewer.addEventListener('click', (e) => e.stopPropagation());
    open.append(viewer);
    row.append(open);
    row.addEventListener('click', () => {
      const q = state.q ? `?q=${encodeURIComponent(state.q)}` : '';
      location.href = `/study/${encodeURIComponent(s.study_instance_uid)}${q}`;
    });
    body.append(row);
  }
  const first = page.total === 0 ? 0 : state.offset + 1;
  const last = state.offset + page.results.length;
  $('count').textContent =
    page.total === 1 ? '1 study' : `${page.total} studies${page.total ? ` (${first}–${last})` : ''}`;
  $('page').textContent = page.total ? `${Math.floor(state.offset / PAGE) + 1} / ${Math.ceil(page.total / PAGE)}` : '';
  $('prev').disabled = state.offset === 0;
  $('next').disabled = last >= page.total;
}

async function search() {
  toUrl();
  const [from, to] = range();
  const p = new URLSearchParams({ q: state.q, sort: state.sort, limit: PAGE, offset: state.offset });
  if (from) p.set('from', from);
  if (to) p.set('to', to);
  if (state.modality.length) p.set('modality', state.modality.join(','));
  if (state.status) p.set('status', state.status);
  const mine = ++sequence;
  const first = embedded;
  embedded = null;
  if (first && first.query === p.toString()) {
    $('count').className = '';
    render(first.page);
    return;
  }
  const rsp = await fetch(`/api/v1/search?${p}`, { headers: { Accept: 'application/json' } });
  if (mine !== sequence) return; // a newer search is on its way
  if (rsp.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
    return;
  }
  const body = await rsp.json().catch(() => ({}));
  if (!rsp.ok) {
    $('results').querySelector('tbody').replaceChildren();
    $('count').textContent = body.error || `search failed (${rsp.status})`;
    $('count').className = 'error';
    return;
  }
  $('count').className = '';
  render(body);
}

let debounce;
function later() {
  clearTimeout(debounce);
  debounce = setTimeout(search, 200);
}

function changed(update) {
  Object.assign(state, update, { offset: 0 });
  $('filters').classList.toggle('show-range', state.preset === 'range');
  search();
}

function setUp() {
  $('q').value = state.q;
  $('preset').value = state.preset;
  $('from').value = state.from;
  $('to').value = state.to;
  $('status').value = state.status;
  $('filters').classList.toggle('show-range', state.preset === 'range');
  for (const m of MODALITIES) {
    const label = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.value = m;
    box.checked = state.modality.includes(m);
    box.addEventListener('change', () => {
      const chosen = [...document.querySelectorAll('#modalities input:checked')].map((b) => b.value);
      changed({ modality: chosen });
    });
    label.append(box, ` ${m}`);
    $('modalities').append(label);
  }
  $('q').addEventListener('input', () => {
    Object.assign(state, { q: $('q').value, offset: 0 });
    later();
  });
  $('preset').addEventListener('change', () => changed({ preset: $('preset').value }));
  $('from').addEventListener('change', () => changed({ from: $('from').value }));
  $('to').addEventListener('change', () => changed({ to: $('to').value }));
  $('status').addEventListener('change', () => changed({ status: $('status').value }));
  document.querySelector('button.sort').addEventListener('click', () => {
    changed({ sort: state.sort === 'date' ? 'date_asc' : 'date' });
  });
  $('prev').addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - PAGE);
    search();
  });
  $('next').addEventListener('click', () => {
    state.offset += PAGE;
    search();
  });
  // The logout form needs the CSRF token of the session.
  $('logout').addEventListener('submit', async (e) => {
    e.preventDefault();
    const csrf = (document.cookie.match(/(?:^|; )tessera_csrf=([^;]*)/) || [])[1] || '';
    await fetch('/logout', { method: 'POST', headers: { 'X-CSRF-Token': csrf } });
    location.href = '/login';
  });
  fetch('/api/v1/session')
    .then((r) => (r.ok ? r.json() : null))
    .then((s) => {
      if (s) $('who').textContent = s.user;
    });
  search();
}

setUp();
