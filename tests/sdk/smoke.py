"""Drive sluice with the official OpenAI Python SDK and print what it saw as JSON.

Usage: python3 tests/sdk/smoke.py BASE_URL API_KEY
Run by tests/openai_sdk.rs against a gateway serving the example config.
"""
import json
import sys

import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20)
out = {"sdk_version": openai.__version__}

chat = client.chat.completions.create(
    model="demo", messages=[{"role": "user", "content": "Say hello"}]
)
out["chat"] = {
    "content": chat.choices[0].message.content,
    "finish_reason": chat.choices[0].finish_reason,
    "total_tokens": chat.usage.total_tokens,
}

deltas, finish, usage = [], None, None
stream = client.chat.completions.create(
    model="mock/mock-1",
    messages=[{"role": "user", "content": "Stream please"}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            deltas.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
out["stream"] = {"chunks": len(deltas), "text": "".join(deltas), "finish_reason": finish, "total_tokens": usage}

completion = client.completions.create(model="demo", prompt="Once upon a time")
out["completion"] = {"text": completion.choices[0].text}

emb = client.embeddings.create(model="demo", input=["a", "b"])
out["embeddings"] = {"count": len(emb.data), "dims": len(emb.data[0].embedding)}

out["models"] = sorted(m.id for m in client.models.list())

# A flag as the model: targeting picks the variation; the headers say which.
targeted = {}
for name, ctx in [
    ("internal", {"kind": "user", "key": "u-1", "name": "Ada", "email": "ada@yourcompany.com"}),
    ("everyone", {"kind": "user", "key": "u-2", "name": "Bob"}),
]:
    raw = client.chat.completions.with_raw_response.create(
        model="support-bot",
        messages=[{"role": "user", "content": "Where is my order?"}],
        extra_headers={"x-sluice-context": json.dumps(ctx)},
    )
    answer = raw.parse()
    targeted[name] = {
        "variation": raw.headers.get("x-sluice-variation"),
        "ai_config": raw.headers.get("x-sluice-ai-config"),
        "model": answer.model,
    }
out["targeted"] = targeted

try:
    client.chat.completions.create(model="no-such-model", messages=[])
    out["not_found"] = None
except openai.NotFoundError as e:
    out["not_found"] = {"status": e.status_code, "code": e.code}

try:
    OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).models.list()
    out["bad_key"] = None
except openai.AuthenticationError as e:
    out["bad_key"] = {"status": e.status_code, "code": e.code}

print(json.dumps(out))
