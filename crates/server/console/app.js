// gengate's console: one ES module, no build step, served from the binary.
// It speaks the public API with the key signed in (kept for the tab only),
// follows task changes on the live feed (GET /v1/events, read with fetch so
// the key travels in a header), and builds every element with the DOM API:
// nothing from a task is ever parsed as HTML.

const main = document.getElementById('main');
const KEY = 'gengate.key';
const state = { key: sessionStorage.getItem(KEY), admin: false, stop: null };

// ---- small helpers -------------------------------------------------------

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) {
    const why = (data && data.error && data.error.message) || (data && data.detail) || resp.statusText;
    throw new ApiError(resp.status, `${resp.status}: ${why}`);
  }
  return data;
}

// Server-sent events over fetch (EventSource cannot send the key): calls
// `on(event)` for each until `signal` aborts or the stream ends.
async function sse(path, on, signal) {
  const resp = await fetch(path, { headers: { authorization: `Bearer ${state.key}` }, signal });
  if (!resp.ok) throw new ApiError(resp.status, `${resp.status}`);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const ev = { id: null, event: null, data: [] };
      for (const line of block.split('\n')) {
        const [field, ...rest] = line.split(':');
        const val = rest.join(':').replace(/^ /, '');
        if (field === 'id') ev.id = val;
        else if (field === 'event') ev.event = val;
        else if (field === 'data') ev.data.push(val);
      }
      if (ev.data.length) on({ id: ev.id, event: ev.event, data: JSON.parse(ev.data.join('\n')) });
    }
  }
}

const time = (s) => (s ? new Date(s).toLocaleString() : '');
function duration(t) {
  if (!t.started_at) return '';
  const end = t.finished_at ? new Date(t.finished_at) : new Date();
  return `${((end - new Date(t.started_at)) / 1000).toFixed(1)} s`;
}
const badge = (s) => h('span', { class: `state ${s}`, 'data-state': s, text: s });
const terminal = (s) => ['completed', 'failed', 'canceled'].includes(s);
function failure(err) { return h('p', { class: 'error', role: 'alert', text: String(err.message || err) }); }

// ---- sign-in and routing --------------------------------------------------

async function signIn(key) {
  state.key = key;
  await api('/v1/models');
  try {
    await api('/admin/tasks?limit=1');
    state.admin = true;
  } catch (e) {
    if (e.status !== 403) throw e;
    state.admin = false;
  }
  sessionStorage.setItem(KEY, key);
  document.body.classList.toggle('admin', state.admin);
  document.getElementById('nav').hidden = false;
}

function signInPage(message) {
  const input = h('input', { type: 'password', name: 'key', autocomplete: 'off', placeholder: 'gg_…', size: 48 });
  const out = h('div');
  const form = h('form', { class: 'card', id: 'sign-in', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await signIn(input.value.trim());
      location.hash = '#/tasks';
      route();
    } catch (err) {
      state.key = null;
      out.replaceChildren(failure(err.status === 401 ? new Error('That key is not valid.') : err));
    }
  } },
  h('h1', { text: 'Sign in' }),
  h('p', { class: 'muted', text: 'With an API key: a key sees its own tasks; an admin key sees every key’s, and the keys and channels.' }),
  h('label', {}, 'API key', input), h('p', {}, h('button', { class: 'primary', type: 'submit', text: 'Sign in' })), out);
  if (message) out.append(failure(new Error(message)));
  main.replaceChildren(form);
  input.focus();
}

const pages = {
  tasks: tasksPage, task: taskPage, playground: playgroundPage,
  usage: usagePage, keys: keysPage, channels: channelsPage,
};

function route() {
  if (state.stop) state.stop.abort();
  state.stop = new AbortController();
  if (!state.key) return signInPage();
  const [name, arg] = location.hash.replace(/^#\/?/, '').split('/');
  const page = name === 'tasks' && arg ? 'task' : (pages[name] ? name : 'tasks');
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.getAttribute('href') === `#/${name || 'tasks'}`);
  }
  main.replaceChildren(h('p', { class: 'muted', text: 'Loading…' }));
  pages[page](arg, state.stop.signal).catch((err) => {
    if (err.name === 'AbortError') return;
    if (err.status === 401) { sessionStorage.removeItem(KEY); state.key = null; return signInPage('The key was refused.'); }
    main.replaceChildren(failure(err));
  });
}

