// A task of a run: its live log (followed while the attempt runs), its
// attempts, its metrics and its artifacts.
import { api, streamEvents, streamText, download } from '../api.js';
import { h, badge, fmtTime, fmtDuration, fmtBytes, table, runLink } from '../dom.js';

const MAX_LOG = 2 << 20; // characters kept on screen; the full log is a download away

export async function taskPage(main, ctx, id, name) {
  const enc = encodeURIComponent(name);
  const head = h('h1', null, name);
  const meta = h('p', { class: 'meta' });
  const log = h('pre', { id: 'log', class: 'log' });
  const logNote = h('span', { class: 'muted', id: 'log-state' });
  const attempts = h('div', { id: 'attempts' });
  const metrics = h('div', { id: 'metrics' });
  const artifacts = h('div', { id: 'artifacts' });
  main.replaceChildren(head, meta,
    h('h2', null, 'Log ', logNote), log,
    h('h2', null, 'Attempts'), attempts,
    h('h2', null, 'Metrics'), metrics,
    h('h2', null, 'Artifacts'), artifacts);

  let task = null, run = null, shownAttempt = -1, logCtl = null;

  // Follows the log of attempt n (0: the current or first one). A new
  // attempt (a retry) starts a new stream.
  const follow = (n) => {
    logCtl?.abort();
    logCtl = new AbortController();
    ctx.signal.addEventListener('abort', () => logCtl.abort());
    shownAttempt = n;
    log.replaceChildren();
    logNote.textContent = '(following…)';
    let size = 0;
    const stick = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    streamText(`/runs/${id}/tasks/${enc}/log?follow=1${n ? '&attempt=' + n : ''}`, (text) => {
      const atEnd = stick();
      size += text.length;
      log.append(text);
      if (size > MAX_LOG) { log.textContent = log.textContent.slice(-MAX_LOG / 2); size = MAX_LOG / 2; }
      if (atEnd) log.scrollTop = log.scrollHeight;
    }, logCtl.signal).then(() => { if (!logCtl.signal.aborted) logNote.textContent = '(complete)'; },
      (e) => { logNote.textContent = '(' + e.message + ')'; });
  };

  const showAttempts = async () => {
    const a = await api(`/runs/${id}/tasks/${enc}/attempts`);
    attempts.replaceChildren(table(['#', 'State', 'Agent', 'Started', 'Duration', 'Exit', 'CPU', 'Max RSS', 'Log', 'Error'],
      a.attempts.map((x) => [x.number, badge(x.state), x.agent || '–', fmtTime(x.started_unix_ms),
        fmtDuration(x.started_unix_ms && ((x.ended_unix_ms || Date.now()) - x.started_unix_ms)),
        x.signal ? 'signal ' + x.signal : x.exit_code ?? '–',
        fmtDuration(x.user_cpu_us !== null ? Math.round((x.user_cpu_us + x.sys_cpu_us) / 1000) : null),
        fmtBytes(x.max_rss_bytes), fmtBytes(x.log_bytes),
        x.error || '',
      ]), 'Not started yet.'));
  };

  const showMetrics = async () => {
    const hist = await api(`/pipelines/${encodeURIComponent(run.pipeline)}/tasks/${enc}/metrics?limit=20`).catch(() => ({ runs: [] }));
    const rows = [];
    if (task.metrics) rows.push([runLink(id, 'this run'), h('code', null, JSON.stringify(task.metrics))]);
    for (const r of hist.runs) if (String(r.run_id) !== String(id)) rows.push([runLink(r.run_id), h('code', null, JSON.stringify(r.metrics))]);
    metrics.replaceChildren(table(['Run', 'Metrics'], rows, 'No metrics reported (a task reports them in metrics.json).'));
  };

  const showArtifacts = async () => {
    const a = await api(`/runs/${id}/artifacts?task=${enc}`);
    artifacts.replaceChildren(table(['Path', 'Size', 'Hash', ''], a.artifacts.map((x) => [
      x.path, fmtBytes(x.size), h('code', { title: x.hash }, x.hash.slice(0, 12)),
      h('button', { type: 'button', class: 'download', 'data-path': x.path, onclick: () =>
        download(`/runs/${id}/artifacts?task=${enc}&path=${encodeURIComponent(x.path)}`, x.path.split('/').pop())
          .catch((e) => alert(e.message)) }, 'Download'),
    ]), 'No artifacts.'));
  };

  const refresh = () => Promise.all([showAttempts(), showMetrics(), showArtifacts()]).catch(() => {});

  await streamEvents(`/runs/${id}/events`, (nameEv, ev) => {
    if (nameEv !== 'run') return;
    run = ev.run;
    const t = ev.tasks.find((x) => x.name === name);
    if (ev.full && !t) { meta.replaceChildren(h('span', { class: 'error' }, `run ${id} has no task "${name}"`)); return; }
    if (!t) return;
    const first = !task;
    task = t;
    head.replaceChildren(h('a', { href: '/ui/runs/' + id }, `${run.pipeline} #${id}`), ' · ', name, ' ', badge(t.state));
    meta.replaceChildren(`needs: ${(t.needs || []).join(', ') || 'nothing'} · agent ${t.agent || '–'} · attempt ${t.attempts} · `,
      `started ${fmtTime(t.started_unix_ms)}`, t.ended_unix_ms ? ` · took ${fmtDuration(t.ended_unix_ms - t.started_unix_ms)}` : '',
      t.error ? h('span', { class: 'error' }, ' · ' + t.error) : '');
    if (first) follow(t.attempts || 0);
    else if (t.attempts > shownAttempt && shownAttempt !== 0) follow(t.attempts);
    else if (shownAttempt === 0 && t.attempts > 1) follow(t.attempts);
    refresh();
  }, ctx.signal);
}
