"""An experiment's traffic through the official OpenAI Python SDK: N chats through flag
`bot` with distinct `user` values, the response token read from the SDK's response, and
thumbs-up feedback on it. Prints what it saw as JSON.

Usage: python3 tests/sdk/experiment.py BASE_URL API_KEY N
Run by tests/experiments_sdk.rs against a gateway whose flag `bot` splits control and
candidate 50/50 and has `experiment: {primary: "feedback:thumbs_up"}`.

The script simulates users who like the candidate's answers more (75 % against 60 %). To
do so it reads the arm from `x-sluice-variation`; a real app never needs the arm: it sends
the token back and sluice knows which arm served it.
"""
import json
import random
import sys
import urllib.error
import urllib.request

import openai
from openai import OpenAI

base_url, api_key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20)
LIKES = {"control": 0.60, "candidate": 0.75}
rng = random.Random(7)
MESSAGES = [{"role": "user", "content": "Where is my order?"}]


def feedback(token, metric, value):
    """POST /v1/feedback with the gateway key: (status, answer)."""
    body = json.dumps({"token": token, "metric": metric, "value": value}).encode()
    req = urllib.request.Request(
        base_url + "/feedback",
        data=body,
        method="POST",
        headers={"authorization": f"Bearer {api_key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def check(cond, what):
    if not cond:
        sys.exit(f"experiment.py: {what}")


out = {"sdk_version": openai.__version__}

# The plain call: the SDK keeps `x-request-id` as `_request_id`, and sluice made it the token.
plain = client.chat.completions.create(model="bot", user="sdk-plain", messages=MESSAGES)
check(hasattr(plain, "_request_id"), f"openai {openai.__version__} has no `_request_id` (added in 1.46): upgrade it")
check(isinstance(plain._request_id, str) and plain._request_id.startswith("sr1."), f"_request_id {plain._request_id!r}")
out["plain_request_id_prefix"] = plain._request_id[:4]

served = {"control": 0, "candidate": 0}
liked = {"control": 0, "candidate": 0}
statuses = {}
first = {}
for i in range(n):
    raw = client.chat.completions.with_raw_response.create(model="bot", user=f"user-{i}", messages=MESSAGES)
    completion = raw.parse()
    token = completion._request_id
    check(token and token.startswith("sr1."), f"request {i}: _request_id {token!r}")
    check(raw.headers.get("x-sluice-token") == token, f"request {i}: x-sluice-token differs from _request_id")
    arm = raw.headers.get("x-sluice-variation")
    check(arm in served, f"request {i}: variation {arm!r}")
    served[arm] += 1
    first.setdefault(arm, {"token": token, "user": f"user-{i}"})
    up = rng.random() < LIKES[arm]
    liked[arm] += up
    status, answer = feedback(token, "thumbs_up", up)
    statuses[status] = statuses.get(status, 0) + 1
    if status == 202:
        check(answer == {"status": "accepted", "flag": "bot", "variation": arm, "metric": "thumbs_up"}, f"{answer}")

out["served"] = served
out["liked"] = liked
out["feedback_statuses"] = {str(k): v for k, v in statuses.items()}
# The same answer rated twice counts once.
out["duplicate_status"] = feedback(first["control"]["token"], "thumbs_up", True)[0]
out["first"] = first
print(json.dumps(out))
