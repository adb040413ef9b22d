// pages/invocation.js: /ui/invocations/{id} — one invocation: its status (live), arguments,
// result or error, the history as a timeline, its task instances (node, status, wall time,
// peak memory), what each attempt logged and printed, its children as a tree, and the cancel
// and rerun buttons for a key that may write.

import { can, get, post, stream } from '../api.js';
import {
  badge, coalesce, errorBox, facts, fill, FINAL, fmtBytes, fmtDuration, fmtTime, h, jsonBlock, link, section, table,
} from '../dom.js';

const enc = encodeURIComponent;

export default async function invocation(root, ctx) {
  const [id] = ctx.params;
  document.title = `${id} · Warden`;
  const statusEl = h('span', { id: 'status' });
  const actions = h('div', { class: 'actions', id: 'actions' });
  const factsEl = h('div');
  const ioEl = h('div', { class: 'cols' });
  const timelineEl = h('div', { id: 'timeline' });
  const instancesEl = h('div', { id: 'instances' });
  const logsEl = h('div', { id: 'logs' });
  const childrenEl = h('div', { id: 'children' });
  const notice = h('div');
  const actionError = h('div'); // stays until the next action (a reload clears `notice`)
  root.append(
    h('h1', {}, 'Invocation ', h('code', {}, id), ' ', statusEl),
    actions, actionError, notice, factsEl, ioEl,
    h('div', { class: 'cols' }, section('History', { class: 'grow' }, timelineEl), section('Children', { class: 'grow' }, childrenEl)),
    section('Task instances', {}, instancesEl),
    section('Logs and output', {}, logsEl),
  );

  const mayWrite = await can('write').catch(() => false);
  let current = null;

  async function load() {
    let inv;
    try {
      inv = await get(`/v1/invocations/${enc(id)}`);
    } catch (e) {
      fill(notice, errorBox(e));
      return;
    }
    current = inv;
    fill(notice);
    fill(statusEl, badge(inv.status, { 'data-testid': 'status' }));
    fill(factsEl, section('Summary', {}, facts([
      ['Task', link(`/ui/invocations?task=${enc(inv.task)}`, inv.task)],
      ['Attempts', `${inv.attempts}${inv.max_attempts ? ` of at most ${inv.max_attempts}` : ''}`],
      ['Owner', inv.owner || '—'],
      ['Component version', h('span', { id: 'component-version' }, inv.component_version
        ? `${inv.component_version} (bound at its first claim; its retries run it too)` : 'not bound yet (the current one at its first claim)')],
      ['Priority', h('span', { id: 'priority' }, `${inv.priority ?? 5} (0–9, higher runs first)`)],
      inv.parent && ['Parent', link(`/ui/invocations/${enc(inv.parent)}`, h('code', {}, inv.parent))],
      inv.workflow && ['Workflow', link(`/ui/workflows/${enc(inv.workflow)}`, h('code', {}, inv.workflow))],
      inv.progress && ['Progress', h('span', {}, h('progress', { max: inv.progress.total || 1, value: inv.progress.done }),
        ` ${inv.progress.done} / ${inv.progress.total}${inv.progress.message ? ` — ${inv.progress.message}` : ''}`)],
      ['Created', fmtTime(inv.created_at)],
      inv.not_before && ['Not before', h('span', { id: 'not-before' },
        `${fmtTime(inv.not_before)} (${fmtDuration(inv.not_before - inv.updated_at)} after it was ${inv.status})`)],
      inv.rate_limited_until && ['Rate limited', h('span', { id: 'rate-limited' },
        `until ${fmtTime(inv.rate_limited_until)}: its task's rate limit has no starts left in this window`)],
      ['Last change', `${fmtTime(inv.updated_at)} (${fmtDuration(inv.updated_at - inv.created_at)} after creation)`],
      ['Call id', h('code', {}, inv.call_id)],
      inv.idempotency_key && ['Idempotency key', h('code', {}, inv.idempotency_key)],
      inv.traceparent && ['Trace', h('code', { id: 'trace', title: 'W3C traceparent: trace id, then the span its attempts are children of' },
        inv.traceparent.split('-')[1] || inv.traceparent)],
    ])));
    fill(ioEl,
      section('Arguments', { class: 'grow' }, jsonBlock(inv.args, { id: 'args' })),
      inv.error
        ? section('Error', { class: 'grow' }, h('p', {}, badge(inv.error.kind)), h('pre', { class: 'json err', id: 'error' }, inv.error.message))
        : section('Result', { class: 'grow' }, inv.result === null || inv.result === undefined
          ? h('p', { class: 'empty' }, FINAL.has(inv.status) ? 'No result.' : 'Not finished yet.')
          : jsonBlock(inv.result, { id: 'result' })));
    // The buttons are replaced only when they change, so a live reload never swaps one away
    // under a person's pointer.
    const offer = !mayWrite ? 'none' : FINAL.has(inv.status) ? 'rerun' : 'cancel';
    if (actions.dataset.offer !== offer) {
      actions.dataset.offer = offer;
      fill(actions,
        offer === 'cancel' ? h('button', { id: 'cancel', class: 'danger', onclick: () => act('cancel') }, 'Cancel') : null,
        offer === 'rerun' ? h('button', { id: 'rerun', onclick: () => act('rerun') }, 'Rerun') : null);
    }
    await Promise.all([loadHistory(), loadInstances(), loadLogs(), loadChildren()]);
  }

  async function act(what) {
    fill(actionError);
    try {
      const r = await post(`/v1/invocations/${enc(id)}/${what}`);
      if (what === 'rerun') ctx.navigate(`/ui/invocations/${enc(r.id)}`);
      else await load();
    } catch (e) {
      fill(actionError, errorBox(e));
    }
  }

  async function loadHistory() {
    try {
      const { history } = await get(`/v1/invocations/${enc(id)}/history`);
      const t0 = history[0]?.at ?? 0;
      fill(timelineEl, h('ol', { class: 'timeline' }, history.map((e) => h('li', { class: `t-${e.status}` },
        h('span', { class: 'at', title: fmtTime(e.at) }, `+${fmtDuration(e.at - t0)}`),
        badge(e.status),
        h('span', { class: 'hint' }, e.attempt ? `attempt ${e.attempt}` : '', e.node ? ` on ${e.node}` : '')))));
    } catch (e) { fill(timelineEl, errorBox(e)); }
  }

  async function loadInstances() {
    try {
      const { instances } = await get(`/v1/invocations/${enc(id)}/instances`);
      fill(instancesEl, table([
        ['Attempt', (i) => i.attempt],
        ['Node', (i) => i.node],
        ['Version', (i) => i.component_version ?? '—'],
        ['Status', (i) => badge(i.status)],
        ['Wall time', (i) => fmtDuration(i.wall_ms)],
        ['Peak memory', (i) => fmtBytes(i.peak_memory_bytes)],
        ['Started', (i) => fmtTime(i.started_at)],
        ['Ended', (i) => i.ended_at ? fmtTime(i.ended_at) : `live, reports by ${fmtTime(i.report_by)}`],
        ['Error', (i) => i.error ? `${i.error.kind}: ${i.error.message}` : ''],
      ], instances, { empty: 'No attempt has started.' }));
    } catch (e) { fill(instancesEl, errorBox(e)); }
  }

  async function loadLogs() {
    try {
      const { attempts } = await get(`/v1/invocations/${enc(id)}/logs`);
      fill(logsEl, attempts.length ? attempts.map((a) => h('div', { class: 'attempt-logs' },
        h('h3', {}, `Attempt ${a.attempt}`, a.output_truncated ? h('span', { class: 'hint' }, ' (output truncated: the tail is kept)') : ''),
        logLines(a.logs),
        a.stdout ? [h('h4', {}, 'stdout'), h('pre', { class: 'out' }, a.stdout)] : null,
        a.stderr ? [h('h4', {}, 'stderr'), h('pre', { class: 'out err' }, a.stderr)] : null,
        !a.stdout && !a.stderr && !(Array.isArray(a.logs) && a.logs.length) ? h('p', { class: 'empty' }, 'Nothing logged or printed.') : null))
        : h('p', { class: 'empty' }, 'No attempt has started.'));
    } catch (e) { fill(logsEl, errorBox(e)); }
  }

  async function loadChildren() {
    try {
      fill(childrenEl, await childTree(id, 0));
    } catch (e) { fill(childrenEl, errorBox(e)); }
  }

  await load();
  // Live: the status from the event at once, everything else reloaded (coalesced).
  const reload = coalesce(load, 250);
  const stop = stream({ invocation: id }, (ev) => {
    if (ev.event !== 'status') return;
    fill(statusEl, badge(ev.data.status, { 'data-testid': 'status' }));
    reload();
  }, (state) => { ctx.setLive(state); if (state === 'live') reload(); });
  // Children and attempts' logs change without a status event of this invocation.
  const poll = setInterval(() => { if (current && !FINAL.has(current.status)) reload(); }, 5000);
  return () => { stop(); reload.cancel(); clearInterval(poll); };
}

