// Drives headless Chromium through loom's web UI against a real loomd. Run by
// tests/integration/test_browser_ui.py, which starts loomd and an agent and
// passes the scenario as JSON on stdin. Each step waits for a condition with
// a deadline; a failure names the step.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const sc = JSON.parse(fs.readFileSync(0, 'utf8'));
const T = 30000; // any single wait
const api = async (method, p, body, token = sc.token) => {
  const r = await fetch(sc.url + '/api/v1' + p, { method, headers: { Authorization: 'Bearer ' + token,
    'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
  if (!r.ok) throw new Error(`${method} ${p}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
};
// Playwright's wait-for-function evaluates a string, which loomd's CSP
// forbids (as it should): poll page.evaluate with a deadline instead.
const until = async (page, fn, what) => {
  for (const end = Date.now() + T; !(await page.evaluate(fn));) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 20));
  }
};
let stepName = '';
const step = (name) => { stepName = name; console.log('step:', name); };

const browser = await chromium.launch({ executablePath: sc.chromium, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.setDefaultTimeout(T);

  step('/ redirects to the UI, which asks for a token');
  await page.goto(sc.url + '/');
  assert.equal(new URL(page.url()).pathname, '/ui/');
  await page.waitForSelector('#signin');

  step('a wrong token is refused');
  await page.fill('#token', 'loom_1_' + '0'.repeat(64));
  await page.click('#signin button[type=submit]');
  await until(page, () => document.querySelector('#signin-error')?.textContent.length > 0, 'the refusal');
  assert.match(await page.textContent('#signin-error'), /not|invalid|unknown/i);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('loom.token')), null);

  step('the right token signs in and lists the pipelines');
  await page.fill('#token', sc.token);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#pipelines >> text=gated');
  assert.ok(!page.url().includes(sc.token), 'the token must never be in a URL');
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('loom.token')), sc.token);

  step('the run graph shows t1 running');
  await page.click(`#pipelines a[href="/ui/runs/${sc.gated_run}"]`);
  await page.waitForSelector('svg#graph [data-task="t1"][data-state="running"]');
  const colour = (task) => page.$eval(`svg#graph [data-task="${task}"] rect`, (r) => getComputedStyle(r).stroke);
  const succeeded = await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--succeeded').trim());
  assert.equal((await page.$$('svg#graph .node')).length, 5);
  // A marker that a reload would lose: the updates must arrive live.
  await page.evaluate(() => { window.stillTheSamePage = true; });

  for (const task of ['t1', 't2', 't3', 't4']) {
    step(`${task} turns green once its file exists`);
    await page.waitForSelector(`svg#graph [data-task="${task}"][data-state="running"]`);
    const before = await colour(task);
    fs.writeFileSync(path.join(sc.gate, task), '');
    await page.waitForSelector(`svg#graph [data-task="${task}"][data-state="succeeded"]`);
    const after = await colour(task);
    assert.notEqual(after, before, `${task}'s colour changed`);
    const hex = '#' + after.match(/\d+/g).map((n) => Number(n).toString(16).padStart(2, '0')).join('');
    assert.equal(hex, succeeded, `${task} is drawn in the succeeded colour`);
  }
  assert.equal(await page.evaluate(() => window.stillTheSamePage), true, 'no reload');

  step('the grid and the timeline show the run');
  await page.click('a.tab >> text=Grid');
  await page.waitForSelector('#grid a.cell.st-succeeded[href$="/tasks/t4"]');
  await page.click('a.tab >> text=Timeline');
  await page.waitForSelector('#timeline rect.bar.st-succeeded');

  step('a live log follows its lines as they are written');
  await page.goto(`${sc.url}/ui/runs/${sc.gated_run}/tasks/logger`);
  await page.waitForSelector('#log-state >> text=following');
  for (const i of [1, 2, 3]) {
    fs.writeFileSync(path.join(sc.gate, 'line' + i), '');
    await page.locator('#log', { hasText: `line ${i} of the live log` }).waitFor();
  }
  await page.waitForSelector('#log-state >> text=complete');
  assert.equal((await page.textContent('#log')).trim().split('\n').length, 3);

  step('an artifact downloads with the token, byte for byte');
  await page.goto(`${sc.url}/ui/runs/${sc.gated_run}/tasks/t1`);
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('button.download[data-path="out.bin"]')]);
  fs.mkdirSync(sc.downloads, { recursive: true });
  const file = path.join(sc.downloads, 'out.bin');
  await dl.saveAs(file);
  const want = Array.from({ length: 3000 }, (_, i) => `${i + 1}\n`).join('');
  assert.equal(fs.readFileSync(file, 'utf8'), want);
  assert.equal(dl.suggestedFilename(), 'out.bin');

  step('a revoked token sends the user back to sign-in with the reason');
  const read = await api('POST', '/tokens', { role: 'read', name: 'browser' });
  await page.evaluate((t) => sessionStorage.setItem('loom.token', t), read.token);
  await page.goto(`${sc.url}/ui/agents`);
  await page.waitForSelector('#agents >> text=a1');
  await api('DELETE', '/tokens/' + read.id);
  await page.click('#nav a[href="/ui/models"]');
  await page.waitForSelector('#signin');
  assert.match(await page.textContent('#signin-error'), /revoked/i);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('loom.token')), null);

  step('a 1,000-task run draws in full');
  await page.evaluate((t) => sessionStorage.setItem('loom.token', t), sc.token);
  const big = (await api('POST', `/pipelines/${sc.big_pipeline}/runs`, {})).run.id;
  await page.goto(`${sc.url}/ui/runs/${big}`);
  await until(page, () => window.loomStats?.tasks === 1000, 'the graph to be drawn');
  assert.equal((await page.$$('svg#graph .node')).length, 1000);
  const stats = await page.evaluate(() => window.loomStats);
  console.log(`figure: first render of a 1,000-task run: ${stats.firstRenderMs} ms from opening the page, ${stats.sinceLoadMs} ms from navigation start (layout and draw ${stats.drawMs} ms)`);
  await api('POST', `/runs/${big}/cancel`, {}).catch(() => {});

  assert.deepEqual(errors, [], 'no uncaught errors in the page');
  console.log('ok');
} catch (e) {
  console.error(`FAILED at step "${stepName}": ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
