// pages/triggers.js: /ui/triggers — every trigger with the task it calls, its condition, its
// arguments and state, and its latest runs (each linked to the invocation it routed).

import { get } from '../api.js';
import { errorBox, facts, fill, fmtTime, h, jsonBlock, link, section, table } from '../dom.js';

const enc = encodeURIComponent;

export default async function triggers(root) {
  document.title = 'Triggers · Warden';
  const listEl = h('div', { id: 'triggers' });
  root.append(h('h1', {}, 'Triggers'), listEl);
  const { triggers: list } = await get('/v1/triggers');
  if (!list.length) {
    fill(listEl, h('p', { class: 'empty' }, 'No triggers. Create one with POST /v1/triggers.'));
    return;
  }
  fill(listEl, list.map((t) => {
    const runs = h('div', {}, h('p', { class: 'hint' }, 'Loading runs…'));
    get(`/v1/triggers/${enc(t.id)}`).then((v) => fill(runs, table([
      ['At', (r) => fmtTime(r.at)],
      ['Run key', (r) => h('code', {}, r.run_key)],
      ['Invocation', (r) => r.invocation_id ? link(`/ui/invocations/${enc(r.invocation_id)}`, h('code', {}, r.invocation_id)) : '—'],
    ], v.runs, { empty: 'Not fired yet.' })), (e) => fill(runs, errorBox(e)));
    return section(`Trigger ${t.id}`, { 'data-trigger': t.id },
      h('div', { class: 'cols' },
        h('div', { class: 'grow' }, facts([
          ['Task', link(`/ui/invocations?task=${enc(t.task)}`, t.task)],
          ['Condition', condition(t.on)],
          ['Arguments', t.args !== null && t.args !== undefined ? jsonBlock(t.args) : `from ${JSON.stringify(t.args_from)}`],
          ['Created', fmtTime(t.created_at)],
          ['State', jsonBlock(t.state)],
        ])),
        h('div', { class: 'grow' }, h('h3', {}, 'Runs'), runs)));
  }));
}

/** A condition in words where its shape is known, else as JSON. */
function condition(on) {
  if (on && typeof on === 'object') {
    const kind = on.type || on.kind || Object.keys(on)[0];
    return h('span', {}, h('b', {}, String(kind)), ' ', h('code', {}, JSON.stringify(on)));
  }
  return h('code', {}, JSON.stringify(on));
}
