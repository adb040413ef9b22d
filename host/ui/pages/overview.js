// pages/overview.js: /ui — the cluster's nodes (labels, liveness, the leader and its epoch,
// tokens, slots in use, last heartbeat), the calls, successes and failures per second over the
// last five minutes (counted from the live stream), the invocations per status, and the pinned
// tasks no live node may run.

import { get, stream } from '../api.js';
import { RateChart } from '../charts.js';
import { badge, errorBox, fill, fmtAgo, fmtNumber, fmtTime, h, link, section, STATUSES, table } from '../dom.js';

export default async function overview(root, ctx) {
  document.title = 'Overview · Warden';
  const nodesEl = h('div', { id: 'nodes' });
  const chartEl = h('div', { id: 'rates' });
  const legendEl = h('div');
  const countsEl = h('div', { id: 'counts' });
  const pinsEl = h('div', { id: 'pins' });
  root.append(
    h('h1', {}, 'Overview'),
    section('Nodes', {}, nodesEl),
    h('div', { class: 'cols' },
      section('Calls per second', { class: 'grow' }, legendEl, chartEl,
        h('p', { class: 'hint' }, 'Counted from the live event stream since this page opened.')),
      section('Invocations by status', {}, countsEl)),
    section('Pinned tasks', {}, pinsEl),
  );

  const chart = new RateChart({
    windowSec: 180,
    bucketSec: 2,
    series: [
      { key: 'routed', label: 'routed' },
      { key: 'success', label: 'succeeded' },
      { key: 'failed', label: 'failed' },
    ],
  });
  const draw = () => { fill(chartEl, chart.render()); fill(legendEl, chart.legend()); };

  async function loadNodes() {
    try {
      const [n, t] = await Promise.all([get('/v1/cluster/nodes'), get('/v1/cluster/tokens')]);
      chart.syncClock(n.now);
      fill(nodesEl,
        h('p', { class: 'hint' },
          n.leader ? ['Leader ', h('b', {}, n.leader), ` (lease epoch ${n.lease_epoch})`] : 'No leader yet',
          ` · ring version ${t.version}, ${fmtNumber(t.total_tokens)} tokens`,
          t.spread !== null && t.spread !== undefined ? `, spread ${t.spread}` : ''),
        table([
          ['Node', (x) => h('b', { class: 'node-name' }, x.name)],
          ['Labels', (x) => x.labels.length ? x.labels.map((l) => h('span', { class: 'tag' }, l)) : '—'],
          ['Live', (x) => badge(x.live ? 'live' : x.left_at ? 'left' : 'dead')],
          ['Leader', (x) => x.leader ? `★ epoch ${n.lease_epoch}` : ''],
          ['Tokens', (x) => fmtNumber(t.distribution?.[x.name] ?? x.tokens)],
          ['Slots used', (x) => h('span', { class: 'slots' }, meter(x.running, x.capacity), ` ${x.running} / ${x.capacity}`)],
          ['Owned', (x) => fmtNumber(x.owned)],
          ['Last heartbeat', (x) => h('span', { title: fmtTime(x.last_heartbeat) }, fmtAgo(x.last_heartbeat, n.now))],
          ['Started', (x) => fmtTime(x.started_at)],
        ], n.nodes, { empty: 'No nodes.', rowAttrs: (x) => ({ 'data-node': x.name }) }));
    } catch (e) {
      fill(nodesEl, errorBox(e));
    }
  }

  async function loadCounts() {
    try {
      const c = await get('/v1/invocations/count');
      const per = new Map();
      for (const { status, count } of c.counts) per.set(status, (per.get(status) || 0) + count);
      const rows = STATUSES.filter((st) => per.get(st)).map((st) => ({ status: st, count: per.get(st) }));
      fill(countsEl,
        h('p', {}, h('b', {}, fmtNumber(c.total)), ' in all'),
        table([
          ['Status', (r) => link(`/ui/invocations?status=${r.status}`, badge(r.status))],
          ['Invocations', (r) => fmtNumber(r.count)],
        ], rows, { empty: 'No invocations yet.' }));
    } catch (e) {
      fill(countsEl, errorBox(e));
    }
  }

  async function loadPins() {
    try {
      const p = await get('/v1/cluster/pins');
      const unrunnable = new Set(p.unrunnable);
      fill(pinsEl,
        unrunnable.size
          ? h('p', { class: 'warn', id: 'unrunnable' }, `${unrunnable.size} pinned task(s) no live node may run: `,
            [...unrunnable].map((t) => h('code', {}, t)))
          : h('p', { class: 'hint' }, 'Every pinned task has a live node that may run it.'),
        table([
          ['Task', (x) => x.task],
          ['Patterns', (x) => x.patterns.map((l) => h('span', { class: 'tag' }, l))],
          ['Eligible nodes', (x) => x.eligible.join(', ') || '—'],
          ['Runnable', (x) => badge(x.runnable ? 'yes' : 'no')],
        ], p.pins, { empty: 'No task is pinned.' }));
    } catch (e) {
      fill(pinsEl, errorBox(e));
    }
  }

  await Promise.all([loadNodes(), loadCounts(), loadPins()]);
  draw();
  const stop = stream({}, (ev) => {
    if (ev.event !== 'status') return;
    const st = ev.data.status;
    if (st === 'registered') chart.add('routed', ev.data.at);
    if (st === 'success' || st === 'failed') chart.add(st, ev.data.at);
  }, (state) => ctx.setLive(state));
  const timers = [
    setInterval(draw, 1000),
    setInterval(loadNodes, 2000),
    setInterval(loadCounts, 3000),
    setInterval(loadPins, 10_000),
  ];
  return () => { stop(); timers.forEach(clearInterval); };
}

function meter(used, total) {
  const m = h('meter', { min: 0, max: Math.max(total, 1), value: used });
  return m;
}
