// The console in a real browser: headless Chromium driven by playwright-core, against a
// `sluice serve` that tests/console.rs started (its addresses and tokens in the
// environment). Every wait is on a condition (an element, an API answer), never a sleep.
// Each page is screenshotted into SCREENSHOTS, and any console error or uncaught
// exception on any page fails the run, except the HTTP errors a step expects.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/console.rs sets it)`);
  return v;
};
const ADMIN = env('SLUICE_ADMIN');
const DATA = env('SLUICE_DATA');
const WRITE = env('SLUICE_WRITE_TOKEN');
const READ = env('SLUICE_READ_TOKEN');
const GATEWAY_KEY = env('SLUICE_GATEWAY_KEY');
const BIN = env('SLUICE_BIN');
const SHOTS = env('SCREENSHOTS');
const CHROMIUM = env('CHROMIUM');
const PATIENCE = 60_000;

mkdirSync(SHOTS, { recursive: true });

// ---- helpers ----

async function admin(method, path, body, token = WRITE) {
  const resp = await fetch(`${ADMIN}/admin/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await resp.json();
  assert.ok(resp.ok, `${method} ${path}: ${resp.status} ${JSON.stringify(json)}`);
  return json;
}

/** `count` chat completions for users `prefix-0…`; the variation each was served. */
async function traffic(model, prefix, count, concurrency = 16) {
  const served = [];
  let next = 0;
  const one = async () => {
    while (next < count) {
      const i = next++;
      const resp = await fetch(`${DATA}/v1/chat/completions`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${GATEWAY_KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ model, user: `${prefix}-${i}`, messages: [{ role: 'user', content: 'Hello' }] }),
      });
      await resp.arrayBuffer();
      served[i] = { status: resp.status, variation: resp.headers.get('x-sluice-variation') };
    }
  };
  await Promise.all(Array.from({ length: concurrency }, one));
  return served;
}

const share = (served, variation) => served.filter((s) => s.variation === variation).length / served.length;

async function until(what, check) {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - start > PATIENCE) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(PATIENCE);

// Console errors: each must be one the current step expects (`expect(412)`).
let expected = [];
const unexpected = [];
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  const text = m.text();
  const at = expected.findIndex((status) => text.includes(`status of ${status}`));
  if (at >= 0) expected.splice(at, 1);
  else unexpected.push(`${page.url()}: ${text}`);
});
page.on('pageerror', (e) => unexpected.push(`${page.url()}: uncaught ${e.message}`));
const expect = (...statuses) => expected.push(...statuses);

let shots = 0;
async function shot(name) {
  await page.screenshot({ path: `${SHOTS}/${String(++shots).padStart(2, '0')}-${name}.png`, fullPage: true });
}

function step(name) {
  console.log(`--- ${name}`);
}

async function signIn(token) {
  // Signed out whatever the page was doing: no token in this tab, then a fresh load.
  await page.goto(`${ADMIN}/ui/`);
  await page.evaluate(() => sessionStorage.clear());
  await page.goto(`${ADMIN}/ui/#/`);
  await page.reload();
  await page.fill('input[name=token]', token);
  await page.click('[data-action=sign-in]');
  await page.waitForSelector('tr[data-flag=support-bot]');
}

async function review(reason) {
  await page.waitForSelector('.review pre.diff');
  await page.fill('.review textarea[name=reason]', reason);
  await page.click('.review [data-action=confirm]');
}

// ---- the steps ----

step('the page holds what its policy allows: no inline script or style, nothing from elsewhere');
{
  const resp = await fetch(`${ADMIN}/ui/`);
  const csp = resp.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe/);
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(`${ADMIN}/ui/`);
  await page.waitForSelector('input[name=token]');
  for (const url of requests) assert.ok(url.startsWith(ADMIN) || url.startsWith('data:'), `a request elsewhere: ${url}`);
}

step('sign in with a write token: the demo flags');
await signIn(WRITE);
{
  assert.equal(await page.locator('.who').getAttribute('data-role'), 'write');
  const row = page.locator('tr[data-flag=support-bot]');
  await row.locator('.serving', { hasText: '95 % control · 5 % candidate' }).waitFor();
  await page.locator('tr[data-flag=guarded-bot]').waitFor();
  // The token is in session storage, not in a cookie.
  assert.equal((await context.cookies()).length, 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('sluice.admin.token')), WRITE);
  await page.fill('input[name=filter]', 'guarded');
  await page.locator('tr[data-flag=support-bot]').waitFor({ state: 'detached' });
  await page.fill('input[name=filter]', '');
  await page.locator('tr[data-flag=support-bot]').waitFor();
  await shot('flags');
}

