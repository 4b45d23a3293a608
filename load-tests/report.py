"""Turn load-tests/run.sh's JSON lines into load-tests/RESULTS.md (printed on stdout).

Usage: report.py RESULTS_JSONL IDLE_RSS_KB PEAK_RSS_KB HWM_KB HOLD_STREAMS HOLD_SECS
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
idle_kb, peak_kb, hwm_kb = (int(x or 0) for x in sys.argv[2:5])
hold_streams, hold_secs = int(sys.argv[5]), int(sys.argv[6])


def cmd(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip() or \
            subprocess.run(args, capture_output=True, text=True, check=False).stderr.strip()
    except OSError:
        return "?"


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def mem_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return int(line.split()[1]) / 1024 / 1024
    return 0


def ms(us):
    return f"{us / 1000:.3f} ms"


def us(v):
    return f"{v:.0f} µs"


def check(ok):
    return "✓" if ok else "✗"


def cpu_per_request(r):
    ticks = r["cpu_ticks"] / r["clk_tck"]
    total = r["requests"] or 1
    # CPU is measured over warm-up + measurement; requests only over the measurement.
    seconds = r["seconds"] + 1.0
    return ticks * 1e6 / (total * seconds / r["seconds"])


def merge(runs):
    """One row from the rounds of a workload and target: medians of the figures, sums of counts."""
    if len(runs) == 1:
        return dict(runs[0], cpu_us=cpu_per_request(runs[0]), rounds=1)
    med = lambda key: statistics.median(r[key] for r in runs)
    row = dict(runs[0])
    for key in ("p50_us", "p90_us", "p99_us", "ttft_p50_us", "ttft_p99_us", "rps"):
        row[key] = med(key)
    row["requests"] = sum(r["requests"] for r in runs)
    row["errors"] = sum(r["errors"] for r in runs)
    row["first_error"] = next((r["first_error"] for r in runs if r.get("first_error")), None)
    row["cpu_us"] = statistics.median(cpu_per_request(r) for r in runs)
    row["rounds"] = len(runs)
    return row


grouped = {}
for r in rows:
    grouped.setdefault((r["workload"], r["target"]), []).append(r)
by = {key: merge(runs) for key, runs in grouped.items()}


out = []
w = out.append
w("# Load test results\n")
w(f"Written by `load-tests/run.sh` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.\n")
w("## Machine and versions\n")
w(f"- CPU: {os.cpu_count()} × {cpu_model()}; memory {mem_gib():.0f} GiB; kernel {platform.release()}")
w(f"- {cmd('rustc', '--version')}; sluice {cmd('git', 'rev-parse', '--short', 'HEAD')}; {cmd('nginx', '-v')}")
w("- Everything on loopback on the same two cores: the load generator (`load-tests/loadgen`), the mock"
  " provider (`sluice mock-provider`), nginx and sluice share them, so absolute figures are"
  " pessimistic; compare the columns.")
w("- `direct` is the mock provider itself; `nginx` a plain keep-alive reverse proxy to it"
  " (`proxy_buffering off`); `floor` the smallest reverse proxy on sluice's own stack (tokio, hyper,"
  " hyper-util's pooled client: `load-tests/loadgen/src/bin/sluice-floor.rs`), which shows what the"
  " stack and this machine cost before sluice does anything; `sluice` serves the flag `support-bot` of `load-tests/sluice.yaml`"
  " (20 rules of mixed operators and a segment, a 5% rollout, a Mustache system prompt), every"
  " request with a distinct user.\n")

targets = [t for t in ("direct", "nginx", "floor", "sluice") if ("a", t) in by]
direct = lambda wl: by.get((wl, "direct"))
rounds = by[("a", targets[0])]["rounds"] if targets else 1

w("## (a) Non-streaming chat completions, concurrency 1\n")
if rounds > 1:
    w(f"Each target ran {rounds} interleaved rounds; each figure is the median of the rounds'"
      " figures (requests and errors are totals).\n")
w("| target | requests | errors | p50 | p99 | added p50 | added p99 | budget |")
w("|---|---|---|---|---|---|---|---|")
for t in targets:
    r = by[("a", t)]
    d = direct("a")
    add50 = r["p50_us"] - d["p50_us"] if d and t != "direct" else None
    add99 = r["p99_us"] - d["p99_us"] if d and t != "direct" else None
    budget = ""
    if t == "sluice" and add50 is not None:
        budget = f"p50 ≤ 50 µs {check(add50 <= 50)}, p99 ≤ 200 µs {check(add99 <= 200)}"
    w(f"| {t} | {r['requests']} | {r['errors']} | {us(r['p50_us'])} | {us(r['p99_us'])} | "
      f"{'' if add50 is None else us(add50)} | {'' if add99 is None else us(add99)} | {budget} |")

if ("a", "floor") in by and ("a", "sluice") in by:
    f, r = by[("a", "floor")], by[("a", "sluice")]
    w(f"\nsluice over the floor (what sluice itself adds to the stack): p50 {us(r['p50_us'] - f['p50_us'])},"
      f" p99 {us(r['p99_us'] - f['p99_us'])}.")

w("\n## (b) Non-streaming chat completions, concurrency 64\n")
w("CPU per request is the proxy process's user + system time (for `direct`, the mock's own)"
  + (f"; medians of {rounds} rounds" if rounds > 1 else "") + ".\n")
w("| target | requests/s | errors | p50 | p99 | CPU per request | vs nginx | budget |")
w("|---|---|---|---|---|---|---|---|")
nginx_cpu = by[("b", "nginx")]["cpu_us"] if ("b", "nginx") in by else None
for t in targets:
    r = by[("b", t)]
    cpu = r["cpu_us"]
    ratio = f"{cpu / nginx_cpu:.1f}×" if nginx_cpu and t != "direct" else ""
    budget = f"≤ 20 µs {check(cpu <= 20)}" if t == "sluice" else ""
    w(f"| {t} | {r['rps']:.0f} | {r['errors']} | {us(r['p50_us'])} | {us(r['p99_us'])} | {cpu:.1f} µs | {ratio} | {budget} |")

if ("b", "floor") in by and ("b", "sluice") in by:
    w(f"\nsluice over the floor: {by[('b', 'sluice')]['cpu_us'] - by[('b', 'floor')]['cpu_us']:.1f} µs CPU per request.")

for c in ("16", "1"):
    wl = f"c{c}"
    if (wl, "sluice") not in by:
        continue
    w(f"\n## (c) Streaming (20 chunks, 5 ms apart), concurrency {c}\n")
    w("Time to first token: from sending the request to the first SSE event that carries content.\n")
    w("| target | streams | errors | TTFT p50 | TTFT p99 | stream p50 | stream p99 | added TTFT p50 | budget |")
    w("|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        r = by[(wl, t)]
        d = direct(wl)
        add = r["ttft_p50_us"] - d["ttft_p50_us"] if d and t != "direct" else None
        budget = f"≤ 0.2 ms {check(add <= 200)}" if t == "sluice" and add is not None else ""
        w(f"| {t} | {r['requests']} | {r['errors']} | {ms(r['ttft_p50_us'])} | {ms(r['ttft_p99_us'])} | "
          f"{ms(r['p50_us'])} | {ms(r['p99_us'])} | {'' if add is None else ms(add)} | {budget} |")

if ("d", "sluice") in by:
    r = by[("d", "sluice")]
    w(f"\n## (d) {hold_streams:,} concurrent streams held for {hold_secs} s (sluice)\n")
    w("The client multiplexes its streams over 100 HTTP/2 connections (one HTTP/1.1 connection per"
      " stream would need more than the 20,000 file descriptors a process may open here, since sluice"
      " also holds one upstream connection per stream).\n")
    ok = r["requests"] == hold_streams and r["errors"] == 0
    w("| streams | completed | errors | stream p50 | stream p99 | peak RSS | budget |")
    w("|---|---|---|---|---|---|---|")
    w(f"| {hold_streams} | {r['requests']} | {r['errors']} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | "
      f"{peak_kb / 1024:.1f} MB (VmHWM {hwm_kb / 1024:.1f} MB) | all complete {check(ok)}, ≤ 150 MB {check(peak_kb <= 150 * 1024)} |")
    if r.get("first_error"):
        w(f"\nFirst error: `{r['first_error']}`")

w("\n## (e) Idle memory\n")
w("| sluice RSS after start-up | budget |")
w("|---|---|")
w(f"| {idle_kb / 1024:.1f} MB | ≤ 30 MB {check(idle_kb <= 30 * 1024)} |")

errors = [r for r in rows if r["errors"]]
if errors:
    w("\n## Errors\n")
    for r in errors:
        w(f"- {r['workload']} {r['target']}: {r['errors']} errors; first: `{r.get('first_error')}`")
print("\n".join(out))
