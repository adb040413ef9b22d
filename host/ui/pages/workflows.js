// pages/workflows.js: /ui/workflows — the workflows and arrays, newest first; and
// /ui/workflows/{id} — one workflow: its status and counts per node status, its graph drawn
// with every node coloured by status (live from the stream), and pause, resume and cancel for
// a key that may write.

import { can, get, post, stream } from '../api.js';
import { dag, MAX_DRAWN } from '../charts.js';
import { badge, coalesce, errorBox, facts, fill, fmtTime, h, link, section, table } from '../dom.js';

const enc = encodeURIComponent;
const NODE_STATUSES = ['waiting', 'ready', 'running', 'done', 'failed', 'blocked', 'cancelled'];

export async function workflowList(root, ctx) {
  document.title = 'Workflows · Warden';
  const listEl = h('div', { id: 'workflow-list' });
  root.append(h('h1', {}, 'Workflows'), h('section', { class: 'card' }, listEl));
  async function load() {
    try {
      const { workflows } = await get('/v1/workflows?limit=200');
      fill(listEl, table([
        ['Id', (w) => link(`/ui/workflows/${enc(w.id)}`, h('code', {}, w.id))],
        ['Name', (w) => w.name],
        ['Kind', (w) => w.kind],
        ['Status', (w) => [badge(w.status), w.paused ? [' ', badge('paused')] : null]],
        ['Running at most', (w) => w.max_concurrently_running],
        ['Created', (w) => fmtTime(w.created_at)],
        ['Last change', (w) => fmtTime(w.updated_at)],
      ], workflows, { empty: 'No workflows. Create one with POST /v1/workflows.' }));
    } catch (e) { fill(listEl, errorBox(e)); }
  }
  await load();
  // A workflow's own status is not an event of the stream: look again every few seconds.
  const reload = coalesce(load, 1000);
  const stop = stream({}, (ev) => { if (ev.data?.workflow) reload(); }, (state) => ctx.setLive(state));
  const t = setInterval(load, 5000);
  return () => { stop(); reload.cancel(); clearInterval(t); };
}

export async function workflowPage(root, ctx) {
  const [id] = ctx.params;
  document.title = `Workflow ${id} · Warden`;
  const head = h('h1', {}, 'Workflow ', h('code', {}, id), ' ');
  const statusEl = h('span', { id: 'status' });
  head.append(statusEl);
  const actions = h('div', { class: 'actions', id: 'actions' });
  const notice = h('div');
  const actionError = h('div'); // stays until the next action (a reload clears `notice`)
  const factsEl = h('div', { class: 'cols' });
  const graphEl = h('div', { id: 'graph', class: 'graph' });
  const nodesEl = h('div', { id: 'nodes' });
  root.append(head, actions, actionError, notice, factsEl, section('Graph', {}, graphEl), section('Nodes', {}, nodesEl));
  const mayWrite = await can('write').catch(() => false);

  async function load() {
    let w;
    try {
      w = await get(`/v1/workflows/${enc(id)}`);
    } catch (e) { fill(notice, errorBox(e)); return; }
    fill(notice);
    fill(statusEl, badge(w.status, { 'data-testid': 'status' }), w.paused ? [' ', badge('paused')] : null);
    fill(factsEl,
      section('Summary', { class: 'grow' }, facts([
        ['Name', w.name], ['Kind', w.kind],
        ['Running at most', w.max_concurrently_running],
        ['Fail fast', w.fail_fast ? 'yes' : 'no'],
        w.max_attempts && ['Attempts per node', w.max_attempts],
        Object.keys(w.task_limits || {}).length && ['Per-task limits',
          Object.entries(w.task_limits).map(([t, n]) => `${t}: ${n}`).join(', ')],
        ['Created', fmtTime(w.created_at)], ['Last change', fmtTime(w.updated_at)],
        w.traceparent && ['Trace', h('code', { id: 'trace', title: 'W3C traceparent: trace id, then the workflow span its nodes\' calls are children of' },
          w.traceparent.split('-')[1] || w.traceparent)],
      ])),
      section('Nodes per status', { class: 'grow' }, h('ul', { class: 'counts', id: 'node-counts' },
        NODE_STATUSES.map((st) => h('li', {}, badge(st), ' ', h('b', {}, w.counts?.[st] ?? 0))))));
    const final = ['done', 'failed', 'cancelled'].includes(w.status);
    const offer = !mayWrite || final ? 'none' : w.paused ? 'resume' : 'pause';
    if (actions.dataset.offer !== offer) { // replaced only when they change (see invocation.js)
      actions.dataset.offer = offer;
      fill(actions, offer === 'none' ? null : [
        offer === 'resume'
          ? h('button', { id: 'resume', onclick: () => act('resume') }, 'Resume')
          : h('button', { id: 'pause', onclick: () => act('pause') }, 'Pause'),
        h('button', { id: 'cancel', class: 'danger', onclick: () => act('cancel') }, 'Cancel'),
      ]);
    }
    drawNodes(w);
  }

  function drawNodes(w) {
    const nodes = w.nodes || [];
    const svg = dag(nodes);
    fill(graphEl, svg || h('p', { class: 'hint' }, `${nodes.length} nodes: too many to draw (at most ${MAX_DRAWN}).`));
    fill(nodesEl, table([
      ['Node', (n) => h('code', {}, n.id)],
      ['Task', (n) => n.task],
      ['Status', (n) => badge(n.status)],
      ['Depends on', (n) => n.depends_on.join(', ') || '—'],
      ['Invocation', (n) => n.invocation ? link(`/ui/invocations/${enc(n.invocation)}`, h('code', {}, n.invocation)) : '—'],
      ['Last change', (n) => fmtTime(n.updated_at)],
    ], nodes.slice(0, 500), { empty: 'No nodes.' }),
    nodes.length > 500 ? h('p', { class: 'hint' }, `First 500 of ${nodes.length} nodes.`) : null);
  }

  async function act(what) {
    fill(actionError);
    try {
      await post(`/v1/workflows/${enc(id)}/${what}`);
      await load();
    } catch (e) { fill(actionError, errorBox(e)); }
  }

  await load();
  const reload = coalesce(load, 300);
  // A node turns done when the scheduler sees its invocation final, a moment after the event.
  const stop = stream({ workflow: id }, () => { reload(); setTimeout(reload, 1200); }, (state) => { ctx.setLive(state); if (state === 'live') reload(); });
  // The scheduler marks nodes ready or blocked without an invocation event: a slow look too.
  const t = setInterval(load, 5000);
  return () => { stop(); reload.cancel(); clearInterval(t); };
}