// ---- tasks -----------------------------------------------------------------

const FILTERS = ['state', 'model', 'dialect', 'channel', 'key', 'created_after', 'q'];

function taskRow(t) {
  const cols = [
    h('td', { class: 'id' }, h('a', { href: `#/tasks/${t.id}`, text: t.id })),
    h('td', { text: t.dialect }), h('td', { text: t.model }), h('td', { text: t.kind }),
    h('td', {}, badge(t.state)), h('td', { text: t.channel || '' }),
  ];
  if (state.admin) cols.push(h('td', { class: 'id', text: t.key_id ? t.key_id.slice(0, 8) : '' }));
  cols.push(h('td', { text: time(t.created_at) }), h('td', { text: duration(t) }),
    h('td', { text: t.credits ? String(t.credits.net) : '' }));
  return h('tr', { 'data-task': t.id, 'data-state': t.state }, cols);
}

function matches(t, f) {
  if (f.state && t.state !== f.state) return false;
  if (f.model && t.model !== f.model) return false;
  if (f.dialect && t.dialect !== f.dialect) return false;
  if (f.channel && t.channel !== f.channel) return false;
  if (f.key && t.key_id !== f.key) return false;
  if (f.q && t.id !== f.q && t.external_id !== f.q) return false;
  return true;
}

async function tasksPage(_, signal) {
  const params = new URLSearchParams(sessionStorage.getItem('gengate.filters') || '');
  const field = (name, el) => { el.name = name; el.value = params.get(name) || ''; return h('label', {}, name.replace('_', ' '), el); };
  const opts = (list) => [h('option', { value: '', text: 'any' }), ...list.map((v) => h('option', { value: v, text: v }))];
  const form = h('form', { class: 'filters', id: 'filters' },
    field('state', h('select', {}, opts(['pending', 'processing', 'completed', 'failed', 'canceled']))),
    field('model', h('input', { size: 12 })),
    field('dialect', h('select', {}, opts(['gengate', 'luma', 'kling', 'dream_machine', 'openai_images', 'openai_videos', 'kling_video']))),
    field('channel', h('input', { size: 10 })),
    state.admin ? field('key', h('input', { size: 36, placeholder: 'key id' })) : null,
    field('created_after', h('input', { type: 'datetime-local' })),
    field('q', h('input', { size: 36, placeholder: 'task id or external_task_id' })),
    h('button', { type: 'submit', text: 'Apply' }));
  const body = h('tbody');
  const head = ['id', 'dialect', 'model', 'kind', 'state', 'channel', ...(state.admin ? ['key'] : []), 'created', 'duration', 'cost'];
  const table = h('table', { id: 'tasks' }, h('thead', {}, h('tr', {}, head.map((c) => h('th', { text: c })))), body);
  const more = h('button', { type: 'button', hidden: true, text: 'Older tasks' });
  const live = h('span', { class: 'muted', id: 'live', text: '' });
  main.replaceChildren(h('h1', {}, 'Tasks ', live), form, table, h('p', {}, more));

  const filters = {};
  for (const name of FILTERS) {
    let v = params.get(name) || '';
    if (name === 'created_after' && v) v = new Date(v).toISOString();
    if (v) filters[name] = v;
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    sessionStorage.setItem('gengate.filters', q.toString());
    route();
  });
  const base = state.admin ? '/admin/tasks' : '/v1/tasks';
  let cursor = null;
  const load = async () => {
    const q = new URLSearchParams(filters);
    q.set('limit', '50');
    if (cursor) q.set('cursor', cursor);
    const page = await api(`${base}?${q}`);
    for (const t of page.data) body.append(taskRow(t));
    cursor = page.next_cursor;
    more.hidden = !page.has_more;
  };
  more.addEventListener('click', () => load().catch((e) => main.append(failure(e))));
  await load();

  // Live: every change of a task of this key (an admin's: every key's).
  live.textContent = '· live';
  sse('/v1/events', ({ data }) => {
    const t = data.task;
    const row = body.querySelector(`tr[data-task="${t.id}"]`);
    if (!matches(t, filters)) { if (row) row.remove(); return; }
    const fresh = taskRow(t);
    if (row) row.replaceWith(fresh);
    else if (data.state === 'pending') body.prepend(fresh);
  }, signal).then(
    () => { live.textContent = '· not live (reload)'; },
    (e) => { if (e.name !== 'AbortError') live.textContent = '· not live (reload)'; });
}

