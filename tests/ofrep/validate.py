"""Validate sluice's OFREP answers against the protocol's OpenAPI document
(tests/ofrep/openapi.yaml, vendored from open-feature/protocol). Reads JSON lines
{"path", "status", "body"} (written by tests/ofrep.rs) and exits non-zero on the first
answer that does not match the schema of its path and status.

Two readings of the document, each needed for any server to pass:
- `reason` also takes `DEFAULT`: OpenFeature's reason for a targeted flag's default
  (openfeature.dev/specification/types#resolution-reason), which the document's own
  ADR-0006 example and flagd send, though its enum leaves it out.
- The value types' `oneOf` is read as `anyOf`: an integer is also a number, and
  `codeDefaultFlag` (no properties) matches every object, so no answer could match
  exactly one.
"""
import json
import sys

import jsonschema
import yaml

spec_path, answers_path = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(spec_path))
success = doc["components"]["schemas"]["evaluationSuccess"]
success["allOf"][0]["properties"]["reason"]["enum"].append("DEFAULT")
success["allOf"][1] = {"anyOf": success["allOf"][1]["oneOf"]}

SINGLE = "/ofrep/v1/evaluate/flags/{key}"
BULK = "/ofrep/v1/evaluate/flags"
checked = 0
for line in open(answers_path):
    a = json.loads(line)
    template = BULK if a["path"] == BULK else SINGLE
    response = doc["paths"][template]["post"]["responses"].get(str(a["status"]))
    if response is None:
        print(f"FAIL {a['path']}: status {a['status']} is not in the protocol", file=sys.stderr)
        sys.exit(1)
    content = response.get("content")
    if content is None:
        if a["body"] is not None:
            print(f"FAIL {a['path']} {a['status']}: the protocol gives it no body: {a['body']}", file=sys.stderr)
            sys.exit(1)
    else:
        schema = dict(doc)
        schema["$ref"] = content["application/json"]["schema"]["$ref"]
        try:
            jsonschema.Draft202012Validator(schema).validate(a["body"])
        except jsonschema.ValidationError as e:
            print(f"FAIL {a['path']} {a['status']}: {e.message}\n{json.dumps(a['body'])}", file=sys.stderr)
            sys.exit(1)
    checked += 1
print(f"{checked} answers match the OFREP OpenAPI document")
