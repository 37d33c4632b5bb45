// Pipelines: each with its latest runs (coloured by state) and its next
// trigger; below, the most recent runs of all pipelines.
import { api } from '../api.js';
import { h, badge, fmtTime, fmtDuration, table, runLink } from '../dom.js';

function describeTrigger(t) {
  const kind = t.kind || Object.keys(t).find((k) => ['schedule', 'data', 'event'].includes(k)) || 'trigger';
  const what = t.schedule || t.cron || t.name || t.event || t.path || '';
  return `${kind} ${what}`.trim();
}

function nextTrigger(triggers) {
  if (!triggers.length) return h('span', { class: 'muted' }, 'manual only');
  const next = triggers.filter((t) => t.next_fire_unix_ms).sort((a, b) => a.next_fire_unix_ms - b.next_fire_unix_ms)[0];
  return h('span', null,
    next ? [h('strong', null, fmtTime(next.next_fire_unix_ms)), ' · ', describeTrigger(next)]
      : triggers.map(describeTrigger).join(', '),
    triggers.some((t) => t.paused) ? h('span', { class: 'badge st-cancelled' }, 'paused') : '');
}

export async function pipelinesPage(main, ctx) {
  const [p, r, t] = await Promise.all([api('/pipelines'), api('/runs?limit=500'), api('/triggers')]);
  const runsOf = new Map();
  for (const run of r.runs) {
    if (!runsOf.has(run.pipeline)) runsOf.set(run.pipeline, []);
    runsOf.get(run.pipeline).push(run);
  }
  const trigOf = (name) => t.triggers.filter((x) => x.pipeline === name);
  const rows = p.pipelines.map((pl) => {
    const recent = (runsOf.get(pl.name) || []).slice(0, 12).reverse();
    return [
      h('strong', null, pl.name), 'v' + pl.latest_version, pl.tasks,
      h('span', { class: 'runstrip' }, recent.map((run) => h('a', {
        href: '/ui/runs/' + run.id, class: 'cell st-' + run.state,
        title: `#${run.id} ${run.state} · ${fmtTime(run.created_unix_ms)}` }))),
      nextTrigger(trigOf(pl.name)),
    ];
  });
  const runRows = r.runs.slice(0, 25).map((run) => [
    runLink(run.id), run.pipeline, badge(run.state), run.trigger, fmtTime(run.created_unix_ms),
    fmtDuration(run.started_unix_ms && ((run.ended_unix_ms || Date.now()) - run.started_unix_ms)),
  ]);
  main.replaceChildren(
    h('h1', null, 'Pipelines'),
    h('div', { id: 'pipelines' }, table(['Pipeline', 'Version', 'Tasks', 'Recent runs', 'Next trigger'], rows,
      'No pipelines yet: submit one with `loom submit dag.yaml`.')),
    h('h2', null, 'Recent runs'),
    table(['Run', 'Pipeline', 'State', 'Trigger', 'Created', 'Duration'], runRows, 'No runs yet.'));
}
