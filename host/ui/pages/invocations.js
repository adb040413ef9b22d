// pages/invocations.js: /ui/invocations — the invocations, newest first, filtered by task,
// status and text in the id (in the URL, so a filtered view can be shared), a page at a time
// (`cursor`). Statuses change in place as the live stream reports them; new calls appear on
// the first page.

import { get, qs, stream } from '../api.js';
import { badge, coalesce, errorBox, fill, fmtDuration, fmtTime, h, link, STATUSES, table } from '../dom.js';

const PAGE = 50;

export default async function invocations(root, ctx) {
  document.title = 'Invocations · Warden';
  const q = ctx.query;
  const task = q.get('task') || '';
  const status = q.get('status') || '';
  const text = q.get('q') || '';
  const cursor = q.get('cursor') || '';

  const taskSel = h('select', { name: 'task', id: 'f-task' }, h('option', { value: '' }, 'any task'));
  const statusSel = h('select', { name: 'status', id: 'f-status' }, h('option', { value: '' }, 'any status'),
    STATUSES.map((st) => h('option', { value: st, selected: st === status }, st)));
  const textIn = h('input', { name: 'q', id: 'f-q', type: 'search', placeholder: 'text in id', value: text });
  const form = h('form', { class: 'filters' }, taskSel, statusSel, textIn, h('button', { type: 'submit' }, 'Filter'),
    (task || status || text) ? link('/ui/invocations', 'clear') : null);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.navigate(`/ui/invocations${qs({ task: taskSel.value, status: statusSel.value, q: textIn.value.trim() })}`);
  });
  const listEl = h('div', { id: 'invocation-list' });
  const pager = h('div', { class: 'pager' });
  root.append(h('h1', {}, 'Invocations'), form, h('section', { class: 'card' }, listEl, pager));

  get('/v1/tasks').then((t) => {
    for (const d of t.tasks) taskSel.append(h('option', { value: d.name, selected: d.name === task }, d.name));
  }).catch(() => {});

  const rowsById = new Map();
  async function load() {
    try {
      const page = await get(`/v1/invocations${qs({ task, status, limit: PAGE, cursor })}`);
      let list = page.invocations;
      if (text) list = list.filter((i) => i.id.includes(text));
      // A whole id typed in: show that invocation even when it is not on this page.
      if (text && !list.length && /^[0-9a-f-]{36}/i.test(text)) {
        try { list = [await get(`/v1/invocations/${encodeURIComponent(text)}`)]; } catch { /* none */ }
      }
      rowsById.clear();
      fill(listEl, table([
        ['Id', (i) => link(`/ui/invocations/${encodeURIComponent(i.id)}`, h('code', {}, i.id))],
        ['Task', (i) => link(`/ui/invocations${qs({ task: i.task })}`, i.task)],
        ['Status', (i) => i.not_before
          ? h('span', {}, badge(i.status, { 'data-status-of': i.id }),
            h('span', { class: 'not-before' }, ` not before ${fmtTime(i.not_before)}`))
          : badge(i.status, { 'data-status-of': i.id })],
        ['Attempts', (i) => i.attempts],
        ['Owner', (i) => i.owner || '—'],
        ['Created', (i) => fmtTime(i.created_at)],
        ['Took', (i) => fmtDuration(i.updated_at - i.created_at)],
      ], list, {
        empty: text ? `No invocation on this page has “${text}” in its id.` : 'No invocations.',
        rowAttrs: (i) => ({ 'data-id': i.id }),
      }));
      for (const el of listEl.querySelectorAll('[data-status-of]')) rowsById.set(el.dataset.statusOf, el);
      fill(pager,
        cursor ? link(`/ui/invocations${qs({ task, status, q: text })}`, '« newest') : null,
        page.next_cursor ? link(`/ui/invocations${qs({ task, status, q: text, cursor: page.next_cursor })}`, 'older »') : null);
    } catch (e) {
      fill(listEl, errorBox(e));
    }
  }
  await load();

  // Live: a status change of a listed invocation updates its row; a new call (or a change of
  // one not listed) reloads the first page, at most twice a second.
  const reload = coalesce(load, 500);
  const stop = stream({ task }, (ev) => {
    if (ev.event !== 'status') return;
    const el = rowsById.get(ev.data.invocation);
    if (el) {
      if (status && ev.data.status !== status) { reload(); return; }
      // A delayed call that starts no longer waits for its time.
      el.parentElement?.querySelector('.not-before')?.remove();
      el.replaceWith(badge(ev.data.status, { 'data-status-of': ev.data.invocation }));
      rowsById.set(ev.data.invocation, listEl.querySelector(`[data-status-of="${CSS.escape(ev.data.invocation)}"]`));
    } else if (!cursor && (!status || ev.data.status === status)) {
      reload();
    }
  }, (state) => { ctx.setLive(state); if (state === 'live') reload(); });
  return () => { stop(); reload.cancel(); };
}
