// The OpenFeature Node SDKs with their OFREP providers against sluice (tests/ofrep.rs runs
// this with the gateway's address and keys): the server SDK (@openfeature/server-sdk with
// @openfeature/ofrep-provider, one request per evaluation) and the web SDK
// (@openfeature/web-sdk with @openfeature/ofrep-web-provider: one bulk request per context,
// ETag and 304 on an unchanged poll). Exits non-zero on the first wrong answer.
import assert from 'node:assert/strict';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
import { OpenFeature as WebFeature } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const [base, admin, key, limitedKey, adminToken] = process.argv.slice(2);
const check = (what, got, want) => {
  assert.deepEqual(got, want, what);
  console.log(`ok ${what}: ${JSON.stringify(got)}`);
};

// ---- the server SDK ----
await OpenFeature.setProviderAndWait('app', new OFREPProvider({ baseUrl: base, headers: [['Authorization', `Bearer ${key}`]] }));
await OpenFeature.setProviderAndWait('limited', new OFREPProvider({ baseUrl: base, headers: [['X-API-Key', limitedKey]] }));
const client = OpenFeature.getClient('app');
const user = { targetingKey: 'u1' };

let d = await client.getStringDetails('theme', 'none', user);
check('string, STATIC', [d.value, d.variant, d.reason, d.errorCode], ['light', 'light', 'STATIC', undefined]);
d = await client.getBooleanDetails('new-checkout', false, { targetingKey: 'u1', beta: true });
check('boolean, rule', [d.value, d.variant, d.reason, d.flagMetadata.ruleId], [true, 'on', 'TARGETING_MATCH', 'beta-users']);
d = await client.getNumberDetails('max-items', 0, user);
check('number, a rollout', [[3, 30].includes(d.value), d.reason], [true, 'SPLIT']);
d = await client.getNumberDetails('ratio', 0, user);
check('number, a float', d.value, 2);
d = await client.getObjectDetails('limits', {}, user);
check('object', d.value, { max: 3, tiers: ['a'] });
d = await client.getStringDetails('retired', 'none', user);
check('off: DISABLED', [d.value, d.reason], ['old', 'DISABLED']);
d = await client.getObjectDetails('support-bot', {}, { targetingKey: 'qa-tester' });
check('an AI config', [d.variant, d.value.model.name, d.value.provider.name, d.flagMetadata.aiConfigVersion], ['candidate', 'mock-2', 'mock-b', 2]);
d = await client.getStringDetails('no-such-flag', 'fallback', user);
check('FLAG_NOT_FOUND', [d.value, d.errorCode, d.reason], ['fallback', 'FLAG_NOT_FOUND', 'ERROR']);
d = await client.getBooleanDetails('theme', false, user);
check('a string read as a boolean', [d.value, d.errorCode], [false, 'TYPE_MISMATCH']);
d = await client.getStringDetails('theme', 'none', { email: 'x@y.z' });
check('no targeting key', [d.value, d.errorCode], ['none', 'TARGETING_KEY_MISSING']);
const limited = OpenFeature.getClient('limited');
const results = [];
for (let i = 0; i < 4; i++) results.push(await limited.getStringDetails('theme', 'none', user));
check('within the burst', results.slice(0, 2).map((r) => r.value), ['light', 'light']);
check('then 429: the code default', [results[2].value, results[2].errorCode], ['none', 'GENERAL']);
check('and backed off, not asked again', /paused/i.test(results[3].errorMessage ?? ''), true);

// ---- the web SDK: bulk, ETag, 304 ----
const seen = [];
const recording = async (input, init) => {
  const resp = await fetch(input, init);
  const request = input instanceof Request ? input : new Request(input, init);
  seen.push({ status: resp.status, ifNoneMatch: request.headers.get('if-none-match'), etag: resp.headers.get('etag') });
  return resp;
};
const web = new OFREPWebProvider({
  baseUrl: base,
  headers: [['Authorization', `Bearer ${key}`]],
  fetchImplementation: recording,
  cacheMode: 'disabled',
  pollInterval: 0,
});
await WebFeature.setContext({ targetingKey: 'u1' });
await WebFeature.setProviderAndWait(web);
const wc = WebFeature.getClient();
check('web: one bulk request', seen.map((s) => s.status), [200]);
check('web: values from it', [wc.getStringValue('theme', 'none'), wc.getBooleanValue('new-checkout', true)], ['light', false]);
check('web: an unknown flag', wc.getStringDetails('no-such-flag', 'x').errorCode, 'FLAG_NOT_FOUND');
// A poll with the same context: 304, nothing changes. (`_fetchFlags` is what the provider's
// poll timer calls; called here so that the test waits on no timer.)
const firstEtag = seen[0].etag;
await web._fetchFlags({ targetingKey: 'u1' });
check('web: an unchanged poll is a 304', [seen[1].status, seen[1].ifNoneMatch], [304, firstEtag]);
// A context change (not of the key): fresh values.
await WebFeature.setContext({ targetingKey: 'u1', beta: true });
check('web: a context change re-evaluates', [seen.at(-1).status, wc.getBooleanValue('new-checkout', false)], [200, true]);
// An admin change: the next poll gets it.
const resp = await fetch(`${admin}/admin/v1/flags/theme/kill`, {
  method: 'POST',
  headers: { Authorization: `Bearer ${adminToken}`, 'Content-Type': 'application/json' },
  body: JSON.stringify({ reason: 'node web SDK test' }),
});
assert.equal(resp.status, 200);
await web._fetchFlags({ targetingKey: 'u1', beta: true });
check('web: after an admin change', [seen.at(-1).status, wc.getStringValue('theme', 'none')], [200, 'dark']);
await WebFeature.close();
await OpenFeature.close();
console.log('all OpenFeature Node SDK checks passed');