// ---- one task ----------------------------------------------------------------

function palette(colours) {
  const c = h('canvas', { width: 100, height: 100, class: 'palette', 'data-colours': colours.join(' ') });
  const g = c.getContext('2d');
  colours.forEach((col, i) => { g.fillStyle = col; g.fillRect((i % 5) * 20, Math.floor(i / 5) * 20, 20, 20); });
  return c;
}

function media(t) {
  if (t.outputs_expired) return h('p', { class: 'muted', text: t.outputs_expired });
  if (!t.outputs.length) return h('p', { class: 'muted', text: terminal(t.state) ? 'No outputs.' : 'Not finished yet.' });
  return h('div', { class: 'media' }, t.outputs.map((o) => {
    const what = o.role === 'video'
      ? h('video', { src: o.url, controls: true, preload: 'metadata', muted: true, 'data-role': 'video' })
      : h('img', { src: o.url, alt: `${o.role} ${o.index}`, 'data-role': o.role });
    return h('figure', {}, what,
      h('figcaption', { text: `${o.role} ${o.width}×${o.height}${o.duration ? ` · ${o.duration.toFixed(1)} s` : ''}` }),
      o.palette ? palette(o.palette) : null);
  }));
}

// Why a task ended without results, and who ended it: the upstream (its
// own words) or gengate.
function reason(task) {
  if (!task.failure_reason) return null;
  const by = task.state === 'canceled' ? 'Canceled'
    : task.upstream_error ? `Failed by the upstream (channel ${task.channel || '—'})` : 'Failed by gengate';
  return h('p', { class: 'reason', id: 'reason', 'data-by': task.upstream_error ? 'upstream' : 'gengate' },
    h('strong', { text: `${by}: ` }), task.failure_reason,
    task.upstream_error && task.upstream_error !== task.failure_reason
      ? h('pre', { id: 'upstream-error', text: task.upstream_error }) : null);
}