function logLines(logs) {
  if (!Array.isArray(logs) || !logs.length) return null;
  return h('pre', { class: 'out' }, logs.map((l) => typeof l === 'object' && l
    ? `${l.at ? `${fmtTime(l.at)} ` : ''}${(l.level || '').toUpperCase().padEnd(5)} ${l.message ?? JSON.stringify(l)}\n`
    : `${String(l)}\n`).join(''));
}

/** The children of `id` as nested lists; a child with children of its own opens on a click. */
async function childTree(id, depth) {
  const { children } = await get(`/v1/invocations/${enc(id)}/children`);
  if (!children.length) return depth ? null : h('p', { class: 'empty' }, 'No children.');
  return h('ul', { class: 'tree' }, children.map((c) => {
    const label = [link(`/ui/invocations/${enc(c.id)}`, h('code', {}, c.id)), ' ', c.task, ' ', badge(c.status)];
    const more = h('details', {}, h('summary', {}, label));
    more.addEventListener('toggle', async () => {
      if (!more.open || more.dataset.loaded) return;
      more.dataset.loaded = '1';
      try {
        more.append(await childTree(c.id, depth + 1) || h('p', { class: 'empty' }, 'No children.'));
      } catch (e) { more.append(errorBox(e)); }
    }, { once: false });
    return h('li', {}, more);
  }));
}
