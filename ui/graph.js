// The run's DAG as an SVG graph. Layout, computed here: each task's layer is
// its longest path from a task with no needs; within a layer, tasks are
// ordered by a few barycenter sweeps (down using the tasks they need, up
// using the tasks that need them), which removes most edge crossings; edges
// are cubic paths from a task's right side to its dependant's left side.
// The graph is drawn once; live updates only change each node's class.
import { s, taskHref } from './dom.js';

const W = 170, H = 30, COL = 70, ROW = 10;

export function layout(tasks) {
  const n = tasks.length;
  const idx = new Map(tasks.map((t, i) => [t.name, i]));
  const preds = tasks.map((t) => (t.needs || []).map((x) => idx.get(x)).filter((x) => x !== undefined));
  const succs = Array.from({ length: n }, () => []);
  preds.forEach((ps, i) => ps.forEach((p) => succs[p].push(i)));
  // Kahn's order; a task in a cycle (loomd refuses those) would keep layer 0.
  const indeg = preds.map((p) => p.length);
  const order = [];
  for (let i = 0; i < n; i++) if (!indeg[i]) order.push(i);
  for (let k = 0; k < order.length; k++)
    for (const w of succs[order[k]]) if (--indeg[w] === 0) order.push(w);
  const layer = new Array(n).fill(0);
  for (const v of order) for (const w of succs[v]) layer[w] = Math.max(layer[w], layer[v] + 1);
  const layers = [];
  const seen = new Array(n).fill(false);
  for (const v of order) { (layers[layer[v]] ||= []).push(v); seen[v] = true; }
  for (let v = 0; v < n; v++) if (!seen[v]) (layers[0] ||= []).push(v);
  // y: centred per layer, so that barycenters compare across layers.
  const y = new Float64Array(n);
  const place = (L) => L.forEach((v, i) => { y[v] = i - (L.length - 1) / 2; });
  layers.forEach(place);
  const sweep = (L, nbrs) => {
    const key = new Map();
    for (const v of L) {
      const ns = nbrs[v];
      key.set(v, ns.length ? ns.reduce((a, u) => a + y[u], 0) / ns.length : y[v]);
    }
    L.sort((a, b) => key.get(a) - key.get(b));
    place(L);
  };
  for (let it = 0; it < 6; it++) {
    if (it % 2 === 0) for (let l = 1; l < layers.length; l++) sweep(layers[l], preds);
    else for (let l = layers.length - 2; l >= 0; l--) sweep(layers[l], succs);
  }
  const tallest = Math.max(1, ...layers.map((L) => L.length));
  const pos = tasks.map((_, v) => ({
    x: layer[v] * (W + COL),
    y: (y[v] + (tallest - 1) / 2) * (H + ROW),
  }));
  return { pos, preds, width: layers.length * (W + COL) - COL, height: tallest * (H + ROW) - ROW, order };
}

const short = (name) => (name.length > 22 ? name.slice(0, 21) + '…' : name);

// Draws tasks into a new <svg>; returns {svg, update(task)}.
export function drawGraph(runId, tasks) {
  const { pos, preds, width, height } = layout(tasks);
  const pad = 20;
  const view = { x: -pad, y: -pad, w: width + 2 * pad, h: height + 2 * pad };
  const svg = s('svg', { id: 'graph', class: 'graph', role: 'img', 'aria-label': 'task graph' });
  const setView = () => svg.setAttribute('viewBox', `${view.x} ${view.y} ${view.w} ${view.h}`);
  setView();
  // A small graph keeps its natural size; a large one starts fitted and is
  // zoomed with the wheel.
  svg.style.height = Math.round(Math.max(140, Math.min(window.innerHeight * 0.72, view.h * 1.4))) + 'px';
  const edges = s('g', { class: 'edges' });
  const nodes = s('g', { class: 'nodes' });
  const els = new Map();
  // One <path> for all edges: thousands of elements would cost more to lay
  // out than they give (edges are not interactive).
  let d = '';
  tasks.forEach((t, v) => {
    for (const u of preds[v]) {
      const x1 = pos[u].x + W, y1 = pos[u].y + H / 2, x2 = pos[v].x, y2 = pos[v].y + H / 2;
      const mx = (x1 + x2) / 2;
      d += `M${x1} ${y1}C${mx} ${y1} ${mx} ${y2} ${x2} ${y2}`;
    }
  });
  edges.append(s('path', { d }));
  const frag = document.createDocumentFragment();
  tasks.forEach((t, v) => {
    const g = s('a', { href: taskHref(runId, t.name), class: 'node st-' + t.state, 'data-task': t.name,
      'data-state': t.state, transform: `translate(${pos[v].x} ${pos[v].y})` },
    s('title', null, `${t.name}: ${t.state}`),
    s('rect', { width: W, height: H, rx: 5 }),
    s('circle', { cx: 14, cy: H / 2, r: 5 }),
    s('text', { x: 26, y: H / 2 + 4 }, short(t.name)));
    els.set(t.name, g);
    frag.append(g);
  });
  nodes.append(frag);
  svg.append(edges, nodes);

  // Pan with a drag, zoom with the wheel around the pointer.
  let drag = null;
  svg.addEventListener('pointerdown', (e) => {
    if (e.target.closest('a')) return;
    drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y };
    svg.setPointerCapture(e.pointerId);
  });
  svg.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const k = view.w / svg.clientWidth;
    view.x = drag.vx - (e.clientX - drag.x) * k;
    view.y = drag.vy - (e.clientY - drag.y) * k;
    setView();
  });
  svg.addEventListener('pointerup', () => { drag = null; });
  svg.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect();
    const f = Math.exp(e.deltaY * 0.002);
    const px = view.x + ((e.clientX - r.left) / r.width) * view.w;
    const py = view.y + ((e.clientY - r.top) / r.height) * view.h;
    view.w *= f; view.h *= f;
    view.x = px - (px - view.x) * f;
    view.y = py - (py - view.y) * f;
    setView();
  }, { passive: false });

  return {
    svg,
    update(t) {
      const g = els.get(t.name);
      if (!g || g.getAttribute('data-state') === t.state) return;
      g.setAttribute('class', 'node st-' + t.state);
      g.setAttribute('data-state', t.state);
      g.firstChild.textContent = `${t.name}: ${t.state}`;
    },
  };
}
