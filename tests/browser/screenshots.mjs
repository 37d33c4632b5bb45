// Saves docs/ui/*.png, one per main page, from a loomd that
// tests/browser/screenshots.py set up (the scenario comes on stdin).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const sc = JSON.parse(fs.readFileSync(0, 'utf8'));
fs.mkdirSync(sc.out, { recursive: true });
const browser = await chromium.launch({ executablePath: sc.chromium, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
const page = await browser.newPage({ viewport: { width: 1200, height: 720 } });
page.setDefaultTimeout(30000);
await page.goto(sc.url + '/ui/');
await page.fill('#token', sc.token);
await page.click('#signin button[type=submit]');
await page.waitForSelector('#pipelines >> text=churn');

const shots = [
  ['pipelines', '/ui/', '#pipelines .cell'],
  ['run-graph', `/ui/runs/${sc.run}`, 'svg#graph [data-task="train"][data-state="running"]'],
  ['run-grid', `/ui/runs/${sc.run}/grid`, '#grid'],
  ['run-timeline', `/ui/runs/${sc.done_run}/timeline`, '#timeline'],
  ['task-log', `/ui/runs/${sc.run}/tasks/train`, '#log >> text=epoch 5/5'],
  ['agents', '/ui/agents', '#agents >> text=gpu-01'],
];
for (const [name, url, ready] of shots) {
  await page.goto(sc.url + url);
  await page.waitForSelector(ready);
  const file = path.join(sc.out, name + '.png');
  await page.screenshot({ path: file });
  console.log('wrote', file, fs.statSync(file).size, 'bytes');
}
await browser.close();
