"""Turn load-tests/run.sh's measurements into load-tests/RESULTS.md (printed on stdout).

Usage: report.py RESULTS_JSONL META_JSON

RESULTS_JSONL has one JSON object per measured run: `workload` (a, b, c1, c16, hold,
idle), `target`, `round` and the figures (requests, errors, rps, p50_us, p99_us,
ttft_p50_us, cpu_ticks, clk_tck, rss_kb, idle_kb, peak_kb, ...). META_JSON holds the run's
settings (secs, rounds, stream_rounds, hold_streams, hold_secs, ...). Figures over rounds are
medians, with the min–max of the rounds beside them; the per-round rows are kept at the end.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
meta = json.load(open(sys.argv[2]))

ORDER = ["direct", "nginx", "floor", "sluice-flag", "sluice-alias", "before-flag", "before-alias"]
PROXIES = ["nginx", "floor", "sluice", "before"]
SLUICE = ["sluice-flag", "sluice-alias"]
MB = 1024  # KiB per MB in this report (1 MB = 2^20 bytes, 1 KB = 2^10 bytes)


def cmd(*args):
    try:
        p = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10)
        return (p.stdout.strip() or p.stderr.strip()).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
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


def runs(workload, target):
    return sorted((r for r in rows if r["workload"] == workload and r["target"] == target),
                  key=lambda r: r.get("round", 0))


def cpu_us(r):
    n = (r.get("requests") or 0) + (r.get("errors") or 0)
    if "cpu_ticks" not in r or not n:
        return None
    return r["cpu_ticks"] / r["clk_tck"] * 1e6 / n


def values(workload, target, key):
    out = []
    for r in runs(workload, target):
        v = key(r) if callable(key) else r.get(key)
        if v is not None:
            out.append(v)
    return out


def med(workload, target, key):
    v = values(workload, target, key)
    return statistics.median(v) if v else None


def spread(workload, target, key, fmt):
    """`median (min–max)` over the rounds, or just the value for one round."""
    v = values(workload, target, key)
    if not v:
        return ""
    m = fmt(statistics.median(v))
    return m if len(v) == 1 else f"{m} ({fmt(min(v))}–{fmt(max(v))})"


def added_rounds(workload, target, key):
    """The target's figure minus direct's, round by round (the rounds are interleaved)."""
    d = {r["round"]: r.get(key) for r in runs(workload, "direct")}
    return [r[key] - d[r["round"]] for r in runs(workload, target)
            if r.get(key) is not None and d.get(r["round"]) is not None]


def added(workload, target, key):
    """The target's median minus direct's median."""
    t, d = med(workload, target, key), med(workload, "direct", key)
    return None if t is None or d is None else t - d


def us(v):
    return "" if v is None else f"{v:.1f} µs" if abs(v) < 100 else f"{v:.0f} µs"


def num(v):
    return f"{v:,.0f}"


def mb(kb):
    return f"{kb / MB:.1f} MB"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b not in (None, 0) else ""


def mark(ok):
    return "✓" if ok else "✗"


def total(workload, target, key):
    return sum(r.get(key) or 0 for r in runs(workload, target))


targets = [t for t in ORDER if runs("a", t) or runs("c1", t)]
hold_n = meta["hold_streams"]

out = []
w = out.append

# --- trust check, first ---------------------------------------------------------------------
direct_p50 = med("a", "direct", "p50_us")
trusted = direct_p50 is not None and direct_p50 <= 30
w("# Load test results\n")
if not trusted:
    w(f"**This run is not trustworthy: `direct` at concurrency 1 (the upstream alone, oha pinned to the same"
      f" core) had a median p50 of {us(direct_p50) or 'nothing'}, above 30 µs. On a quiet machine it is"
      f" about 10–15 µs, so the machine was busy (other processes, CPU steal, frequency scaling) or the"
      f" pinning failed; every latency below is inflated by the same noise and the comparisons with nginx"
      f" may not hold. Re-run on a quiet machine.**\n")

dirty = cmd("git", "status", "--porcelain", "--untracked-files=no") not in ("", "?")
w(f"Written by `load-tests/run.sh` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.\n")
w("## Machine and run\n")
w(f"- Machine: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}, {mem_gib():.0f} GiB; kernel {platform.release()}")
w(f"- Commit: `{cmd('git', 'rev-parse', '--short', 'HEAD')}`{' (with uncommitted changes)' if dirty else ''};"
  f" {cmd('rustc', '--version')}; {cmd('nginx', '-v')}; {cmd('oha', '--version')}")
w(f"- Rounds: {meta['rounds']} interleaved rounds of (a) and (b), {meta['stream_rounds']} of (c);"
  f" {meta['secs']} s per measured workload; (d) {hold_n:,} streams for {meta['hold_secs']} s")
if meta.get("baseline"):
    w(f"- `before-*`: `{meta['baseline']}` (BASELINE_BIN) on the same config, a process of its own")
w("- Targets: `direct` is the upstream (`sluice-upstream`, a few µs per request) alone; `nginx` a keep-alive"
  " reverse proxy to it (2 workers, upstream keepalive, `proxy_buffering off`, no access log);"
  " `sluice-flag` is sluice serving the flag `support-bot` (20 rules, a 5 % rollout, a Mustache system"
  " prompt), `sluice-alias` the plain alias `plain` (only `model` rewritten), one sluice process for both."
  + (" `floor` is a bare hyper reverse proxy (`sluice-floor`)." if runs("a", "floor") else ""))
w("- Concurrency-1 workloads pin the client, the proxy and the upstream to CPU 0 (a cross-core wake-up"
  " costs several µs each way, which would swamp what a proxy adds); the others run unpinned on all"
  " cores. Every figure over rounds is the median, with the rounds' min–max in brackets. 1 MB = 2²⁰ bytes.\n")

# --- (a) -------------------------------------------------------------------------------------
nginx_add_a = added("a", "nginx", "p50_us")
w("## (a) Non-streaming, concurrency 1 (oha, pinned to CPU 0)\n")
w("Added p50 is the target's median p50 minus direct's; its range is the per-round differences.\n")
w("| target | requests | errors | p50 | p99 | added p50 | added p50 ÷ nginx's |")
w("|---|---|---|---|---|---|---|")
for t in targets:
    if not runs("a", t):
        continue
    add = added("a", t, "p50_us")
    rng = added_rounds("a", t, "p50_us")
    add_s = "" if t == "direct" else us(add) + (f" ({us(min(rng))}–{us(max(rng))})" if len(rng) > 1 else "")
    w(f"| {t} | {num(total('a', t, 'requests'))} | {total('a', t, 'errors')} | {spread('a', t, 'p50_us', us)} |"
      f" {spread('a', t, 'p99_us', us)} | {add_s} | {'' if t == 'direct' else ratio(add, nginx_add_a)} |")

# --- (b) -------------------------------------------------------------------------------------
nginx_rps = med("b", "nginx", "rps")
nginx_cpu = med("b", "nginx", cpu_us)
w("\n## (b) Non-streaming, concurrency 64 (oha, unpinned)\n")
w("CPU per request: user + system time of the target's processes (nginx: master and workers; direct: the"
  " upstream) over the measured workload, from `/proc/PID/stat`, divided by the requests.\n")
w("| target | requests | errors | requests/s | ÷ nginx | p50 | p99 | CPU per request | ÷ nginx |")
w("|---|---|---|---|---|---|---|---|---|")
for t in targets:
    if not runs("b", t):
        continue
    w(f"| {t} | {num(total('b', t, 'requests'))} | {total('b', t, 'errors')} | {spread('b', t, 'rps', num)} |"
      f" {ratio(med('b', t, 'rps'), nginx_rps)} | {spread('b', t, 'p50_us', us)} | {spread('b', t, 'p99_us', us)} |"
      f" {spread('b', t, cpu_us, us)} | {'' if t == 'direct' else ratio(med('b', t, cpu_us), nginx_cpu)} |")

# --- (c) -------------------------------------------------------------------------------------
for wl, c, how in (("c1", 1, "sluice-lean, pinned to CPU 0"), ("c16", 16, "sluice-lean, unpinned")):
    if not runs(wl, "direct"):
        continue
    nginx_add = added(wl, "nginx", "ttft_p50_us")
    w(f"\n## (c) Streaming time to first token, concurrency {c} ({how})\n")
    if c == 1:
        w(f"{meta['stream_chunks']} SSE events {meta['stream_delay_ms']} ms apart, the first at once; TTFT is from"
          " writing the request to the first bytes of an event carrying content.\n")
    w("| target | streams | errors | TTFT p50 | TTFT p99 | added TTFT p50 | added ÷ nginx's |")
    w("|---|---|---|---|---|---|---|")
    for t in targets:
        if not runs(wl, t):
            continue
        add = added(wl, t, "ttft_p50_us")
        rng = added_rounds(wl, t, "ttft_p50_us")
        add_s = "" if t == "direct" else us(add) + (f" ({us(min(rng))}–{us(max(rng))})" if len(rng) > 1 else "")
        w(f"| {t} | {num(total(wl, t, 'requests'))} | {total(wl, t, 'errors')} | {spread(wl, t, 'ttft_p50_us', us)} |"
          f" {spread(wl, t, 'ttft_p99_us', us)} | {add_s} | {'' if t == 'direct' else ratio(add, nginx_add)} |")

# --- (d) -------------------------------------------------------------------------------------
hold = {r["target"]: r for r in rows if r["workload"] == "hold"}


def per_stream_bytes(r):
    return (r["peak_kb"] - r["idle_kb"]) * 1024 / r["streams"] if r and r.get("streams") else None


def all_held(r):
    return bool(r) and r.get("requests") == r["streams"] and not r.get("errors")


if hold:
    w(f"\n## (d) {hold_n:,} held streams for {meta['hold_secs']} s\n")
    w(f"sluice-loadgen `--mode hold` opens all {hold_n:,} streams at once, multiplexed over"
      f" {meta['hold_connections']} HTTP/2 connections to the proxy (nginx: prior-knowledge h2c); the proxy holds one"
      " HTTP/1.1 upstream connection per stream; each stream is 30 events spread over the hold. RSS is"
      " VmRSS sampled every 0.25 s (nginx: summed over the master and its workers, so their shared pages"
      " count once per process); per stream = (peak − idle before) ÷ streams. Peak open descriptors (sampled"
      " likewise) shows the streams were held at once: about one upstream connection per stream.\n")
    w("| proxy | streams | completed | errors | peak open descriptors | idle RSS before | peak RSS | per stream | ÷ nginx | stream p50 | stream max |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    nginx_ps = per_stream_bytes(hold.get("nginx"))
    for t in ("nginx", "sluice"):
        r = hold.get(t)
        if not r:
            continue
        ps = per_stream_bytes(r)
        w(f"| {t} | {r['streams']:,} | {r.get('requests') or 0:,} | {r.get('errors') or 0} | {r.get('peak_fds', 0):,} | {mb(r['idle_kb'])} |"
          f" {mb(r['peak_kb'])} | {ps / 1024:.1f} KB | {'' if t == 'nginx' else ratio(ps, nginx_ps)} |"
          f" {(r.get('p50_us') or 0) / 1e6:.2f} s | {(r.get('max_us') or 0) / 1e6:.2f} s |")
    for t in ("nginx", "sluice"):
        r = hold.get(t)
        if r and not all_held(r):
            w(f"\n**{t} did not hold all {r['streams']:,} streams: {r.get('requests') or 0:,} completed,"
              f" {r.get('errors') or 0} errors; first error: `{r.get('first_error')}`.** The RSS figures above"
              " cover only the streams that were held.")

# --- (e) -------------------------------------------------------------------------------------
idle = {r["target"]: r for r in rows if r["workload"] == "idle"}
if idle:
    w("\n## (e) Idle RSS, after start-up and before any traffic\n")
    w("| process | processes | RSS | ÷ nginx |")
    w("|---|---|---|---|")
    for t in ("direct", "nginx", "floor", "sluice", "before"):
        r = idle.get(t)
        if r:
            w(f"| {t} | {r.get('processes', 1)} | {mb(r['rss_kb'])} |"
              f" {'' if t in ('direct', 'nginx') else ratio(r['rss_kb'], idle['nginx']['rss_kb'] if 'nginx' in idle else None)} |")

# --- goals -----------------------------------------------------------------------------------
goals = []


def goal(name, measured, ok):
    goals.append((name, measured, "–" if ok is None else mark(ok)))


for t in SLUICE:
    a = added("a", t, "p50_us")
    ok = None if a is None or nginx_add_a is None else a <= nginx_add_a + 5
    goal(f"c=1 added p50, {t} ≤ nginx's + 5 µs", f"{us(a)} (nginx {us(nginx_add_a)}, limit"
         f" {us(None if nginx_add_a is None else nginx_add_a + 5)})", ok)
nginx_ttft = added("c1", "nginx", "ttft_p50_us")
for t in SLUICE:
    a = added("c1", t, "ttft_p50_us")
    ok = None if a is None or nginx_ttft is None else a <= nginx_ttft + 50
    goal(f"c=1 added TTFT p50, {t} ≤ nginx's + 0.05 ms", f"{us(a)} (nginx {us(nginx_ttft)})", ok)
for t, limit in (("sluice-flag", 1.2), ("sluice-alias", 1.0)):
    c = med("b", t, cpu_us)
    ok = None if c is None or not nginx_cpu else c <= limit * nginx_cpu
    goal(f"c=64 CPU per request, {t} ≤ {limit:.1f} × nginx's", f"{us(c)} = {ratio(c, nginx_cpu)} nginx ({us(nginx_cpu)})", ok)
for t in SLUICE:
    r = med("b", t, "rps")
    ok = None if r is None or not nginx_rps else r >= 0.9 * nginx_rps
    goal(f"c=64 requests/s, {t} ≥ 0.9 × nginx's", f"{num(r or 0)}/s = {ratio(r, nginx_rps)} nginx ({num(nginx_rps or 0)}/s)", ok)
s, n = hold.get("sluice"), hold.get("nginx")
if s:
    ps = per_stream_bytes(s)
    if s["streams"] == 10000:
        peak, how = s["peak_kb"], "measured"
    else:
        peak, how = s["idle_kb"] + ps * 10000 / 1024, f"projected from {s['streams']:,} streams: idle + 10,000 × per stream"
    goal("held streams: sluice held them all", f"{s.get('requests') or 0:,} of {s['streams']:,} completed,"
         f" {s.get('errors') or 0} errors", all_held(s))
    goal("held streams: sluice peak RSS for 10,000 ≤ 150 MB", f"{mb(peak)} ({how})", peak <= 150 * MB)
    goal("held streams: sluice per stream ≤ 15 KB", f"{ps / 1024:.1f} KB", ps <= 15 * 1024)
    nps = per_stream_bytes(n)
    goal("held streams: sluice per stream ≤ nginx's", f"{ps / 1024:.1f} KB vs nginx {'?' if nps is None else f'{nps / 1024:.1f}'} KB",
         None if nps is None else ps <= nps)
goal("trust: direct c=1 p50 ≤ 30 µs", us(direct_p50) or "not measured", trusted)

w("\n## Goals\n")
w("| goal | measured | |")
w("|---|---|---|")
for name, measured, m in goals:
    w(f"| {name} | {measured} | {m} |")

# --- before / after --------------------------------------------------------------------------
if runs("a", "before-flag") or runs("a", "before-alias"):
    w("\n## Before / after\n")
    w(f"`before-*` is `{meta.get('baseline')}`, `sluice-*` this build; both measured in the same rounds.\n")
    w("| metric | before-flag | sluice-flag | before-alias | sluice-alias |")
    w("|---|---|---|---|---|")

    def row(name, f):
        w(f"| {name} | " + " | ".join(f(t) for t in ("before-flag", "sluice-flag", "before-alias", "sluice-alias")) + " |")

    row("c=1 added p50", lambda t: us(added("a", t, "p50_us")))
    row("c=64 requests/s ÷ nginx", lambda t: ratio(med("b", t, "rps"), nginx_rps))
    row("c=64 CPU per request", lambda t: f"{us(med('b', t, cpu_us))} ({ratio(med('b', t, cpu_us), nginx_cpu)} nginx)")
    row("c=1 added TTFT p50", lambda t: us(added("c1", t, "ttft_p50_us")))
    row("c=16 added TTFT p50", lambda t: us(added("c16", t, "ttft_p50_us")))

# --- errors and raw data ---------------------------------------------------------------------
errors = [r for r in rows if r.get("errors")]
if errors:
    w("\n## Errors\n")
    for r in errors:
        w(f"- {r['workload']} {r['target']} round {r.get('round')}: {r['errors']} errors; first: `{r.get('first_error')}`")

w("\n<details><summary>Per-round raw data</summary>\n")
w("| workload | target | round | requests | errors | requests/s | p50 | p99 | TTFT p50 | TTFT p99 | CPU per request |")
w("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["workload"] in ("idle", "hold"):
        continue
    w(f"| {r['workload']} | {r['target']} | {r.get('round')} | {r.get('requests')} | {r.get('errors')} |"
      f" {num(r.get('rps') or 0)} | {us(r.get('p50_us'))} | {us(r.get('p99_us'))} | {us(r.get('ttft_p50_us'))} |"
      f" {us(r.get('ttft_p99_us'))} | {us(cpu_us(r))} |")
w("\n</details>")
print("\n".join(out))
