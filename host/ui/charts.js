// charts.js: the two drawings of the dashboard, as SVG made by hand: the rate chart of the
// overview (calls, successes and failures per second over the last minutes, counted from the
// live stream) and a workflow's graph (layered by depth, nodes coloured by status).

import { h, s } from './dom.js';

/** Counts events per bucket over a sliding window and draws them as rates per second. */
export class RateChart {
  constructor({ windowSec = 300, bucketSec = 5, series }) {
    this.windowMs = windowSec * 1000;
    this.bucketMs = bucketSec * 1000;
    this.series = series; // [{key, label}]
    this.buckets = new Map(); // bucket start (ms) → {key: count}
    this.offset = 0; // database clock − browser clock
  }

  /** The database clock's now, from an answer of the API that carries it. */
  syncClock(dbNow) { this.offset = dbNow - Date.now(); }

  now() { return Date.now() + this.offset; }

  add(key, at) {
    const b = Math.floor(at / this.bucketMs) * this.bucketMs;
    if (b < this.now() - this.windowMs - this.bucketMs) return;
    const row = this.buckets.get(b) || {};
    row[key] = (row[key] || 0) + 1;
    this.buckets.set(b, row);
  }

  /** The rate per second of `key` over the last `sec` seconds (complete buckets). */
  recent(key, sec = 30) {
    const end = Math.floor(this.now() / this.bucketMs) * this.bucketMs;
    let n = 0;
    for (let b = end - sec * 1000; b < end; b += this.bucketMs) n += this.buckets.get(b)?.[key] || 0;
    return n / sec;
  }

  render() {
    const W = 640, H = 180, L = 44, R = 8, T = 10, B = 24;
    const end = Math.floor(this.now() / this.bucketMs) * this.bucketMs;
    const start = end - this.windowMs;
    for (const b of this.buckets.keys()) if (b < start) this.buckets.delete(b);
    const xs = [];
    // Up to the last complete bucket: the current one is still filling and would dip.
    for (let b = start; b < end; b += this.bucketMs) xs.push(b);
    const rate = (b, k) => (this.buckets.get(b)?.[k] || 0) / (this.bucketMs / 1000);
    let max = 0;
    for (const b of xs) for (const { key } of this.series) max = Math.max(max, rate(b, key));
    max = niceCeil(max || 1);
    const x = (b) => L + ((b - start) / this.windowMs) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const grid = [0, max / 2, max].map((v) => [
      s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: L - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, fmtRate(v)),
    ]);
    const ticks = [];
    for (let m = this.windowMs / 60_000; m >= 0; m--) {
      const anchor = m === 0 ? 'end' : m === this.windowMs / 60_000 ? 'start' : 'middle';
      ticks.push(s('text', { x: x(end - m * 60_000), y: H - 6, class: 'axis', 'text-anchor': anchor },
        m === 0 ? 'now' : `−${m} min`));
    }
    const lines = this.series.map(({ key }) => s('polyline', {
      class: `line k-${key}`,
      points: xs.map((b) => `${x(b).toFixed(1)},${y(rate(b, key)).toFixed(1)}`).join(' '),
    }));
    return s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': 'calls per second' },
      grid, ticks, lines);
  }

  legend() {
    return h('ul', { class: 'legend' }, this.series.map(({ key, label }) =>
      h('li', { class: `k-${key}` }, h('i', {}), `${label}: `, h('b', {}, fmtRate(this.recent(key))), '/s')));
  }
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmtRate(v) {
  if (Number.isInteger(v)) return String(v);
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2).replace(/\.?0+$/, '') || '0';
}

/** Most nodes drawn; a larger workflow shows its counts and table only. */
export const MAX_DRAWN = 1500;

/**
 * The graph of a workflow's nodes ([{id, task, status, invocation, depends_on}]): one column
 * per depth (the longest path from a root), each column ordered by the mean row of its
 * upstream nodes, edges as curves from upstream to downstream. Each node links to its
 * invocation. `null` past MAX_DRAWN nodes.
 */
export function dag(nodes) {
  if (nodes.length > MAX_DRAWN) return null;
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const depth = new Map();
  for (const n of nodes) {
    // Iterative depth-first: a long chain must not overflow the call stack.
    const stack = [n];
    while (stack.length) {
      const top = stack[stack.length - 1];
      if (depth.has(top.id)) { stack.pop(); continue; }
      const ups = (top.depends_on || []).map((d) => byId.get(d)).filter(Boolean);
      const todo = ups.filter((u) => !depth.has(u.id));
      if (todo.length) { stack.push(...todo); continue; }
      depth.set(top.id, ups.length ? 1 + Math.max(...ups.map((u) => depth.get(u.id))) : 0);
      stack.pop();
    }
  }
  const layers = [];
  for (const n of nodes) (layers[depth.get(n.id)] ||= []).push(n);
  const row = new Map();
  layers.forEach((layer, d) => {
    if (d > 0) {
      const key = (n) => {
        const rs = (n.depends_on || []).map((u) => row.get(u)).filter((r) => r !== undefined);
        return rs.length ? rs.reduce((a, b) => a + b, 0) / rs.length : 0;
      };
      layer.sort((a, b) => key(a) - key(b));
    }
    layer.forEach((n, i) => row.set(n.id, i));
  });
  const NW = 150, NH = 40, GX = 56, GY = 14, PAD = 8;
  const pos = (id) => ({ x: PAD + depth.get(id) * (NW + GX), y: PAD + row.get(id) * (NH + GY) });
  const tallest = Math.max(...layers.map((l) => l.length));
  const W = PAD * 2 + layers.length * NW + (layers.length - 1) * GX;
  const H = PAD * 2 + tallest * NH + (tallest - 1) * GY;
  const edges = [];
  for (const n of nodes) {
    const b = pos(n.id);
    for (const u of n.depends_on || []) {
      if (!byId.has(u)) continue;
      const a = pos(u);
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
      edges.push(s('path', { class: 'edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }
  }
  const boxes = nodes.map((n) => {
    const { x, y } = pos(n.id);
    const g = s('g', { class: `node s-${n.status}`, 'data-node': n.id, 'data-status': n.status,
      transform: `translate(${x},${y})` },
    s('title', {}, `${n.id} (${n.task}): ${n.status}`),
    s('rect', { width: NW, height: NH, rx: 6 }),
    s('text', { x: 10, y: 17, class: 'name' }, clip(n.id, 20)),
    s('text', { x: 10, y: 32, class: 'sub' }, `${clip(n.task, 12)} · ${n.status}`));
    return n.invocation ? s('a', { href: `/ui/invocations/${encodeURIComponent(n.invocation)}` }, g) : g;
  });
  return s('svg', { class: 'dag', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': 'workflow graph' }, edges, boxes);
}

function clip(t, n) {
  t = String(t);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}