async function taskPage(id, signal) {
  const t = await api(`/v1/tasks/${encodeURIComponent(id)}`).catch((e) => {
    if (e.status === 404) throw new Error(`No task ${id} for this key.`);
    throw e;
  });
  const head = h('div', { id: 'task-head' });
  const mediaBox = h('div', { id: 'media' });
  const events = h('tbody');
  const deliveries = h('div', { id: 'deliveries' });
  const show = (task) => {
    const actions = terminal(task.state) ? null : h('button', { class: 'danger', id: 'cancel', text: 'Cancel', onclick: async () => {
      try { show(await api(`/v1/tasks/${task.id}/cancel`, { method: 'POST', body: {} })); } catch (e) { head.append(failure(e)); }
    } });
    head.replaceChildren(...[
      h('h1', {}, 'Task ', h('span', { class: 'id', text: task.id }), ' ', badge(task.state), ' ', actions),
      h('p', { class: 'muted', text: `${task.dialect} · ${task.kind} · ${task.model} · channel ${task.channel || '—'} · created ${time(task.created_at)} · ${duration(task)}` }),
      reason(task),
    ].filter(Boolean));
    mediaBox.replaceChildren(media(task));
  };
  show(t);
  main.replaceChildren(head,
    h('div', { class: 'grid2' },
      h('div', { class: 'card' }, h('h2', { text: 'Media' }), mediaBox),
      h('div', { class: 'card' }, h('h2', { text: 'Request as understood' }), h('pre', { text: JSON.stringify(t.input, null, 2) }))),
    h('div', { class: 'card' }, h('h2', { text: 'Events' }),
      h('table', { id: 'events' }, h('thead', {}, h('tr', {}, ['#', 'state', 'at', 'detail'].map((c) => h('th', { text: c })))), events)),
    h('div', { class: 'card' }, h('h2', { text: 'Callback deliveries' }), deliveries));

  const loadDeliveries = async () => {
    const list = await api(`/v1/tasks/${t.id}/deliveries`);
    if (!list.data.length) return deliveries.replaceChildren(h('p', { class: 'muted', text: t.callback_url ? 'None yet.' : 'No callback URL.' }));
    deliveries.replaceChildren(...list.data.map((d) => h('div', { class: 'delivery' },
      h('p', {}, badge(d.state), ` #${d.seq} ${d.event} → ${d.url} `,
        h('button', { type: 'button', text: 'Redeliver', onclick: async () => {
          await api(`/v1/tasks/${t.id}/deliveries/${d.id}/redeliver`, { method: 'POST' });
          setTimeout(() => loadDeliveries().catch(() => {}), 1000);
        } })),
      h('table', {}, h('tbody', {}, d.attempts.map((a) => h('tr', {},
        h('td', { text: `attempt ${a.attempt}` }), h('td', { text: time(a.at) }),
        h('td', { text: a.status ? `HTTP ${a.status}` : (a.error || '') }), h('td', { text: `${a.latency_ms} ms` }))))))));
  };
  loadDeliveries().catch((e) => deliveries.replaceChildren(failure(e)));

  // The timeline, live until the terminal event.
  await sse(`/v1/tasks/${t.id}/events`, ({ data }) => {
    events.append(h('tr', { 'data-state': data.state }, h('td', { text: data.seq }), h('td', {}, badge(data.state)),
      h('td', { text: time(data.created_at) }), h('td', { text: data.detail || '' })));
    if (data.seq >= t.last_event_seq) {
      api(`/v1/tasks/${t.id}`).then((now) => { show(now); loadDeliveries().catch(() => {}); }).catch(() => {});
    }
  }, signal);
}

// ---- playground ----------------------------------------------------------------

function dataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function playgroundPage(_, signal) {
  const out = h('div', { id: 'result' });
  const input = (name, attrs = {}) => h('label', {}, name, h('input', { name, ...attrs }));
  const form = h('form', { class: 'card', id: 'playground' },
    h('h1', { text: 'Playground' }),
    h('div', { class: 'filters' },
      input('model', { value: 'ray-2', required: true }),
      h('label', {}, 'kind', h('select', { name: 'kind' }, h('option', { text: 'video' }), h('option', { text: 'image' }))),
      h('label', {}, 'aspect', h('select', { name: 'aspect_ratio' }, ['16:9', '1:1', '9:16', '4:3'].map((a) => h('option', { text: a })))),
      input('n', { type: 'number', min: 1, max: 9, value: 1 }),
      input('image', { type: 'url', placeholder: 'https://… (optional)', size: 30 }),
      input('upload', { type: 'file', accept: 'image/png,image/jpeg' })),
    h('label', {}, 'prompt', h('textarea', { name: 'prompt', required: true })),
    h('p', {}, h('button', { class: 'primary', type: 'submit', text: 'Generate' })), out);
  main.replaceChildren(form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(form));
    const body = { model: f.model, kind: f.kind, input: { prompt: f.prompt, aspect_ratio: f.aspect_ratio } };
    if (f.kind === 'image') body.input.n = Number(f.n || 1);
    try {
      // An image by URL or sent inside the request (both: the server says no).
      const image = {};
      if (f.image) image.url = f.image;
      if (f.upload && f.upload.size > 0) image.data = await dataUri(f.upload);
      if (Object.keys(image).length) body.input.images = [image];
      const t = await api('/v1/tasks', { method: 'POST', body });
      const status = h('p', { id: 'playground-task' }, h('a', { href: `#/tasks/${t.id}`, text: t.id }), ' ', badge(t.state));
      const box = h('div');
      out.replaceChildren(status, box);
      await sse(`/v1/tasks/${t.id}/events`, ({ data }) => {
        status.replaceChildren(h('a', { href: `#/tasks/${t.id}`, text: t.id }), ' ', badge(data.state));
        if (terminal(data.state)) {
          box.replaceChildren(reason(data.task) || media(data.task));
        }
      }, signal);
    } catch (err) {
      if (err.name !== 'AbortError') out.replaceChildren(failure(err));
    }
  });
}

