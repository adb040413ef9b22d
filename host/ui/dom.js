// dom.js: building the page. Elements are made with h() and text is always set as text, never
// parsed as HTML, so nothing the API returns can inject markup. Also the formats of times,
// sizes and statuses every page shares.

const SVG_NS = 'http://www.w3.org/2000/svg';

function put(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h('a', {href: '/ui', class: 'x'}, 'text', child, [more]). */
export function h(tag, attrs, ...children) {
  return put(document.createElement(tag), attrs, children);
}

/** An SVG element, like h(). */
export function s(tag, attrs, ...children) {
  return put(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces the children of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  return put(el, {}, children);
}

/** A link inside the app (followed without a reload). */
export function link(href, ...children) {
  return h('a', { href }, ...children);
}

/** The statuses of an invocation, in the order of the status table. */
export const STATUSES = [
  'registered', 'pending', 'running', 'paused', 'resumed', 'retry', 'rerouted', 'killed',
  'pending_recovery', 'running_recovery', 'concurrency_controlled',
  'concurrency_controlled_final', 'success', 'failed', 'cancelled',
];
export const FINAL = new Set(['success', 'failed', 'cancelled', 'concurrency_controlled_final']);

/** A status as a coloured label (invocation, node, instance or workflow statuses alike). */
export function badge(status, attrs = {}) {
  const st = String(status ?? 'unknown');
  return h('span', { ...attrs, class: `badge s-${st}` }, st.replaceAll('_', ' '));
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/** How long ago `ms` was, seen from `now` (both on the database clock when the API gives it). */
export function fmtAgo(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return '—';
  return `${fmtDuration(Math.max(0, now - ms))} ago`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function fmtNumber(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en');
}

/** JSON shown as indented text. */
export function jsonBlock(v, attrs = {}) {
  return h('pre', { ...attrs, class: 'json' }, JSON.stringify(v, null, 2));
}

/** A table: columns are [heading, (row) => cell content]; rows become <tr>s. */
export function table(columns, rows, { empty = 'Nothing yet.', rowAttrs } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map(([head]) => h('th', {}, head)))),
    h('tbody', {}, rows.map((r) => h('tr', rowAttrs ? rowAttrs(r) : {},
      columns.map(([, cell]) => h('td', {}, cell(r)))))));
}

/** A titled part of a page. */
export function section(title, attrs, ...children) {
  return h('section', { ...attrs, class: `card ${attrs?.class || ''}` }, h('h2', {}, title), ...children);
}

/** Definition list of [term, value] pairs. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function errorBox(e) {
  const msg = e?.message || String(e);
  return h('div', { class: 'error', role: 'alert' }, msg);
}

/** Coalesces calls: fn runs `ms` after the first call of a burst, once, and a steady stream of
 * calls makes it run every `ms` (never starved). */
export function coalesce(fn, ms) {
  let t = null;
  const wrapped = () => {
    if (t !== null) return;
    t = setTimeout(() => { t = null; fn(); }, ms);
  };
  wrapped.cancel = () => { clearTimeout(t); t = null; };
  return wrapped;
}
