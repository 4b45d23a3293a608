#!/usr/bin/env bash
# sluice's load tests: the same workloads against `direct` (the lean upstream itself),
# `nginx` (a keep-alive reverse proxy to the same upstream) and sluice (`sluice-flag`: the
# targeting flag `support-bot`; `sluice-alias`: the plain alias `plain`; both one
# process), on loopback only. Writes load-tests/RESULTS.md. Stops everything it started,
# by pid. See load-tests/README.md.
#
#   load-tests/run.sh                          # the full run (release build; oha and nginx)
#   BASELINE_BIN=/path/to/old/sluice load-tests/run.sh   # ... plus before-flag / before-alias
#   SECS=5 load-tests/run.sh --smoke           # CI: debug build, sluice only; fails only on errors
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
smoke=false
case "${1:-}" in
  --smoke) smoke=true ;;
  "") ;;
  *) echo "usage: load-tests/run.sh [--smoke]" >&2; exit 2 ;;
esac
SECS=${SECS:-5}                 # seconds per measured workload
ROUNDS=${ROUNDS:-5}             # interleaved rounds of (a) and (b)
STREAM_ROUNDS=${STREAM_ROUNDS:-3}   # interleaved rounds of (c)
HOLD_STREAMS=${HOLD_STREAMS:-10000}
HOLD_SECS=${HOLD_SECS:-30}
BASELINE_BIN=${BASELINE_BIN:-}
FLOOR=${FLOOR:-0}
STREAM_CHUNKS=5                 # (c): 5 SSE events, 1 ms apart (TTFT is the first)
STREAM_DELAY_MS=1
HOLD_CONNECTIONS=100            # (d): HTTP/2 connections from the client to the proxy

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac

# --- build -------------------------------------------------------------------------------
if $smoke; then
  # The smoke checks for errors only: the debug build `cargo test` already made.
  log "build (debug)"
  cargo build --quiet --bin sluice
  cargo build --quiet -p sluice-loadgen
  bin_dir=$target_dir/debug
else
  log "build (release)"
  cargo build --release --quiet --bin sluice
  cargo build --release --quiet -p sluice-loadgen
  bin_dir=$target_dir/release
fi
sluice=$bin_dir/sluice
upstream_bin=$bin_dir/sluice-upstream
lean=$bin_dir/sluice-lean
loadgen=$bin_dir/sluice-loadgen
floor_bin=$bin_dir/sluice-floor
for b in "$sluice" "$upstream_bin" "$lean" "$loadgen"; do
  [ -x "$b" ] || die "$b was not built (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-unset})"
done

if ! $smoke; then
  [ -z "$BASELINE_BIN" ] || [ -x "$BASELINE_BIN" ] || die "BASELINE_BIN=$BASELINE_BIN is not an executable"
  command -v taskset >/dev/null || die "taskset (util-linux) is needed to pin the concurrency-1 workloads"
  if ! command -v oha >/dev/null && [ -x "$HOME/.cargo/bin/oha" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
  if ! command -v oha >/dev/null; then
    log "install oha (cargo install oha --locked)"
    cargo install oha --locked --quiet
    PATH=$HOME/.cargo/bin:$PATH
  fi
  if ! command -v nginx >/dev/null; then
    log "install nginx (Debian package)"
    (apt-get update -qq && (apt-get install -y -qq nginx-light || apt-get install -y -qq nginx)) >/dev/null
  fi
fi

# --- processes -----------------------------------------------------------------------------
# shellcheck source=load-tests/lib.sh
. load-tests/lib.sh
# (d) needs one descriptor per held stream in the proxy and in the upstream.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)

# Poll `cmd` every 50 ms for at most `secs`; fail with `what` if it never succeeds.
wait_for() { # what secs cmd...
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 20; i++)); do
    "$@" && return 0
    sleep 0.05
  done
  die "gave up after ${secs}s waiting for $what"
}
alive_or_die() { kill -0 "$1" 2>/dev/null || { tail -20 "$2" >&2; die "$3 exited (log above)"; }; }
# The address a server bound (it was given port 0), from its log line `address=ADDR`.
log_has_addr() { alive_or_die "$2" "$1" "$3"; grep -q 'address=127\.0\.0\.1:[0-9]' "$1" 2>/dev/null; }
addr_port() { grep -o 'address=127\.0\.0\.1:[0-9]*' "$1" | head -1 | sed 's/.*://'; }
# sluice's ready file, written once both listeners are bound: {"data": ADDR, "admin": ADDR, "pid": N}.
ready_file_there() { alive_or_die "$2" "$3" "$4"; [ -s "$1" ]; }
ready_port() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]].rsplit(":", 1)[1])' "$1" "$2"; }
# nginx and the floor cannot report a port they chose: give them a free one (full run only).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A process and its children (nginx: the master and its workers).
group() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { # user + system ticks of a process group
  local total=0 p t
  for p in $(group "$1"); do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
rss_kb() { # VmRSS summed over a process group
  local total=0 p r
  for p in $(group "$1"); do
    r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${r:-0}))
  done
  echo "$total"
}
fd_count() { # open descriptors over a process group
  local total=0 p n
  for p in $(group "$1"); do
    n=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    total=$((total + n))
  done
  echo "$total"
}
children_at_least() { [ "$(pgrep -c -P "$1" || true)" -ge "$2" ]; }