// ---- usage -----------------------------------------------------------------

// rows: [{ group, n }], drawn as bars of `unit`.
function bars(rows, label, unit) {
  const W = 560, H = 160, n = Math.max(rows.length, 1), max = Math.max(1, ...rows.map((r) => r.n));
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('viewBox', `0 0 ${W} ${H + 30}`);
  svg.setAttribute('width', W);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  rows.forEach((r, i) => {
    const bw = W / n, bh = (r.n / max) * H;
    const rect = document.createElementNS(ns, 'rect');
    for (const [k, v] of Object.entries({ x: i * bw + 2, y: H - bh, width: Math.max(bw - 4, 1), height: bh })) rect.setAttribute(k, v);
    const title = document.createElementNS(ns, 'title');
    title.textContent = `${r.group}: ${r.n} ${unit}`;
    rect.append(title);
    const text = document.createElementNS(ns, 'text');
    text.setAttribute('x', i * bw + 2);
    text.setAttribute('y', H + 14);
    text.textContent = `${r.group.length > 12 ? r.group.slice(5) : r.group} · ${r.n}`;
    svg.append(rect, text);
  });
  return svg;
}

async function usagePage() {
  const sum = (report) => {
    const by = new Map();
    for (const r of report.data) by.set(r.group, (by.get(r.group) || 0) + r.tasks.total);
    return [...by].map(([group, n]) => ({ group, n }));
  };
  const [days, models] = await Promise.all([api('/v1/usage?group_by=day'), api('/v1/usage?group_by=model')]);
  const requests = days.requests.map((r) => ({ group: r.day, n: r.requests }));
  main.replaceChildren(h('h1', { text: 'Usage (last 30 days)' }),
    h('div', { class: 'card', id: 'requests-per-day' }, h('h2', { text: 'API requests per day' }), bars(requests, 'requests per day', 'requests')),
    h('div', { class: 'card', id: 'tasks-per-day' }, h('h2', { text: 'Tasks per day' }), bars(sum(days), 'tasks per day', 'tasks')),
    h('div', { class: 'card', id: 'tasks-per-model' }, h('h2', { text: 'Tasks per model' }), bars(sum(models), 'tasks per model', 'tasks')));
}

// ---- keys (admin) ------------------------------------------------------------------

