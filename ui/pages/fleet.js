// Agents (resources and GPU use), models (versions, metrics, aliases) and
// events (and the runs they started).
import { api } from '../api.js';
import { h, badge, fmtTime, fmtBytes, table, runLink } from '../dom.js';

const meter = (used, total, text) => h('span', { class: 'meter', title: text },
  h('i', { style: null, 'data-pct': total ? Math.round((100 * used) / total) : 0 }), h('b', null, text));

// CSP allows no inline styles: widths are set through the CSSOM instead.
function sizeMeters(root) {
  for (const i of root.querySelectorAll('.meter i')) i.style.width = i.dataset.pct + '%';
}

export async function agentsPage(main, ctx) {
  const draw = async () => {
    const { agents } = await api('/agents');
    const rows = agents.map((a) => {
      const use = new Map((a.usage?.gpus || []).map((g) => [g.index, g]));
      const gpus = a.gpus.length ? h('ul', { class: 'gpus' }, a.gpus.map((g) => {
        const u = use.get(g.index);
        return h('li', null, `${g.index}: ${g.model} (${fmtBytes(g.memory_bytes)})`,
          u ? meter(u.utilization_percent, 100, `${u.utilization_percent}% · ${fmtBytes(u.memory_used_bytes)}`) : '',
          g.attempt_id ? h('span', { class: 'badge st-running' }, 'attempt ' + g.attempt_id) : '');
      })) : h('span', { class: 'muted' }, 'none');
      return [h('strong', null, a.name), badge(a.state),
        [a.cordoned ? h('span', { class: 'badge st-skipped' }, a.draining ? 'draining' : 'cordoned') : ''],
        a.hostname, `${a.running}/${a.slots}`,
        meter(a.cpus_used, a.cpus_usable, `${a.cpus_used}/${a.cpus_usable} CPUs`),
        meter(a.memory_used_bytes, a.memory_bytes, `${fmtBytes(a.memory_used_bytes)} / ${fmtBytes(a.memory_bytes)}`),
        a.usage ? `load ${a.usage.load1.toFixed(2)}` : '–', gpus, fmtTime(a.last_seen_unix_ms)];
    });
    const t = table(['Agent', 'State', '', 'Host', 'Tasks', 'CPUs reserved', 'Memory reserved', 'Load', 'GPUs', 'Last seen'],
      rows, 'No agents: start one with `loom-agent --server …`.');
    t.id = 'agents';
    main.replaceChildren(h('h1', null, 'Agents'), t);
    sizeMeters(main);
  };
  await draw();
  // Agents report every heartbeat; a page refresh every few seconds is plenty.
  const timer = setInterval(() => draw().catch(() => {}), 5000);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));
}

export async function modelsPage(main) {
  const { models } = await api('/models');
  const details = await Promise.all(models.map((m) => api('/models/' + encodeURIComponent(m.name))));
  main.replaceChildren(h('h1', null, 'Models'), models.length ? '' : h('p', { class: 'muted' }, 'No models registered yet.'),
    details.map((m) => {
      const aliasesOf = (v) => Object.entries(m.aliases).filter(([, n]) => n === v.version).map(([a]) => h('span', { class: 'badge st-succeeded' }, a));
      return h('section', { class: 'card' }, h('h2', null, m.name),
        table(['Version', 'Aliases', 'Run', 'Task', 'Metrics', 'Size', 'Created'], m.versions.map((v) => [
          'v' + v.version, aliasesOf(v), runLink(v.run_id), v.task,
          v.metrics ? h('code', null, JSON.stringify(v.metrics)) : '–', fmtBytes(v.size), fmtTime(v.created_unix_ms)])));
    }));
}

export async function eventsPage(main) {
  const { events } = await api('/events?limit=100');
  const outcome = (e) => (e.outcome || []).map((o) => h('div', null, `${o.pipeline}: `,
    o.run_id ? [o.decision, ' ', runLink(o.run_id)] : o.decision, o.reason ? h('span', { class: 'muted' }, ` (${o.reason})`) : ''));
  main.replaceChildren(h('h1', null, 'Events'), table(['#', 'Name', 'Source', 'Received', 'Payload', 'Started'],
    events.map((e) => [e.id, h('strong', null, e.name), e.source || '–', fmtTime(e.received_unix_ms),
      h('code', { class: 'payload' }, JSON.stringify(e.payload).slice(0, 200)), outcome(e).length ? outcome(e) : h('span', { class: 'muted' }, 'nothing')]),
    'No events yet.'));
}