step('open support-bot: overview renders the prompt for a context');
await page.click('tr[data-flag=support-bot] a');
await page.waitForSelector('.evaluation[data-variation=control]');
assert.match(await page.locator('.evaluation pre').first().innerText(), /The customer is Ada\./);
await page.fill('textarea[name=context]', '{"kind": "user", "key": "x", "email": "me@yourcompany.com", "name": "Bo"}');
await page.click('[data-action=render]');
await page.waitForSelector('.evaluation[data-variation=candidate]');
assert.match(await page.locator('.evaluation pre').first().innerText(), /Answer Bo in three sentences/);
await shot('overview');

step('move the rollout to 20 %, review the diff, confirm: the data plane follows, the audit log has the reason');
const before = await traffic('support-bot', 'split', 1000);
assert.ok(before.every((s) => s.status === 200), 'every request before the change answered');
const shareBefore = share(before, 'candidate');
await page.click('.tabs a[href$="/change"]');
await page.fill('input[name=percent-candidate]', '20');
await page.press('input[name=percent-candidate]', 'Enter');
await page.locator('input[name=percent-control]').evaluate((e) => e.blur());
// The sum stays at 100 %.
await page.waitForFunction(() => document.querySelector('input[name=percent-control]').value === '80');
await shot('change');
await page.click('[data-action=review-rollout]');
await page.waitForSelector('.review pre.diff .add');
const diff = await page.locator('.review pre.diff').innerText();
assert.match(diff, /\+\s+"percent": 20/);
assert.match(diff, /-\s+"percent": 5/);
await shot('review');
await review('console test: candidate to 20 %');
await page.waitForSelector('.notice:has-text("Applied as revision")');
{
  const flag = (await admin('GET', '/flags/support-bot')).flag;
  assert.deepEqual(flag.fallthrough.rollout.variations.map((v) => [v.variation, v.percent]), [
    ['control', 80],
    ['candidate', 20],
  ]);
  const last = (await admin('GET', '/audit?flag=support-bot&limit=1')).entries[0];
  assert.equal(last.reason, 'console test: candidate to 20 %');
  assert.equal(last.actor, 'ops');
  // The same 1,000 users: bucketing is by key, so the shares are exact for this set.
  const after = await traffic('support-bot', 'split', 1000);
  const shareAfter = share(after, 'candidate');
  console.log(`candidate share over the same 1,000 users: ${shareBefore} before, ${shareAfter} after`);
  assert.ok(shareBefore < 0.1, `5 % before: ${shareBefore}`);
  assert.ok(shareAfter > 0.15 && shareAfter < 0.25, `20 % after: ${shareAfter}`);
  // Raising the candidate's share keeps its earlier users.
  before.forEach((s, i) => s.variation === 'candidate' && assert.equal(after[i].variation, 'candidate'));
}

step('history: the change with its reason and diff');
await page.click('.tabs a[href$="/history"]');
await page.locator('.entries li', { hasText: 'console test: candidate to 20 %' }).first().locator('[data-action=diff]').click();
await page.waitForSelector('.entries pre.diff .add');
await shot('history');

step('kill from the console: traffic goes to the off variation');
await page.click('.tabs a[href$="/change"]');
await page.click('[data-action=kill]');
await review('console test: kill');
await page.waitForSelector('.toolbar .badge.off');
{
  const killed = await traffic('support-bot', 'killed', 200);
  assert.ok(killed.every((s) => s.status === 200 && s.variation === 'control'), 'everyone gets control');
}
await page.click('[data-action=restore]');
await review('console test: restore');
await page.waitForSelector('.toolbar .badge.on');

step('a change from `sluice ctl` between opening the review and confirming: 412 shown, nothing overwritten');
await page.fill('input[name=percent-candidate]', '30');
await page.press('input[name=percent-candidate]', 'Enter');
await page.waitForFunction(() => document.querySelector('input[name=percent-control]').value === '70');
await page.click('[data-action=review-rollout]');
await page.waitForSelector('.review pre.diff .add');
execFileSync(BIN, ['ctl', '--url', ADMIN, '--token', WRITE, 'rollout', 'support-bot', 'control=90', 'candidate=10', '--reason', 'ctl: back to 10 % meanwhile'], { stdio: 'inherit' });
await page.fill('.review textarea[name=reason]', 'console test: 30 %');
expect(412);
await page.click('.review [data-action=confirm]');
await page.waitForSelector('[data-conflict]');
assert.match(await page.locator('[data-conflict]').innerText(), /ctl: back to 10 % meanwhile/);
await shot('conflict');
{
  const flag = (await admin('GET', '/flags/support-bot')).flag;
  assert.deepEqual(flag.fallthrough.rollout.variations.map((v) => v.percent), [90, 10], 'the ctl change stands');
}
await page.click('[data-action=reload]');
await page.waitForSelector('.notice:has-text("Reloaded")');
await page.waitForFunction(() => document.querySelector('input[name=percent-candidate]').value === '10');

