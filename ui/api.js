// Talks to loomd's /api/v1 with the bearer token the user signed in with.
//
// The token lives in sessionStorage: it is gone when the tab closes and is
// not shared with other tabs, so a forgotten browser does not keep an admin
// credential on disk the way localStorage would. It is sent only in the
// Authorization header, never in a URL (URLs end up in logs and history).
//
// Streams (run events, followed logs) are read with fetch() and a
// ReadableStream reader, because EventSource cannot send an Authorization
// header.

const KEY = 'loom.token';

export const getToken = () => sessionStorage.getItem(KEY);
export const setToken = (t) => sessionStorage.setItem(KEY, t);
export const clearToken = () => sessionStorage.removeItem(KEY);

// Thrown on 401 (or with no token at all): the app returns to sign-in.
export class Unauthorized extends Error {}
export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function call(path, opts = {}) {
  const token = getToken();
  if (!token) throw new Unauthorized('Sign in with an API token.');
  const headers = { ...(opts.headers || {}), Authorization: 'Bearer ' + token };
  const resp = await fetch('/api/v1' + path, { ...opts, headers, cache: 'no-store' });
  if (resp.ok) return resp;
  let msg = resp.statusText;
  try { msg = (await resp.json()).error || msg; } catch { /* not JSON */ }
  if (resp.status === 401) throw new Unauthorized(msg);
  throw new ApiError(resp.status, `${msg} (HTTP ${resp.status})`);
}

export async function api(path, opts) {
  return (await call(path, opts)).json();
}

// Reads a streamed body, calling onText with each decoded piece until the
// server ends it or signal aborts. Resolves when the stream ends.
export async function streamText(path, onText, signal) {
  const resp = await call(path, { signal });
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      onText(dec.decode(value, { stream: true }), resp);
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  }
}

// Server-sent events over fetch: calls onEvent(name, data) for each event.
export function streamEvents(path, onEvent, signal) {
  let buf = '';
  return streamText(path, (text) => {
    buf += text;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) onEvent(name, JSON.parse(data.join('\n')));
    }
  }, signal);
}

// Downloads with the token: a bare link could not send the header, so the
// file is fetched, held as a blob and saved through an object URL.
export async function download(path, filename) {
  const blob = await (await call(path)).blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
