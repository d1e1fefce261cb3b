// Drives Lasso's dashboard in headless Chromium (playwright-core with the system's chromium), for tests/dashboard.rs.
// Env: LASSO_URL, DASH_TOKEN, SHOT_DIR, CHROMIUM. Protocol with the Rust test on stdio: this script prints `KILL`
// when the first provider should die, and waits for a `KILLED` line on stdin. Exits non-zero on the first failed check.

import { chromium } from 'playwright-core';
import readline from 'node:readline';
import { mkdirSync } from 'node:fs';

const URL = process.env.LASSO_URL;
const TOKEN = process.env.DASH_TOKEN;
const SHOTS = process.env.SHOT_DIR;
mkdirSync(SHOTS, { recursive: true });

const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => { const w = waiting.shift(); if (w) w(l); });
const nextLine = () => new Promise((resolve) => waiting.push(resolve));

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.error(`ok - ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const errors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const watch = (page, name) => {
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${name}: console: ${m.text()}`); });
    page.on('pageerror', (e) => errors.push(`${name}: page error: ${e.message}`));
  };
  const page = await context.newPage();
  watch(page, 'all');
  page.setDefaultTimeout(15000);

  // The token is exchanged for the session cookie and leaves the address.
  await page.goto(`${URL}/dashboard?token=${encodeURIComponent(TOKEN)}`);
  check(new globalThis.URL(page.url()).search === '', `the token left the address (${page.url()})`);
  await page.waitForSelector('.card.chain[data-chain="ethereum"] tbody tr');
  await page.waitForSelector('.card.chain[data-chain="base"] tbody tr');
  const text = await page.locator('#chains').innerText();
  for (const name of ['ethereum', 'base', 'fast-a', 'slow-b', 'beta-only']) check(text.includes(name), `overview shows ${name}`);

  // Numbers move under traffic.
  const requests = () => page.locator('.card.chain[data-chain="ethereum"] .requests').innerText().then(Number);
  const before = await requests();
  await page.waitForFunction((n) => Number(document.querySelector('.card.chain[data-chain="ethereum"] .requests')?.textContent) > n, before);
  check((await requests()) > before, `request count moved from ${before}`);
  await page.waitForFunction(() => Number(document.querySelector('.card.chain[data-chain="ethereum"] .rps')?.textContent) > 0);
  check(true, 'req/s above zero');
  await page.waitForSelector('#feed tbody tr.event');
  check(true, 'the live feed shows routing decisions');
  // The cluster: both nodes answer, and node B's decisions reach node A's feed with B's id and region.
  await page.waitForFunction(() => document.querySelector('#cluster-view')?.textContent.includes('coverage 2/2'));
  check(true, 'the cluster view shows 2/2 nodes');
  await page.waitForFunction(() => [...document.querySelectorAll('#feed tbody tr.event td.source')]
    .some((td) => td.textContent === 'node-b@sjc'));
  check(true, "node-b's decisions show in node-a's feed as node-b@sjc");
  await page.waitForFunction(() => [...document.querySelectorAll('#feed tbody tr.event td.key')]
    .some((td) => td.textContent === 'dash-key'));
  check(true, 'the feed shows the API key id of keyed requests');
  await page.waitForSelector('#lb-chart svg path');
  check(true, 'the leaderboard chart draws latency');
  await page.screenshot({ path: `${SHOTS}/overview.png`, fullPage: true });

  // A provider dies: it shows as down, and the feed shows the failover to the other one.
  await page.selectOption('#f-outcome', 'failover');
  console.log('KILL');
  check((await nextLine()) === 'KILLED', 'the test killed fast-a');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('.card.chain[data-chain="ethereum"] tbody tr')];
    const row = rows.find((r) => r.cells[0].textContent === 'fast-a');
    return row && row.querySelector('.state').textContent.startsWith('down');
  }, null, { timeout: 20000 });
  check(true, 'fast-a shows as down');
  await page.waitForSelector('#feed tbody tr.event.failover');
  const failover = await page.locator('#feed tbody tr.event.failover').first().innerText();
  check(failover.includes('slow-b'), `the feed shows the failover to slow-b (${failover.replaceAll('\t', ' ')})`);
  await page.screenshot({ path: `${SHOTS}/failover.png`, fullPage: true });

  // The request tester: HTTP and WebSocket answers with routing metadata.
  await page.fill('#t-route', '/rpc/ethereum');
  await page.click('#t-send');
  await page.waitForFunction(() => document.querySelector('#t-answer').textContent.includes('"result"'));
  check((await page.locator('#t-meta').innerText()).includes('slow-b'), 'the HTTP answer names the provider');
  await page.selectOption('#t-transport', 'ws');
  await page.click('#t-send');
  await page.waitForFunction(() => document.querySelector('#t-answer').textContent.startsWith('WebSocket answer'));
  check((await page.locator('#t-answer').innerText()).includes('"result"'), 'the WebSocket answer arrived');
  await page.locator('#tester').screenshot({ path: `${SHOTS}/tester.png` });

  // A profile's page shows nothing of another profile.
  const beta = await context.newPage();
  watch(beta, 'beta');
  beta.setDefaultTimeout(15000);
  await beta.goto(`${URL}/dashboard/beta`);
  await beta.waitForSelector('.card.chain[data-chain="base"] tbody tr');
  await beta.waitForSelector('#feed tbody tr.event');
  await beta.waitForSelector('#cluster-view table');
  const shown = await beta.locator('body').innerText();
  check(shown.includes('beta-only'), 'the beta page shows its provider');
  for (const other of ['fast-a', 'slow-b', 'ethereum']) check(!shown.includes(other), `the beta page never shows ${other}`);
  await beta.screenshot({ path: `${SHOTS}/profile-beta.png`, fullPage: true });
} finally {
  await browser.close();
}
check(errors.length === 0, `no console errors (${errors.join('; ')})`);
lines.close();