async function keysPage() {
  const shown = h('div', { id: 'shown-once' });
  const body = h('tbody');
  const load = async () => {
    const keys = await api('/admin/keys');
    body.replaceChildren(...keys.data.map((k) => h('tr', { 'data-key': k.id },
      h('td', { class: 'id', text: k.id }), h('td', { text: k.name }), h('td', { text: k.admin ? 'admin' : '' }),
      h('td', { text: k.revoked_at ? 'revoked' : (k.enabled ? 'active' : 'disabled') }),
      h('td', { text: k.unlimited ? 'unlimited' : String(k.balance) }),
      h('td', {}, k.revoked_at ? null : [
        h('button', { type: 'button', text: 'Grant 100', onclick: () => act(`/admin/keys/${k.id}/credits`, { amount: 100, reason: 'console grant' }) }), ' ',
        h('button', { type: 'button', text: 'Rotate signing secret', onclick: async () => {
          const r = await api(`/admin/keys/${k.id}/rotate-secret`, { method: 'POST', body: {} });
          shown.replaceChildren(h('p', { text: `New signing secret of ${k.name}, shown once (the old one signs too until ${time(r.previous_secret_until)}):` }), h('p', { class: 'secret', text: r.webhook_secret }));
        } }), ' ',
        h('button', { type: 'button', class: 'danger', text: 'Revoke', onclick: () => act(`/admin/keys/${k.id}/revoke`, {}) })]))));
  };
  const act = async (path, body) => {
    try { await api(path, { method: 'POST', body }); await load(); } catch (e) { shown.replaceChildren(failure(e)); }
  };
  const form = h('form', { class: 'inline', id: 'new-key' },
    h('label', {}, 'name', h('input', { name: 'name', required: true })),
    h('label', {}, 'credits', h('input', { name: 'credits', type: 'number', min: 0 })),
    h('label', {}, 'admin', h('input', { name: 'admin', type: 'checkbox' })),
    h('button', { class: 'primary', type: 'submit', text: 'Create key' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(form));
    const body = { name: f.name, admin: f.admin === 'on' };
    if (f.credits) body.credits = Number(f.credits);
    try {
      const k = await api('/admin/keys', { method: 'POST', body });
      shown.replaceChildren(h('p', { text: `Key ${k.name} (${k.id}) created. Its secret is shown this once:` }),
        h('p', { class: 'secret', id: 'new-secret', text: k.key }));
      form.reset();
      await load();
    } catch (err) { shown.replaceChildren(failure(err)); }
  });
  main.replaceChildren(h('h1', { text: 'Keys' }), form, shown,
    h('table', { id: 'keys' }, h('thead', {}, h('tr', {}, ['id', 'name', '', 'status', 'balance', ''].map((c) => h('th', { text: c })))), body));
  await load();
}

// ---- channels and prices (admin) -----------------------------------------------------

