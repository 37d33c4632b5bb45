// A run: its DAG as a graph, a grid of the pipeline's recent runs by task
// (Airflow's grid view), and a timeline of the run's attempts. All three
// follow the run live through GET /api/v1/runs/ID/events.
import { api, streamEvents } from '../api.js';
import { h, s, badge, fmtTime, fmtDuration, taskHref } from '../dom.js';
import { drawGraph, layout } from '../graph.js';

const STATES = ['pending', 'queued', 'running', 'succeeded', 'failed', 'upstream_failed', 'skipped', 'cancelled'];
const legend = () => h('div', { class: 'legend' }, STATES.map((st) => h('span', null, h('i', { class: 'cell st-' + st }), st)));
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export async function runPage(main, ctx, id, view = 'graph') {
  const t0 = performance.now();
  const tasks = new Map();
  let run = null, ordered = [], viewer = null;
  const state = h('span');
  const meta = h('p', { class: 'meta' });
  const body = h('div', { class: 'view' }, h('p', { class: 'muted' }, 'Loading…'));
  const tab = (v, label) => h('a', { href: `/ui/runs/${id}${v === 'graph' ? '' : '/' + v}`,
    class: v === view ? 'tab active' : 'tab' }, label);
  const title = h('h1', null, 'Run #' + id);
  main.replaceChildren(title, meta,
    h('nav', { class: 'tabs' }, tab('graph', 'Graph'), tab('grid', 'Grid'), tab('timeline', 'Timeline')),
    legend(), body);

  const showMeta = () => {
    title.replaceChildren(h('a', { href: '/ui/' }, run.pipeline), ` · run #${id} `, badge(run.state));
    const end = run.ended_unix_ms || Date.now();
    const counts = {};
    for (const t of tasks.values()) counts[t.state] = (counts[t.state] || 0) + 1;
    meta.replaceChildren(`v${run.version} · ${run.trigger} · created ${fmtTime(run.created_unix_ms)} · `,
      run.started_unix_ms ? fmtDuration(end - run.started_unix_ms) : 'not started', ' · ',
      Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', '));
  };

  const onEvent = async (name, ev) => {
    if (name !== 'run') return;
    run = ev.run;
    for (const t of ev.tasks) tasks.set(t.name, t);
    if (ev.full) {
      ordered = [...tasks.values()];
      const t1 = performance.now();
      viewer = await views[view](body, id, ordered, ctx);
      // Changes that arrived while the view was loading.
      for (const t of tasks.values()) viewer?.update(t);
      if (view === 'graph') {
        // Exposed for the browser test and the report's figure.
        window.loomStats = { tasks: ordered.length, firstRenderMs: Math.round(performance.now() - t0),
          drawMs: Math.round(performance.now() - t1), sinceLoadMs: Math.round(performance.now()) };
      }
    } else {
      for (const t of ev.tasks) viewer?.update(t);
    }
    viewer?.refresh?.();
    showMeta();
  };
  await streamEvents(`/runs/${id}/events`, (n, ev) => { onEvent(n, ev).catch(() => {}); }, ctx.signal);
  if (run && !TERMINAL.has(run.state) && !ctx.signal.aborted) meta.append(' · live updates stopped');
}

