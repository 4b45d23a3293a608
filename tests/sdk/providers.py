"""Run one script with the official OpenAI Python SDK against several sluice targets and
print, per target, what the SDK saw as JSON (ids left out, so targets can be compared).

Usage: python3 tests/sdk/providers.py BASE_URL API_KEY TARGETS_JSON
TARGETS_JSON maps a name to {"model": ..., "user": ...}.
Run by tests/provider_sdk.rs: the same script against an OpenAI-kind and an
Anthropic-kind provider must give equal results.
"""
import json
import sys

import openai
from openai import OpenAI

base_url, api_key, targets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20)

SYSTEM = {"role": "system", "content": "You are a terse weather assistant."}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
SCHEMA = {
    "name": "weather_report",
    "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}, "sunny": {"type": "boolean"}},
        "required": ["city", "celsius", "sunny"],
        "additionalProperties": False,
    },
}


def usage_of(u):
    if u is None:
        return None
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else None
    return {"prompt": u.prompt_tokens, "completion": u.completion_tokens, "total": u.total_tokens, "cached": cached}


def calls_of(tool_calls):
    return [{"name": c.function.name, "arguments": json.loads(c.function.arguments)} for c in tool_calls or []]


def stream(model, user, messages, include_usage, **kw):
    """Collect a streamed answer the way an app does."""
    opts = {"stream_options": {"include_usage": True}} if include_usage else {}
    text, finish, usage, roles, calls, objects = [], None, None, 0, {}, set()
    for chunk in client.chat.completions.create(
        model=model, user=user, messages=messages, stream=True, **opts, **kw
    ):
        objects.add(chunk.object)
        if chunk.usage is not None:
            usage = usage_of(chunk.usage)
        for choice in chunk.choices:
            assert choice.index == 0
            if choice.delta.role:
                roles += 1
            if choice.delta.content:
                text.append(choice.delta.content)
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    tool_calls = [
        {"index": i, "name": c["name"], "arguments": json.loads(c["arguments"])} for i, c in sorted(calls.items())
    ]
    return {
        "text": "".join(text),
        "finish_reason": finish,
        "usage": usage,
        "roles": roles,
        "objects": sorted(objects),
        "tool_calls": tool_calls,
    }


def error_of(fn):
    try:
        fn()
    except openai.APIStatusError as e:
        return {"type": type(e).__name__, "status": e.status_code, "retry_after": e.response.headers.get("retry-after")}
    except openai.APIError as e:
        return {"type": type(e).__name__, "message": bool(e.message)}
    return {"type": "no error"}


def run(model, user):
    out = {}
    messages = [SYSTEM, {"role": "user", "content": "What is the weather like in Paris today?"}]

    raw = client.chat.completions.with_raw_response.create(
        model=model, user=user, messages=messages, extra_headers={"x-mock-cached-tokens": "4"}
    )
    plain = raw.parse()
    out["variation"] = raw.headers.get("x-sluice-variation")
    out["plain"] = {
        "object": plain.object,
        "content": plain.choices[0].message.content,
        "role": plain.choices[0].message.role,
        "finish_reason": plain.choices[0].finish_reason,
        "usage": usage_of(plain.usage),
    }

    out["stream"] = stream(model, user, messages, True)
    out["stream_without_usage"] = stream(model, user, messages, False)

    # A two-turn tool loop.
    first = client.chat.completions.create(model=model, user=user, messages=messages, tools=TOOLS)
    msg = first.choices[0].message
    out["tools_turn1"] = {
        "finish_reason": first.choices[0].finish_reason,
        "content": msg.content or None,
        "tool_calls": calls_of(msg.tool_calls),
        "usage": usage_of(first.usage),
    }
    follow = messages + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in msg.tool_calls or []
            ],
        }
    ]
    for i, c in enumerate(msg.tool_calls or []):
        follow.append({"role": "tool", "tool_call_id": c.id, "content": f"result {i} of {c.function.name}"})
    second = client.chat.completions.create(model=model, user=user, messages=follow, tools=TOOLS)
    out["tools_turn2"] = {
        "finish_reason": second.choices[0].finish_reason,
        "content": second.choices[0].message.content,
        "tool_calls": calls_of(second.choices[0].message.tool_calls),
        "usage": usage_of(second.usage),
    }
    out["tools_stream"] = stream(model, user, messages, True, tools=TOOLS)
    one = client.chat.completions.create(
        model=model, user=user, messages=messages, tools=TOOLS, tool_choice="required", parallel_tool_calls=False
    )
    out["tools_one"] = calls_of(one.choices[0].message.tool_calls)
    out["tools_one_usage"] = usage_of(one.usage)

    schema = client.chat.completions.create(
        model=model,
        user=user,
        messages=messages,
        response_format={"type": "json_schema", "json_schema": SCHEMA},
    )
    out["json_schema"] = {
        "finish_reason": schema.choices[0].finish_reason,
        "content": json.loads(schema.choices[0].message.content),
        "tool_calls": calls_of(schema.choices[0].message.tool_calls),
        "usage": usage_of(schema.usage),
    }
    out["json_schema_stream"] = stream(
        model, user, messages, True, response_format={"type": "json_schema", "json_schema": SCHEMA}
    )

    script = lambda name: {"x-mock-script": name}  # noqa: E731
    out["bad_request"] = error_of(
        lambda: client.chat.completions.create(
            model=model, user=user, messages=messages, extra_headers=script("bad_request")
        )
    )
    out["rate_limited"] = error_of(
        lambda: client.chat.completions.create(
            model=model, user=user, messages=messages, extra_headers=script("rate_limited")
        )
    )
    out["overloaded"] = error_of(
        lambda: client.chat.completions.create(
            model=model, user=user, messages=messages, extra_headers=script("overloaded")
        )
    )
    out["mid_stream_error"] = error_of(
        lambda: list(
            client.chat.completions.create(
                model=model, user=user, messages=messages, stream=True, extra_headers=script("mid_stream_error")
            )
        )
    )
    # What the provider reported over every successful call (the stream without usage
    # costs what the same stream with usage reported): the gateway's token counters must agree.
    usages = [
        out["plain"]["usage"],
        out["stream"]["usage"],
        out["stream"]["usage"],
        out["tools_turn1"]["usage"],
        out["tools_turn2"]["usage"],
        out["tools_stream"]["usage"],
        out["json_schema"].pop("usage"),
        out["json_schema_stream"]["usage"],
        out.pop("tools_one_usage"),
    ]
    out["usage_total"] = {
        "prompt": sum(u["prompt"] for u in usages if u),
        "completion": sum(u["completion"] for u in usages if u),
        "calls": len([u for u in usages if u]),
    }
    return out


print(json.dumps({name: run(t["model"], t["user"]) for name, t in targets.items()}))
