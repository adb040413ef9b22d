// pages/tasks.js: /ui/tasks — every task with its options (scratch space included), the
// resource use of its latest attempts (wall time and peak memory percentiles) beside its
// limits and the limits suggested from that use, its pins and who may run it, its rate limit;
// and the components with their current version, digest and upload time, and each one's
// stored versions (which is current, how many unfinished calls are bound to each).

import { get } from '../api.js';
import { badge, errorBox, facts, fill, fmtBytes, fmtDuration, fmtNumber, fmtTime, h, link, section, table } from '../dom.js';

const enc = encodeURIComponent;

export default async function tasks(root) {
  document.title = 'Tasks · Warden';
  const tasksEl = h('div', { id: 'tasks' });
  const compEl = h('div', { id: 'components' });
  root.append(h('h1', {}, 'Tasks and components'), tasksEl, section('Components', {}, compEl));

  const [t, c, p, r] = await Promise.all([
    get('/v1/tasks'), get('/v1/components'), get('/v1/cluster/pins').catch(() => ({ pins: [] })),
    get('/v1/rate-limits').catch(() => ({ rate_limits: [] })),
  ]);
  const pins = new Map(p.pins.map((x) => [x.task, x]));
  const limits = new Map(r.rate_limits.map((x) => [x.name, x]));
  const rateLimit = (name) => {
    const l = limits.get(name);
    const rule = l ? ` — ${fmtNumber(l.limit)} starts per ${fmtDuration(l.per_ms)}${l.key ? ` per ${l.key}` : ''}` : '';
    return h('span', { class: 'rate-limit' }, h('code', {}, name), rule);
  };
  fill(compEl, table([
    ['Name', (x) => h('b', {}, x.name)],
    ['Version', (x) => h('span', { 'data-version': x.name }, `${x.version}`)],
    ['Digest', (x) => h('code', { title: x.digest }, x.digest.slice(0, 19))],
    ['Size', (x) => fmtBytes(x.size_bytes)],
    ['Uploaded', (x) => fmtTime(x.uploaded_at)],
    ['Tasks', (x) => x.tasks.join(', ')],
  ], c.components, { empty: 'No components. Deploy one with `warden deploy FILE.wasm`.' }),
  c.components.map((x) => versions(x.name)));

  if (!t.tasks.length) { fill(tasksEl, h('p', { class: 'empty' }, 'No tasks.')); return; }
  fill(tasksEl, t.tasks.map((d) => {
    const use = h('div', {}, h('p', { class: 'hint' }, 'Loading resource use…'));
    get(`/v1/tasks/${enc(d.name)}/resources`).then((r) => fill(use, resources(r)), (e) => fill(use, errorBox(e)));
    const pin = pins.get(d.name);
    return section(d.name, { 'data-task': d.name },
      d.description ? h('p', {}, d.description) : null,
      h('div', { class: 'cols' },
        h('div', { class: 'grow' }, h('h3', {}, 'Options'), facts([
          ['Component', d.component],
          ['Attempts at most', d.max_attempts],
          ['Timeout', fmtDuration(d.timeout_ms)],
          ['Memory limit', fmtBytes(d.memory_limit_bytes)],
          ['Scratch space', d.scratch_bytes ? `${fmtBytes(d.scratch_bytes)} in /tmp` : 'none'],
          ['Registration concurrency', String(d.registration_concurrency)],
          ['Running concurrency', String(d.running_concurrency)],
          d.key_arguments?.length && ['Key arguments', d.key_arguments.join(', ')],
          ['Paused', d.paused ? badge('paused') : 'no'],
          ['Rate limit', d.rate_limit ? rateLimit(d.rate_limit) : 'none'],
          ['Pins', pin ? [pin.patterns.map((x) => h('span', { class: 'tag' }, x)), ' → ',
            pin.eligible.join(', ') || 'no live node', ' ', badge(pin.runnable ? 'runnable' : 'unrunnable')] : 'any node'],
          ['Calls', link(`/ui/invocations?task=${enc(d.name)}`, 'invocations')],
        ])),
        h('div', { class: 'grow' }, h('h3', {}, 'Resource use'), use)));
  }));
}

// The stored versions of one component, loaded on their own (a slow one does not hold the page).
function versions(name) {
  const el = h('div', { 'data-versions': name }, h('p', { class: 'hint' }, 'Loading versions…'));
  get(`/v1/components/${enc(name)}/versions`).then((v) => fill(el, h('h3', {}, `Versions of ${name}`), table([
    ['Version', (x) => [String(x.version), x.current ? [' ', badge('current')] : '']],
    ['Digest', (x) => h('code', { title: x.digest }, x.digest.slice(0, 19))],
    ['Size', (x) => fmtBytes(x.size_bytes)],
    ['Uploaded', (x) => fmtTime(x.uploaded_at)],
    ['Unfinished calls bound', (x) => fmtNumber(x.unfinished)],
  ], v.versions, { empty: 'No versions.' }), h('p', { class: 'hint' },
    `Roll back with \`warden rollback ${name}\`; calls keep the version they started on.`)), (e) => fill(el, errorBox(e)));
  return el;
}

function resources(r) {
  if (!r.attempts) return h('p', { class: 'empty' }, 'No attempts yet.');
  const row = (label, p, f) => h('tr', {}, h('th', {}, label), ['p50', 'p90', 'p99', 'max'].map((k) => h('td', {}, f(p[k]))));
  return [
    h('p', { class: 'hint' }, `Latest ${fmtNumber(r.attempts)} attempts: `,
      Object.entries(r.by_status).map(([st, n]) => [badge(st), ` ${n} `])),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}), ['p50', 'p90', 'p99', 'max'].map((k) => h('th', {}, k)))),
      h('tbody', {}, row('Wall time', r.wall_ms, fmtDuration), row('Peak memory', r.peak_memory_bytes, fmtBytes))),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}), h('th', {}, 'Limit now'), h('th', {}, 'Suggested'))),
      h('tbody', {},
        h('tr', {}, h('th', {}, 'Timeout'), h('td', {}, fmtDuration(r.current.timeout_ms)), h('td', {}, fmtDuration(r.suggested.timeout_ms))),
        h('tr', {}, h('th', {}, 'Memory'), h('td', {}, fmtBytes(r.current.memory_limit_bytes)), h('td', {}, fmtBytes(r.suggested.memory_limit_bytes))))),
  ];
}