const views = {
  graph(body, id, tasks) {
    const g = drawGraph(id, tasks);
    body.replaceChildren(h('div', { class: 'graphbox' }, g.svg));
    return g;
  },

  // Rows: tasks in graph order; columns: the pipeline's recent runs.
  async grid(body, id, tasks, ctx) {
    const run = (await api(`/runs/${id}?tasks=0`));
    const list = (await api(`/runs?pipeline=${encodeURIComponent(run.pipeline)}&limit=20`)).runs
      .filter((r) => r.id !== Number(id)).slice(0, 19);
    const others = await Promise.all(list.map((r) => api('/runs/' + r.id)));
    const cols = [...others.reverse(), { ...run, id: Number(id), tasks }];
    const { order } = layout(tasks);
    const names = order.map((v) => tasks[v].name);
    const cells = new Map();
    const table = h('table', { id: 'grid', class: 'grid' },
      h('thead', null, h('tr', null, h('th', null, 'task'), cols.map((r) => h('th', null,
        h('a', { href: '/ui/runs/' + r.id, class: 'cell st-' + r.state, title: `#${r.id} ${r.state}` }))))),
      h('tbody', null, names.map((name) => h('tr', null, h('th', null, name), cols.map((r) => {
        const t = r.tasks.find ? r.tasks.find((x) => x.name === name) : null;
        const a = h('a', { href: taskHref(r.id, name), class: 'cell st-' + (t ? t.state : 'none'),
          title: `${name} in #${r.id}: ${t ? t.state : 'not in this version'}` });
        if (r.id === Number(id)) cells.set(name, a);
        return h('td', null, a);
      })))));
    if (ctx.signal.aborted) return null;
    body.replaceChildren(h('div', { class: 'gridbox' }, table));
    return {
      update(t) {
        const a = cells.get(t.name);
        if (a) { a.className = 'cell st-' + t.state; a.title = `${t.name} in #${id}: ${t.state}`; }
      },
    };
  },

  // Bars per attempt, rows per task by start time. Tasks tried more than
  // once have their earlier attempts fetched (only those).
  async timeline(body, id, tasks, ctx) {
    const byName = new Map(tasks.map((t) => [t.name, t]));
    const retried = tasks.filter((t) => t.attempts > 1).slice(0, 100);
    const earlier = new Map();
    await Promise.all(retried.map(async (t) => {
      const a = await api(`/runs/${id}/tasks/${encodeURIComponent(t.name)}/attempts`);
      earlier.set(t.name, a.attempts);
    }));
    const box = h('div', { class: 'timelinebox' });
    body.replaceChildren(box);
    let pending = false;
    const draw = () => {
      pending = false;
      const rows = [...byName.values()].filter((t) => t.started_unix_ms)
        .sort((a, b) => a.started_unix_ms - b.started_unix_ms);
      if (!rows.length) { box.replaceChildren(h('p', { class: 'muted' }, 'No task has started yet.')); return; }
      const now = Date.now();
      const bars = (t) => (earlier.get(t.name) || []).filter((a) => a.number < t.attempts)
        .map((a) => ({ from: a.started_unix_ms || a.dispatched_unix_ms, to: a.ended_unix_ms || now, state: a.state, n: a.number }))
        .concat([{ from: t.started_unix_ms, to: t.ended_unix_ms || now, state: t.state, n: t.attempts }]);
      const all = rows.flatMap(bars);
      const t0 = Math.min(...all.map((b) => b.from)), t1 = Math.max(...all.map((b) => b.to), t0 + 1);
      const LABEL = 180, WIDTH = 900, RH = 18;
      const x = (ms) => LABEL + ((ms - t0) / (t1 - t0)) * WIDTH;
      const ticks = [];
      for (let i = 0; i <= 5; i++) {
        const ms = t0 + ((t1 - t0) * i) / 5;
        ticks.push(s('g', { class: 'tick' }, s('line', { x1: x(ms), x2: x(ms), y1: 0, y2: rows.length * RH + 20 }),
          s('text', { x: x(ms), y: 12 }, '+' + fmtDuration(Math.round(ms - t0)))));
      }
      const svg = s('svg', { id: 'timeline', class: 'timeline', viewBox: `0 0 ${LABEL + WIDTH + 20} ${rows.length * RH + 24}`,
        width: LABEL + WIDTH + 20, height: rows.length * RH + 24 }, ticks,
      rows.map((t, i) => s('a', { href: taskHref(id, t.name) },
        s('text', { class: 'label', x: LABEL - 8, y: 20 + i * RH + 12 }, t.name.length > 26 ? t.name.slice(0, 25) + '…' : t.name),
        bars(t).map((b) => s('rect', { class: 'bar st-' + b.state, x: x(b.from), y: 20 + i * RH + 2,
          width: Math.max(2, x(b.to) - x(b.from)), height: RH - 4, rx: 2 },
        s('title', null, `${t.name} attempt ${b.n}: ${b.state}, ${fmtDuration(b.to - b.from)}`))))));
      box.replaceChildren(svg);
    };
    draw();
    return {
      update(t) { byName.set(t.name, t); },
      refresh() { if (!pending && !ctx.signal.aborted) { pending = true; setTimeout(draw, 250); } },
    };
  },
};