step('experiment: the results table');
await page.click('.tabs a[href$="/experiment"]');
await page.waitForSelector('[data-recommendation]');
await shot('experiment');

step('a guard trip on a failing variation: the monitoring tile shows it, re-arm works');
{
  const served = await traffic('guarded-bot', 'guarded', 400);
  assert.ok(served.some((s) => s.status >= 500), 'the treatment fails');
  await until('the guard to roll back', async () => {
    const g = (await admin('GET', '/guards')).guards.find((x) => x.flag === 'guarded-bot');
    return g?.state === 'rolled_back';
  });
}
await page.goto(`${ADMIN}/ui/#/flags/guarded-bot/monitoring`);
await page.waitForSelector('[data-guard-state=rolled_back] [data-trip]');
await page.waitForSelector('.summary tr[data-variation=treatment] .requests');
assert.notEqual(await page.locator('.summary tr[data-variation=treatment] .requests').innerText(), '0');
await page.waitForSelector('.chart polyline');
await shot('monitoring-tripped');
await page.click('[data-action=guard-rearm]');
await review('console test: re-arm');
await page.waitForSelector('[data-guard-state=armed]');
{
  const g = (await admin('GET', '/guards')).guards.find((x) => x.flag === 'guarded-bot');
  assert.equal(g.state, 'armed');
}

step('the demo flag monitoring view, with traffic');
await page.goto(`${ADMIN}/ui/#/flags/support-bot/monitoring`);
await page.waitForSelector('.summary tr[data-variation=candidate] .requests');
await page.waitForSelector('.chart polyline');
await shot('monitoring');

step('AI configs: versions, a diff, a new version checked');
await page.click('header a[href="#/ai-configs"]');
await page.waitForSelector('tr[data-ai-config=support-bot]');
await shot('ai-configs');
await page.click('tr[data-ai-config=support-bot] a');
await page.waitForSelector('tr[data-version="2"]');
await page.waitForSelector('pre.diff .add');
await page.click('[data-action=check-version]');
await page.waitForSelector('[data-check=ok]');
await page.fill('textarea[name=new-version]', '{"version": 3, "provider": "mock", "model": "mock-1", "messages": [{"role": "system", "content": "{{#open}} never closed"}]}');
expect(422);
await page.click('[data-action=check-version]');
await page.waitForSelector('.error');
await shot('ai-config');
assert.match(await page.locator('tr[data-version="2"]').innerText(), /\b1 message\b/);
// An agent version: checked, reviewed, added, and listed with its tools.
const agent = { version: 3, provider: 'mock', model: 'mock-1', mode: 'agent', instructions: 'Help {{ldctx.name}}.',
  tools: [{ name: 'lookup_order', parameters: { type: 'object' } }] };
await page.fill('textarea[name=new-version]', JSON.stringify(agent));
await page.click('[data-action=check-version]');
await page.waitForSelector('[data-check=ok]');
await page.click('[data-action=review-version]');
await review('console test: an agent version');
await page.waitForSelector('tr[data-version="3"]');
assert.match(await page.locator('tr[data-version="3"]').innerText(), /agent: instructions, lookup_order/);

step('a read token sees everything and every control is disabled, with the reason');
await signIn(READ);
assert.equal(await page.locator('.who').getAttribute('data-role'), 'read');
await page.goto(`${ADMIN}/ui/#/flags/support-bot/change`);
await page.waitForSelector('[data-action=kill]');
for (const button of await page.locator('.change button[data-action]').all()) {
  assert.ok(await button.isDisabled(), `${await button.getAttribute('data-action')} is enabled for a read token`);
  assert.match(await button.getAttribute('title'), /may only read/);
}
for (const input of await page.locator('.change input').all()) assert.ok(await input.isDisabled());
await shot('read-only');
await page.goto(`${ADMIN}/ui/#/flags/support-bot/history`);
await page.waitForSelector('[data-action=rollback]');
assert.ok(await page.locator('[data-action=rollback]').first().isDisabled());

await browser.close();
assert.deepEqual(expected, [], 'an expected HTTP error did not show');
assert.deepEqual(unexpected, [], 'console errors');
console.log(`all steps passed; ${shots} screenshots in ${SHOTS}`);
