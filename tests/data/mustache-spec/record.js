// Print what mustache.js (LaunchDarkly's Node AI SDK's renderer) gives for each case of
// launchdarkly-sdks.json, called as the SDK calls it (escaping off), as JSON by case
// name; record.py writes them into the cases. (Written back from here, the cases' data
// would lose what JavaScript cannot tell apart, such as `1.0` from `1`.)
const fs = require('fs');
const path = require('path');
const Mustache = require('mustache');

const doc = JSON.parse(fs.readFileSync(path.join(__dirname, 'launchdarkly-sdks.json'), 'utf8'));
const out = {};
for (const c of doc.tests) {
  try {
    out[c.name] = Mustache.render(c.template, c.data, undefined, { escape: (item) => item });
  } catch (e) {
    out[c.name] = `error: ${e.message}`;
  }
}
console.log(JSON.stringify(out, null, 2));