start_upstream() {
  log "start sluice-upstream (2 threads)"
  "$upstream_bin" 127.0.0.1:0 --threads 2 2>"$work/upstream.log" & pids+=($!)
  upstream_pid=$!
  wait_for "sluice-upstream's address= line" 10 log_has_addr "$work/upstream.log" "$upstream_pid" sluice-upstream
  upstream_port=$(addr_port "$work/upstream.log")
}

start_sluice() { # name binary -> sets started_pid, started_port
  local name=$1 binary=$2 pid
  log "start $name ($binary) on load-tests/sluice.yaml"
  RUST_LOG=warn DATA_ADDR=127.0.0.1:0 ADMIN_ADDR=127.0.0.1:0 MOCK_ADDR=127.0.0.1:$upstream_port \
    "$binary" serve --config load-tests/sluice.yaml --ready-file "$work/$name.ready" 2>"$work/$name.log" & pids+=($!)
  pid=$!
  wait_for "$name's ready file" 30 ready_file_there "$work/$name.ready" "$pid" "$work/$name.log" "$name"
  started_pid=$pid
  started_port=$(ready_port "$work/$name.ready" data)
}

start_nginx() {
  nginx_port=$(free_port)
  nginx_h2_port=$(free_port)
  log "start nginx on :$nginx_port (HTTP/1.1) and :$nginx_h2_port (h2c, prior knowledge)"
  mkdir -p "$work/nginx"
  local conns=$((nofile - 64))
  [ "$conns" -gt 65000 ] && conns=65000
  cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
worker_rlimit_nofile $nofile;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections $conns; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream up {
    server 127.0.0.1:$upstream_port;
    keepalive 256;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:$nginx_port;
    listen 127.0.0.1:$nginx_h2_port http2;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 1024;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
NGINX
  nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' \
    2>"$work/nginx/stderr.log" & pids+=($!)
  nginx_pid=$!
  wait_for "nginx on :$nginx_port" 10 port_open "$nginx_port"
  wait_for "nginx on :$nginx_h2_port" 10 port_open "$nginx_h2_port"
  wait_for "nginx's 2 workers" 10 children_at_least "$nginx_pid" 2
}

start_floor() {
  floor_port=$(free_port)
  log "start the floor (a bare hyper reverse proxy) on :$floor_port"
  "$floor_bin" "127.0.0.1:$floor_port" "127.0.0.1:$upstream_port" 2>"$work/floor.log" & pids+=($!)
  floor_pid=$!
  wait_for "the floor on :$floor_port" 10 port_open "$floor_port"
}

results=$work/results.jsonl
: > "$results"
# Append one JSON line to results.jsonl: a tool's output (oha's JSON or sluice-lean's)
# normalised to requests / errors / rps / percentiles in µs, plus key=value fields.
record() { # tool output-file key=value...
  python3 - "$results" "$@" <<'PY'
import json, sys
results, tool, path, *kv = sys.argv[1:]
raw = open(path).read()
try:
    o = json.loads(raw)
except ValueError:
    o = None
row = {}
if tool == "none":
    pass
elif o is None:
    row = dict(requests=0, errors=1, first_error=f"{tool} printed no JSON: {raw[-300:]!r}")
elif tool == "oha":
    codes = {int(k): v for k, v in (o.get("statusCodeDistribution") or {}).items()}
    failed = sum(v for k, v in codes.items() if not 200 <= k < 300)
    errs = o.get("errorDistribution") or {}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    pct = o.get("latencyPercentiles") or {}
    secs = o["summary"].get("total") or 0
    first = next(iter(errs), None) or (f"status {sorted(k for k in codes if not 200 <= k < 300)}" if failed else None)
    row = dict(requests=ok, errors=failed + sum(errs.values()), first_error=first,
               seconds=secs, rps=ok / secs if secs else 0,
               p50_us=(pct.get("p50") or 0) * 1e6, p99_us=(pct.get("p99") or 0) * 1e6)
else:
    row = {k: o.get(k) for k in ("requests", "errors", "first_error", "seconds", "rps", "p50_us", "p90_us",
                                 "p99_us", "max_us", "ttft_p50_us", "ttft_p99_us")}
row["tool"] = tool
for item in kv:
    k, v = item.split("=", 1)
    try:
        row[k] = int(v)
    except ValueError:
        try:
            row[k] = float(v)
        except ValueError:
            row[k] = v
with open(results, "a") as f:
    f.write(json.dumps(row) + "\n")
if tool == "none":
    print(f"  {row}", file=sys.stderr)
    sys.exit(0)
extra = f", ttft p50 {row['ttft_p50_us']:.0f} us" if row.get("ttft_p50_us") else ""
print(f"  {row.get('workload')} {row.get('target')} round {row.get('round')}: {row['requests']} ok, "
      f"{row['errors']} errors, {row.get('rps') or 0:.0f}/s, p50 {row.get('p50_us') or 0:.1f} us, "
      f"p99 {row.get('p99_us') or 0:.1f} us{extra}", file=sys.stderr)
PY
}

# Every server process: (a) and (c1) pin them all to CPU 0, the rest run unpinned.
all_server_pids() { local p; for p in "${server_pids[@]}"; do group "$p"; done; }
pin() { # cpu list
  local p
  for p in $(all_server_pids); do taskset -apc "$1" "$p" >/dev/null || die "taskset -apc $1 $p failed"; done
}
all_cpus="0-$(($(nproc) - 1))"

# --- the smoke (CI) ---------------------------------------------------------------------------
if $smoke; then
  start_upstream
  start_sluice sluice "$sluice"
  sluice_port=$started_port
  limit=$((SECS * 3 + 60))
  for t in "sluice-flag support-bot" "sluice-alias plain"; do
    read -r name model <<<"$t"
    for w in "chat 1 a" "chat 64 b" "stream 1 c1"; do
      read -r mode c workload <<<"$w"
      log "smoke $name: $mode, concurrency $c, ${SECS}s"
      timeout -k 5 "$limit" "$lean" --mode "$mode" --addr "127.0.0.1:$sluice_port" --model "$model" \
        --concurrency "$c" --duration "$SECS" --warmup 0.5 --chunks 5 --chunk-delay-ms 1 \
        --tag "smoke-$workload-$name" > "$work/out.json" || true
      record lean "$work/out.json" workload="$workload" target="$name" round=1
    done
  done
  python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bad = [r for r in rows if r["errors"] or not r["requests"]]
for r in bad:
    print(f"smoke FAILED: {r['workload']} {r['target']}: {r['requests']} requests, {r['errors']} errors;"
          f" first error: {r.get('first_error')}")
if bad:
    sys.exit(1)
print(f"smoke passed: {len(rows)} workloads, {sum(r['requests'] for r in rows)} requests, no errors")
PY
  exit 0
fi

# --- the full run -----------------------------------------------------------------------------
start_upstream
start_nginx
start_sluice sluice "$sluice"
sluice_pid=$started_pid sluice_port=$started_port
server_pids=("$upstream_pid" "$nginx_pid" "$sluice_pid")
# name port model pid (the pid whose group is the target's processes)
targets=("direct $upstream_port mock-1 $upstream_pid" "nginx $nginx_port mock-1 $nginx_pid")
if [ "$FLOOR" = 1 ]; then
  start_floor
  server_pids+=("$floor_pid")
  targets+=("floor $floor_port mock-1 $floor_pid")
fi
targets+=("sluice-flag $sluice_port support-bot $sluice_pid" "sluice-alias $sluice_port plain $sluice_pid")
if [ -n "$BASELINE_BIN" ]; then
  start_sluice before "$BASELINE_BIN"
  before_pid=$started_pid before_port=$started_port
  server_pids+=("$before_pid")
  targets+=("before-flag $before_port support-bot $before_pid" "before-alias $before_port plain $before_pid")
fi

# (e) idle RSS, before any traffic.
record_idle() { # target pid
  echo "{}" > "$work/empty.json"
  record none "$work/empty.json" workload=idle target="$1" rss_kb="$(rss_kb "$2")" processes="$(group "$2" | wc -l)"
}
log "(e) idle RSS"
record_idle direct "$upstream_pid"
record_idle nginx "$nginx_pid"
record_idle sluice "$sluice_pid"
if [ -n "$BASELINE_BIN" ]; then record_idle before "$before_pid"; fi
if [ "$FLOOR" = 1 ]; then record_idle floor "$floor_pid"; fi

# oha's request bodies, one per line (-Z): 1,024 distinct users per model, so the flag's
# targeting and rollout really evaluate.
for model in mock-1 support-bot plain; do
  for i in $(seq 1024); do
    printf '{"model":"%s","user":"oha-user-%d","messages":[{"role":"user","content":"Where is my order? It was due yesterday and the tracking page says nothing."}]}\n' "$model" "$i"
  done > "$work/bodies-$model.txt"
done
clk_tck=$(getconf CLK_TCK)
oha_limit=$((SECS * 3 + 60))
oha_run() { # workload target port model pid round concurrency prefix...
  local workload=$1 name=$2 port=$3 model=$4 pid=$5 round=$6 c=$7; shift 7
  local threads=2 before after
  [ "$c" = 1 ] && threads=1
  local cmd=(oha --no-tui --output-format json --worker-threads "$threads" -c "$c" -m POST
    -T application/json -H "authorization: Bearer sk-sluice-demo" -Z "$work/bodies-$model.txt")
  local url=http://127.0.0.1:$port/v1/chat/completions
  # A short warm-up (connections, pools, caches), not recorded.
  timeout -k 5 "$oha_limit" "$@" "${cmd[@]}" -n $((c * 100 > 2000 ? c * 100 : 2000)) "$url" > /dev/null || true
  before=$(cpu_ticks "$pid")
  timeout -k 5 "$oha_limit" "$@" "${cmd[@]}" -z "${SECS}s" -w "$url" > "$work/out.json" || true
  after=$(cpu_ticks "$pid")
  record oha "$work/out.json" workload="$workload" target="$name" round="$round" concurrency="$c" \
    cpu_ticks=$((after - before)) clk_tck="$clk_tck"
}
lean_run() { # workload target port model round concurrency prefix...
  local workload=$1 name=$2 port=$3 model=$4 round=$5 c=$6; shift 6
  timeout -k 5 "$oha_limit" "$@" "$lean" --mode stream --addr "127.0.0.1:$port" --model "$model" \
    --concurrency "$c" --duration "$SECS" --warmup 0.5 --chunks "$STREAM_CHUNKS" \
    --chunk-delay-ms "$STREAM_DELAY_MS" --tag "$workload-$name-$round" > "$work/out.json" || true
  record lean "$work/out.json" workload="$workload" target="$name" round="$round" concurrency="$c"
}

for round in $(seq "$ROUNDS"); do
  log "(a) non-streaming, concurrency 1, all pinned to CPU 0 (round $round of $ROUNDS)"
  pin 0
  for t in "${targets[@]}"; do
    read -r name port model pid <<<"$t"
    oha_run a "$name" "$port" "$model" "$pid" "$round" 1 taskset -c 0
  done
  pin "$all_cpus"
  log "(b) non-streaming, concurrency 64, unpinned (round $round of $ROUNDS)"
  for t in "${targets[@]}"; do
    read -r name port model pid <<<"$t"
    oha_run b "$name" "$port" "$model" "$pid" "$round" 64
  done
done

for round in $(seq "$STREAM_ROUNDS"); do
  log "(c) streaming TTFT, concurrency 1, all pinned to CPU 0 (round $round of $STREAM_ROUNDS)"
  pin 0
  for t in "${targets[@]}"; do
    read -r name port model pid <<<"$t"
    lean_run c1 "$name" "$port" "$model" "$round" 1 taskset -c 0
  done
  pin "$all_cpus"
  log "(c) streaming TTFT, concurrency 16, unpinned (round $round of $STREAM_ROUNDS)"
  for t in "${targets[@]}"; do
    read -r name port model pid <<<"$t"
    lean_run c16 "$name" "$port" "$model" "$round" 16
  done
done

# (d) Held streams. The client multiplexes them over 100 HTTP/2 connections (one HTTP/1.1
# connection per stream would need a descriptor per stream on the client side as well);
# the proxy holds one HTTP/1.1 upstream connection per stream.
chunk_ms=$((HOLD_SECS * 1000 / 30))
hold() { # target port model pid
  local name=$1 port=$2 model=$3 pid=$4 idle sampler
  log "(d) $name: $HOLD_STREAMS streams held for ${HOLD_SECS}s over $HOLD_CONNECTIONS HTTP/2 connections"
  idle=$(rss_kb "$pid")
  echo "$idle" > "$work/peak"
  echo 0 > "$work/peak-fds"
  # Every 0.25 s: RSS, and open descriptors (evidence the streams were held at once).
  ( peak=$idle peak_fds=0
    while kill -0 "$pid" 2>/dev/null; do
      r=$(rss_kb "$pid")
      if [ "$r" -gt "$peak" ]; then peak=$r; echo "$peak" > "$work/peak.tmp"; mv "$work/peak.tmp" "$work/peak"; fi
      f=$(fd_count "$pid")
      if [ "$f" -gt "$peak_fds" ]; then peak_fds=$f; echo "$f" > "$work/fds.tmp"; mv "$work/fds.tmp" "$work/peak-fds"; fi
      sleep 0.25
    done ) & sampler=$!
  pids+=("$sampler")
  timeout -k 5 $((HOLD_SECS * 3 + 120)) "$loadgen" --mode hold --addr "127.0.0.1:$port" --model "$model" \
    --concurrency "$HOLD_STREAMS" --http2-connections "$HOLD_CONNECTIONS" --chunks 30 \
    --chunk-delay-ms "$chunk_ms" --tag "hold-$name" > "$work/out.json" 2>"$work/hold-$name.log" || true
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  if ! grep -q . "$work/out.json"; then
    printf '{"requests": 0, "errors": 1, "first_error": %s}\n' \
      "$(tail -c 300 "$work/hold-$name.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" > "$work/out.json"
  fi
  record lean "$work/out.json" workload=hold target="$name" round=1 streams="$HOLD_STREAMS" \
    hold_secs="$HOLD_SECS" idle_kb="$idle" peak_kb="$(cat "$work/peak")" peak_fds="$(cat "$work/peak-fds")" processes="$(group "$pid" | wc -l)"
}
hold nginx "$nginx_h2_port" mock-1 "$nginx_pid"
hold sluice "$sluice_port" support-bot "$sluice_pid"

log "write load-tests/RESULTS.md"
meta=$work/meta.json
python3 - "$meta" <<PY
import json, sys
json.dump(dict(secs=$SECS, rounds=$ROUNDS, stream_rounds=$STREAM_ROUNDS, hold_streams=$HOLD_STREAMS,
               hold_secs=$HOLD_SECS, hold_connections=$HOLD_CONNECTIONS, stream_chunks=$STREAM_CHUNKS,
               stream_delay_ms=$STREAM_DELAY_MS, baseline="${BASELINE_BIN}", floor=${FLOOR},
               nofile=$nofile), open(sys.argv[1], "w"))
PY
python3 load-tests/report.py "$results" "$meta" > "$work/RESULTS.md"
cp "$work/RESULTS.md" load-tests/RESULTS.md
cat load-tests/RESULTS.md
