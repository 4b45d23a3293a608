"""Record, in each case of launchdarkly-sdks.json, what chevron (LaunchDarkly's Python AI
SDK's renderer) gives, called as the SDK calls it: chevron.render(template, variables);
and what mustache.js gives, from the output of record.js named as the first argument."""
import json
import os
import sys

import chevron

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'launchdarkly-sdks.json')
with open(path, encoding='utf-8') as f:
    doc = json.load(f)
with open(sys.argv[1], encoding='utf-8') as f:
    mustache_js = json.load(f)
for case in doc['tests']:
    try:
        case['chevron'] = chevron.render(case['template'], case['data'])
    except Exception as e:  # recorded, not hidden
        case['chevron'] = 'error: %s' % e
    case['mustache_js'] = mustache_js[case['name']]
with open(path, 'w', encoding='utf-8') as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write('\n')