async function channelsPage() {
  const body = h('tbody');
  const editor = h('textarea', { name: 'channel', rows: 8, placeholder: '{"name": "kling-b", "provider": "kling", "base_url": "…", "credentials": {…}, "models": {"kling-v1": "kling-v1"}}' });
  const note = h('div');
  let editing = null;
  const load = async () => {
    const list = await api('/admin/channels');
    body.replaceChildren(...list.data.map((c) => {
      const hl = c.health || {};
      const learned = Object.entries(hl.learned_seconds || {}).map(([m, s]) => `${m} ${s.toFixed(1)} s`).join(', ');
      return h('tr', { 'data-channel': c.name },
        h('td', { text: c.name }), h('td', { text: c.provider }), h('td', { text: c.source }),
        h('td', { text: c.enabled ? 'enabled' : 'disabled' }),
        h('td', { class: 'health', text: hl.cooling ? `cooling (${hl.cool_remaining_secs} s)` : 'ok' }),
        h('td', { text: String(hl.in_flight ?? '') }),
        h('td', { text: `${hl.requests_last_minute ?? 0} / ${hl.errors_last_minute ?? 0}` }),
        h('td', { text: learned }),
        h('td', {}, c.source === 'api' ? [
          h('button', { type: 'button', text: c.enabled ? 'Disable' : 'Enable', onclick: async () => {
            await api(`/admin/channels/${encodeURIComponent(c.name)}/${c.enabled ? 'disable' : 'enable'}`, { method: 'POST' });
            await load();
          } }), ' ',
          h('button', { type: 'button', text: 'Edit', onclick: () => {
            const { name, provider, base_url, models, priority, weight, max_in_flight, latency_ms, failure_rate, deadline_secs } = c;
            editing = name;
            editor.value = JSON.stringify({ name, provider, base_url, models, priority, weight, max_in_flight, latency_ms, failure_rate, deadline_secs }, null, 2);
            note.replaceChildren(h('p', { class: 'muted', text: `Editing ${name}: credentials left out are kept.` }));
          } })] : h('span', { class: 'muted', text: 'gengate.toml' })));
    }));
  };
  const form = h('form', { class: 'card', id: 'channel-form' }, h('h2', { text: 'Add or edit a channel (a [[channels]] table as JSON)' }), editor, note,
    h('p', {}, h('button', { class: 'primary', type: 'submit', text: 'Save' })));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const spec = JSON.parse(editor.value);
      for (const k of Object.keys(spec)) if (spec[k] === undefined || spec[k] === null) delete spec[k];
      if (editing) await api(`/admin/channels/${encodeURIComponent(editing)}`, { method: 'PATCH', body: spec });
      else await api('/admin/channels', { method: 'POST', body: spec });
      editing = null;
      editor.value = '';
      note.replaceChildren(h('p', { class: 'muted', text: 'Saved.' }));
      await load();
    } catch (err) { note.replaceChildren(failure(err)); }
  });
  const prices = h('tbody');
  const priceNote = h('div');
  const priceForm = h('form', { class: 'inline', id: 'price-form' },
    h('label', {}, 'model (* for any)', h('input', { name: 'model', required: true, size: 14 })),
    h('label', {}, 'per task', h('input', { name: 'per_task', type: 'number', min: 0, value: 0 })),
    h('label', {}, 'per image', h('input', { name: 'per_image', type: 'number', min: 0, value: 0 })),
    h('label', {}, 'per video second', h('input', { name: 'per_video_second', type: 'number', min: 0, value: 0 })),
    h('button', { class: 'primary', type: 'submit', text: 'Set price' }));
  const loadPrices = async () => {
    const list = await api('/admin/prices');
    prices.replaceChildren(...list.data.map((p) => h('tr', { 'data-price': p.model },
      h('td', { text: p.model }), h('td', { text: String(p.per_task) }), h('td', { text: String(p.per_image) }),
      h('td', { text: Object.entries(p.per_video_second).map(([r, c]) => `${r}: ${c}`).join(', ') }), h('td', { text: p.source }),
      h('td', {}, p.source === 'api' ? h('button', { type: 'button', class: 'danger', text: 'Delete', onclick: async () => {
        await api(`/admin/prices/${encodeURIComponent(p.model)}`, { method: 'DELETE' });
        await loadPrices();
      } }) : h('span', { class: 'muted', text: 'gengate.toml' })))));
  };
  priceForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(priceForm));
    const body = { per_task: Number(f.per_task || 0), per_image: Number(f.per_image || 0) };
    if (Number(f.per_video_second)) body.per_video_second = { '*': Number(f.per_video_second) };
    try {
      await api(`/admin/prices/${encodeURIComponent(f.model)}`, { method: 'PUT', body });
      priceNote.replaceChildren();
      await loadPrices();
    } catch (err) { priceNote.replaceChildren(failure(err)); }
  });
  main.replaceChildren(h('h1', { text: 'Channels' }),
    h('p', { class: 'muted', text: 'Health as this instance sees it (requests / errors in the last minute); in flight across every instance.' }),
    h('table', { id: 'channels' }, h('thead', {}, h('tr', {}, ['name', 'provider', 'source', 'status', 'health', 'in flight', 'req / err per min', 'learned job time', ''].map((c) => h('th', { text: c })))), body),
    form,
    h('h2', { text: 'Prices (credits)' }), priceForm, priceNote,
    h('table', { id: 'prices' }, h('thead', {}, h('tr', {}, ['model', 'per task', 'per image', 'per video second', 'source', ''].map((c) => h('th', { text: c })))), prices));
  await load();
  await loadPrices();
}

// ---- start -----------------------------------------------------------------------

document.getElementById('sign-out').addEventListener('click', () => {
  sessionStorage.clear();
  state.key = null;
  document.getElementById('nav').hidden = true;
  route();
});
window.addEventListener('hashchange', route);
window.gengateLoadedAt = Date.now();
if (state.key) {
  signIn(state.key).then(route, () => { sessionStorage.removeItem(KEY); state.key = null; signInPage(); });
} else {
  signInPage();
}
