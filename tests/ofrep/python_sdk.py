"""The OpenFeature Python SDK with its OFREP provider against sluice (tests/ofrep.rs runs
this with the gateway's address and keys). Exits non-zero on the first wrong answer."""
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

base, key, limited_key = sys.argv[1], sys.argv[2], sys.argv[3]


def provider(k):
    return OFREPProvider(base, headers_factory=lambda: {"Authorization": f"Bearer {k}"})


api.set_provider(provider(key), domain="app")
api.set_provider(provider(limited_key), domain="limited")
client = api.get_client("app")
user = EvaluationContext("u1")


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}", file=sys.stderr)
        sys.exit(1)
    print(f"ok {what}: {got!r}")


d = client.get_string_details("theme", "none", user)
check("string value, STATIC", (d.value, d.variant, d.reason, d.error_code), ("light", "light", Reason.STATIC, None))
d = client.get_boolean_details("new-checkout", False, EvaluationContext("u1", {"beta": True}))
check("boolean, rule", (d.value, d.variant, d.reason), (True, "on", Reason.TARGETING_MATCH))
check("rule metadata", (d.flag_metadata.get("ruleId"), d.flag_metadata.get("ldReason")), ("beta-users", "RULE_MATCH"))
d = client.get_boolean_details("new-checkout", True, user)
check("boolean, fallthrough of a targeted flag", (d.value, d.reason), (False, Reason.DEFAULT))
d = client.get_integer_details("max-items", 0, user)
check("integer, a rollout", (d.value in (3, 30), type(d.value), d.reason), (True, int, Reason.SPLIT))
d = client.get_float_details("ratio", 0.0, user)
check("float keeps its form", (d.value, type(d.value)), (2.0, float))
d = client.get_object_details("limits", {}, user)
check("object", d.value, {"max": 3, "tiers": ["a"]})
d = client.get_string_details("retired", "none", user)
check("off: DISABLED with the off variation", (d.value, d.reason), ("old", Reason.DISABLED))

# An AI config, as an app that calls the provider itself reads it.
d = client.get_object_details("support-bot", {}, EvaluationContext("qa-tester"))
check("AI config variant", (d.variant, d.reason), ("candidate", Reason.TARGETING_MATCH))
check("AI config model", (d.value["model"]["name"], d.value["provider"]["name"]), ("mock-2", "mock-b"))
check("AI config metadata", (d.flag_metadata["aiConfigKey"], d.flag_metadata["aiConfigVersion"]), ("support-bot", 2))

# Errors: the code default, and why.
d = client.get_string_details("no-such-flag", "fallback", user)
check("FLAG_NOT_FOUND", (d.value, d.error_code, d.reason), ("fallback", ErrorCode.FLAG_NOT_FOUND, Reason.ERROR))
d = client.get_integer_details("theme", 7, user)
check("a string read as an integer", (d.value, d.error_code), (7, ErrorCode.TYPE_MISMATCH))
d = client.get_integer_details("ratio", 7, user)
check("a float read as an integer", (d.value, d.error_code), (7, ErrorCode.TYPE_MISMATCH))
d = client.get_float_details("max-items", 0.5, user)
check("an integer read as a float", (d.value, d.error_code), (0.5, ErrorCode.TYPE_MISMATCH))
d = client.get_string_details("theme", "none", EvaluationContext(None, {"email": "x@y.z"}))
check("no targeting key", (d.value, d.error_code), ("none", ErrorCode.TARGETING_KEY_MISSING))

# 429: the provider backs off for Retry-After and asks nothing meanwhile.
limited = api.get_client("limited")
results = [limited.get_string_details("theme", "none", user) for _ in range(4)]
check("within the burst", [r.value for r in results[:2]], ["light", "light"])
check("then rate limited", (results[2].value, results[2].error_code), ("none", ErrorCode.GENERAL))
check("429 names Retry-After", "retry after" in (results[2].error_message or "").lower(), True)
check("and backed off, not asked again", "paused" in (results[3].error_message or "").lower(), True)
print("all OpenFeature Python SDK checks passed")
