// api.js: the daemon's HTTP API as the dashboard uses it. The API key lives in the browser's
// session storage (this tab only, gone when it closes) and goes out as `Authorization: Bearer`.
// When the API answers 401 the page asks for a key (app.js shows the dialog) and tries again.
// The live stream is read with fetch() and parsed here, not with EventSource, which cannot
// send headers: the key never appears in a URL or a log line.

const KEY = 'warden.key';
let prompt = async () => { throw new Error('no key prompt'); };
let asking = null;
let who = null;

/** Installs the function that asks the person for a key (returns a Promise of it). */
export function onKeyNeeded(fn) { prompt = fn; }

export function currentKey() { return sessionStorage.getItem(KEY); }

export function setKey(k) {
  if (k) sessionStorage.setItem(KEY, k); else sessionStorage.removeItem(KEY);
  who = null;
}

/** An error answer of the API (its one error shape: {"error": {"code", "message"}}). */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || (typeof body === 'string' && body) || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  const k = currentKey();
  if (k) h.Authorization = `Bearer ${k}`;
  return h;
}

/** Asks for a key once, however many requests are waiting for one. */
function askKey() {
  if (!asking) {
    const why = currentKey() ? 'The daemon does not know this key.' : 'This daemon needs an API key.';
    asking = prompt(why).then((k) => { setKey(k); asking = null; });
  }
  return asking;
}

/** method + path (+ JSON body) → the parsed JSON answer; throws ApiError on 4xx/5xx. */
export async function request(method, path, body) {
  for (;;) {
    const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const r = await fetch(path, init);
    if (r.status === 401) { await askKey(); continue; }
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body);

/** A query string of the non-empty entries. */
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') p.set(k, v);
  const t = p.toString();
  return t ? `?${t}` : '';
}

const RANK = { read: 1, write: 2, admin: 3 };

/** Who this key is: {keys_enabled, name, role}; cached until the key changes. */
export function whoami() {
  if (!who) who = get('/v1/whoami').catch((e) => { who = null; throw e; });
  return who;
}

/** Whether the current key may do what needs `role` (read, write or admin). */
export async function can(role) {
  const me = await whoami();
  return (RANK[me.role] || 0) >= RANK[role];
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Follows GET /v1/events/stream with the given filters (task, workflow, invocation) and calls
 * onEvent({event, id, data}) for each event. Reconnects with Last-Event-ID after a break, so
 * nothing is missed. onState('live' | 'reconnecting') tells the page how it stands: a page
 * reloads what it shows when the stream (re)starts, for what changed before it was subscribed.
 * Returns a function that stops it.
 */
export function stream(filters, onEvent, onState = () => {}) {
  const ctl = new AbortController();
  let stopped = false;
  let last = null;
  (async () => {
    let delay = 500;
    while (!stopped) {
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (last !== null) h['Last-Event-ID'] = String(last);
        const r = await fetch(`/v1/events/stream${qs(filters)}`, { headers: h, signal: ctl.signal, cache: 'no-store' });
        if (r.status === 401) { await askKey(); continue; }
        if (!r.ok) throw new ApiError(r.status, null);
        onState('live');
        delay = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        read: for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replaceAll('\r\n', '\n');
          let end;
          while ((end = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            const ev = parseBlock(block);
            if (!ev) continue;
            if (ev.id !== null) last = ev.id;
            if (ev.event === 'lagged') { reader.cancel().catch(() => {}); break read; } // too slow: resume from `last`
            try { onEvent(ev); } catch (e) { console.error(e); }
          }
        }
      } catch (e) {
        if (stopped) return;
        console.warn('event stream:', e);
      }
      if (stopped) return;
      onState('reconnecting');
      await sleep(delay);
      delay = Math.min(delay * 2, 10_000);
    }
  })();
  return () => { stopped = true; ctl.abort(); };
}

function parseBlock(block) {
  let event = 'message';
  let id = null;
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue; // a comment: the keep-alive
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let v = i < 0 ? '' : line.slice(i + 1);
    if (v.startsWith(' ')) v = v.slice(1);
    if (field === 'event') event = v;
    else if (field === 'id') id = Number(v);
    else if (field === 'data') data.push(v);
  }
  if (!data.length && id === null) return null;
  const text = data.join('\n');
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON: keep the text */ }
  return { event, id, data: parsed };
}
