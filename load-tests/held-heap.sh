#!/usr/bin/env bash
# Where a held stream's bytes go: STREAMS streams (default 2,000) held through sluice on
# the load tests' config, sluice run under heaptrack; prints idle and peak RSS, the bytes
# per stream, and heaptrack's peak consumers (each with its first frames). Loopback only;
# stops what it started by pid.
#
#   load-tests/held-heap.sh            # release build in ${CARGO_TARGET_DIR:-target}
#   HEAPTRACK=0 load-tests/held-heap.sh   # RSS only (no heaptrack)
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS=${STREAMS:-2000}
HEAPTRACK=${HEAPTRACK:-1}
bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release --quiet --bin sluice -p sluice -p sluice-loadgen
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap 'cleanup; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"
wait_for() { for _ in $(seq 600); do eval "$1" && return 0; sleep 0.05; done; echo "timed out: $1" >&2; exit 1; }

"$bin/sluice-upstream" 127.0.0.1:0 --threads 2 2>"$work/up.log" & pids+=($!)
wait_for "grep -q address= '$work/up.log'"
up=$(grep -o 'address=[0-9.:]*' "$work/up.log" | cut -d= -f2)
pre=()
[ "$HEAPTRACK" = 1 ] && pre=(heaptrack -o "$work/heap")
RUST_LOG=warn DATA_ADDR=127.0.0.1:0 ADMIN_ADDR=127.0.0.1:0 MOCK_ADDR=$up \
  "${pre[@]}" "$bin/sluice" serve --config load-tests/sluice.yaml --ready-file "$work/ready" 2>"$work/sluice.log" & pids+=($!)
wait_for "[ -s '$work/ready' ]"
pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$work/ready")
data=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"])' "$work/ready")
pids+=("$pid")
idle=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
echo 0 > "$work/peak"
( while kill -0 "$pid" 2>/dev/null; do
    r=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$(cat "$work/peak")" ] && echo "$r" > "$work/peak"; sleep 0.25
  done ) & pids+=($!)
"$bin/sluice-loadgen" --mode hold --addr "$data" --model support-bot --concurrency "$STREAMS" \
  --http2-connections 100 --chunks 30 --chunk-delay-ms 300 | tail -1
peak=$(cat "$work/peak")
echo "streams=$STREAMS idle_rss_kb=$idle peak_rss_kb=$peak per_stream_kb=$(( (peak - idle) / STREAMS ))"
[ "$HEAPTRACK" = 1 ] || exit 0
kill "$pid"
wait_for "! kill -0 $pid 2>/dev/null"
wait_for "[ -s \"\$(ls $work/heap*.zst 2>/dev/null | head -1)\" ]"
sleep 1 # heaptrack finishes writing after the process has gone
heaptrack_print "$(ls "$work"/heap*.zst | head -1)" --print-peaks 1 --peak-limit 20 --print-allocators 0 \
  --print-leaks 0 --print-temporary 0 --print-histogram 0 > "$work/peaks.txt" 2>/dev/null
python3 - "$work/peaks.txt" "$STREAMS" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().split("\n")
streams = int(sys.argv[2])
units = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
print(f"{'bytes/stream':>12}  calls  where (first frames outside the standard library)")
for i, l in enumerate(lines):
    m = re.search(r"([\d.]+)([KMG]?)B? consumed over (\d+) calls from", l)
    if not m or "peak memory" in l:
        continue
    size = float(m.group(1)) * units[m.group(2) or "B"]
    if size / streams < 100:
        continue
    frames = []
    for s in lines[i + 1:]:
        if "consumed over" in s or len(frames) == 3:
            break
        s = s.strip()
        if s.startswith("at ") and "/rustc/" not in s:
            frames.append(re.sub(r".*/index\.crates\.io-[^/]*/", "", s[3:]))
    print(f"{size / streams:12.0f}  {m.group(3):>5}  {' | '.join(frames)}")
PY
