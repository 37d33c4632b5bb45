// The loom web UI: a router over /ui/ paths (loomd answers every one of them
// with index.html), sign-in, and the pages in pages/.
import { getToken, setToken, clearToken, api, Unauthorized } from './api.js';
import { h } from './dom.js';
import { pipelinesPage } from './pages/pipelines.js';
import { runPage } from './pages/run.js';
import { taskPage } from './pages/task.js';
import { agentsPage, modelsPage, eventsPage } from './pages/fleet.js';

const main = document.getElementById('main');
let current = null; // the page's AbortController: stops its streams on leave

const routes = [
  [/^\/ui\/?$/, () => pipelinesPage],
  [/^\/ui\/runs\/(\d+)(?:\/(graph|grid|timeline))?$/, () => runPage],
  [/^\/ui\/runs\/(\d+)\/tasks\/([^/]+)$/, () => taskPage],
  [/^\/ui\/agents$/, () => agentsPage],
  [/^\/ui\/models$/, () => modelsPage],
  [/^\/ui\/events$/, () => eventsPage],
];

export function navigate(path, state) {
  history.pushState(state || null, '', path);
  render();
}

function signIn(reason) {
  clearToken();
  document.getElementById('signout').hidden = true;
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true,
    placeholder: 'loom_…', 'aria-label': 'API token' });
  const error = h('p', { id: 'signin-error', class: 'error', role: 'alert' }, reason || '');
  const back = location.pathname.startsWith('/ui/signin') ? '/ui/' : location.pathname;
  const form = h('form', { id: 'signin', class: 'card signin', onsubmit: async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    try {
      await api('/runs?limit=1'); // proves the token before any page uses it
    } catch (err) {
      clearToken();
      error.textContent = err instanceof Unauthorized ? err.message : 'loomd: ' + err.message;
      return;
    }
    history.replaceState(null, '', back);
    render();
  } },
  h('h1', null, 'Sign in to loom'),
  h('p', null, 'Paste an API token. ', h('code', null, 'loom tokens create --role read'),
    ' makes one; loomd writes the admin token to ', h('code', null, 'STATE_DIR/admin.token'), '.'),
  h('label', { for: 'token' }, 'API token'), input,
  h('button', { type: 'submit' }, 'Sign in'), error,
  h('p', { class: 'muted small' }, 'The token is kept in this tab only (sessionStorage) and sent ' +
    'in the Authorization header, never in a URL.'));
  main.replaceChildren(form);
  input.focus();
}

export async function render() {
  current?.abort();
  current = new AbortController();
  const ctx = { signal: current.signal, navigate };
  if (!getToken()) return signIn();
  document.getElementById('signout').hidden = false;
  const path = location.pathname;
  for (const a of document.querySelectorAll('#nav a')) {
    const href = a.getAttribute('href');
    a.classList.toggle('active', href === '/ui/' ? path === '/ui/' || path.startsWith('/ui/runs')
      : path.startsWith(href));
  }
  const route = routes.find(([re]) => re.test(path));
  if (!route) {
    main.replaceChildren(h('p', { class: 'error' }, 'No page here: ' + path));
    return;
  }
  const args = path.match(route[0]).slice(1).map((x) => x && decodeURIComponent(x));
  try {
    await route[1]()(main, ctx, ...args);
  } catch (e) {
    fail(e);
  }
}

// Any 401 (a revoked or expired token) sends the user back to sign-in,
// saying why.
export function fail(e) {
  if (e instanceof Unauthorized) return signIn(e.message);
  if (e?.name === 'AbortError') return;
  console.error(e);
  main.append(h('p', { class: 'error' }, String(e.message || e)));
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[href^="/ui/"]');
  if (!a || a.hasAttribute('download') || e.ctrlKey || e.metaKey || e.shiftKey || e.button) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', render);
window.addEventListener('unhandledrejection', (e) => {
  if (e.reason instanceof Unauthorized) { e.preventDefault(); signIn(e.reason.message); }
});
document.getElementById('signout').addEventListener('click', () => {
  current?.abort();
  signIn('Signed out.');
});
render();
