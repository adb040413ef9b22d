// app.js: the dashboard's shell. Routes every /ui/… URL to its page with the History API (a
// link inside the app changes the URL without a reload; back and forward work; every page is
// a URL a person can share), asks for an API key when the API wants one, and shows which key
// is in use and whether the live stream is connected.

import { currentKey, onKeyNeeded, setKey, whoami } from './api.js';
import { errorBox, h } from './dom.js';
import overview from './pages/overview.js';
import invocations from './pages/invocations.js';
import invocation from './pages/invocation.js';
import { workflowList, workflowPage } from './pages/workflows.js';
import tasks from './pages/tasks.js';
import triggers from './pages/triggers.js';

const ROUTES = [
  [/^\/ui$/, 'overview', overview],
  [/^\/ui\/invocations$/, 'invocations', invocations],
  [/^\/ui\/invocations\/([^/]+)$/, 'invocations', invocation],
  [/^\/ui\/workflows$/, 'workflows', workflowList],
  [/^\/ui\/workflows\/([^/]+)$/, 'workflows', workflowPage],
  [/^\/ui\/tasks$/, 'tasks', tasks],
  [/^\/ui\/triggers$/, 'triggers', triggers],
];

const main = document.getElementById('main');
const liveEl = document.getElementById('live');
const whoEl = document.getElementById('who');
let cleanup = null;
let generation = 0;

function setLive(state) {
  liveEl.className = `live ${state}`;
  liveEl.textContent = state === 'live' ? '● live' : state === 'reconnecting' ? '○ reconnecting' : '';
}

export function navigate(href) {
  history.pushState(null, '', href);
  render();
}

async function render() {
  const mine = ++generation;
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
  setLive('');
  const path = location.pathname.replace(/\/+$/, '') || '/ui';
  const found = ROUTES.map(([re, nav, page]) => [path.match(re), nav, page]).find(([m]) => m);
  main.replaceChildren();
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === found?.[1]);
  if (!found) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, path), '.'));
    return;
  }
  const [m, , page] = found;
  const ctx = {
    params: m.slice(1).map(decodeURIComponent),
    query: new URLSearchParams(location.search),
    setLive,
    navigate,
    current: () => mine === generation,
  };
  try {
    const done = await page(main, ctx);
    if (mine !== generation) { if (typeof done === 'function') done(); return; }
    cleanup = typeof done === 'function' ? done : null;
  } catch (e) {
    if (mine === generation) main.append(errorBox(e));
  }
  showWho();
}

async function showWho() {
  try {
    const me = await whoami();
    whoEl.textContent = me.keys_enabled ? `key: ${me.name} (${me.role})` : 'keys off';
    whoEl.dataset.role = me.role;
  } catch {
    whoEl.textContent = 'key: none';
  }
}

// The key dialog: shown when the API answers 401; the promise resolves with the key typed.
onKeyNeeded((why) => new Promise((resolve) => {
  const dialog = document.getElementById('key-dialog');
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  document.getElementById('key-why').textContent = why;
  input.value = '';
  const submit = (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    form.removeEventListener('submit', submit);
    dialog.close();
    resolve(key);
  };
  form.addEventListener('submit', submit);
  dialog.addEventListener('cancel', (e) => e.preventDefault(), { once: true });
  if (!dialog.open) dialog.showModal();
  input.focus();
}));

whoEl.addEventListener('click', () => {
  if (!currentKey()) return;
  setKey(null); // forget the key: the next request asks for one
  render();
});

document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a');
  const href = a?.getAttribute('href');
  if (!href || !href.startsWith('/ui') || a.getAttribute('target')) return;
  e.preventDefault();
  navigate(href);
});

window.addEventListener('popstate', render);
// Leaving the page closes its streams at once: a browser holds at most six connections to
// one host, and a stream left open until the page is torn down would hold one of them.
window.addEventListener('pagehide', () => {
  generation++;
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
});
render();
