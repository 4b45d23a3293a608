#!/usr/bin/env bash
# sluice's load tests: the same workloads against `direct` (the mock provider itself),
# `nginx` (a plain keep-alive reverse proxy to the same mock) and `sluice`, in one run,
# on loopback only. Writes load-tests/RESULTS.md. Stops everything it started, by pid.
#
#   load-tests/run.sh            # the full run (about 5 minutes after the builds)
#   load-tests/run.sh --smoke    # 10 s of (a) and (b) against sluice; fails only on errors
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true
SECS=${SECS:-8}           # seconds per measured workload
ROUNDS=${ROUNDS:-3}       # (a) and (b) run this many interleaved rounds; the report takes medians
HOLD_STREAMS=${HOLD_STREAMS:-10000}
HOLD_SECS=${HOLD_SECS:-30}

log() { printf '\n== %s\n' "$*" >&2; }

# The smoke checks for errors only, so it uses the debug build `cargo test` already made.
if $smoke; then profile=debug; flag=""; else profile=release; flag="--release"; fi
log "build ($profile)"
cargo build $flag --quiet --bin sluice
cargo build $flag --quiet -p sluice-loadgen
bin=$root/target/$profile/sluice
loadgen=$root/target/$profile/sluice-loadgen
floor=$root/target/$profile/sluice-floor

if ! $smoke && ! command -v nginx >/dev/null; then
  log "install nginx (Debian package)"
  (apt-get update -qq && apt-get install -y -qq nginx-light || apt-get install -y -qq nginx) >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The port a server bound (it was given port 0), read from its log line `key=ADDR`.
addr_in_log() {
  local a
  for _ in $(seq 400); do
    a=$(sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null | grep -o "$2=127\.0\.0\.1:[0-9]*" | head -1 | cut -d= -f2)
    [ -n "$a" ] && { echo "${a##*:}"; return 0; }
    sleep 0.05
  done
  echo "$1 never named its $2" >&2; exit 1
}
# The port sluice bound for `key` (it was given port 0), from the file `serve --ready-file`
# writes once both listeners are bound: {"data": ADDR, "admin": ADDR, "pid": N}.
port_in_ready_file() {
  for _ in $(seq 400); do
    [ -f "$1" ] && { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]].rsplit(":", 1)[1])' "$1" "$2"; return 0; }
    kill -0 "$3" 2>/dev/null || { echo "sluice exited before it was ready" >&2; exit 1; }
    sleep 0.05
  done
  echo "$1 was never written" >&2; exit 1
}
# nginx and the floor cannot report a port they chose; only the full run (never CI) uses them.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "port $1 never opened" >&2; exit 1
}
# CPU ticks (user + system) of a process and its children.
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

log "start the mock provider"
"$bin" mock-provider --listen 127.0.0.1:0 2>"$work/mock.log" & pids+=($!); mock_pid=$!
mock_port=$(addr_in_log "$work/mock.log" address)

log "start sluice (upstream :$mock_port)"
# The config logs at warn; the ready file names the ports it bound.
RUST_LOG=warn DATA_ADDR=127.0.0.1:0 ADMIN_ADDR=127.0.0.1:0 MOCK_ADDR=127.0.0.1:$mock_port \
  "$bin" serve --config load-tests/sluice.yaml --ready-file "$work/sluice.ready" 2>"$work/sluice.log" & pids+=($!)
sluice_pid=$!
data_port=$(port_in_ready_file "$work/sluice.ready" data "$sluice_pid")
sleep 1
idle_rss_kb=$(rss_kb "$sluice_pid")

targets=("sluice 127.0.0.1:$data_port support-bot $sluice_pid")
if ! $smoke; then
  nginx_port=$(free_port); floor_port=$(free_port)
  log "start nginx on :$nginx_port"
  cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  upstream mock { server 127.0.0.1:$mock_port; keepalive 512; }
  server {
    listen 127.0.0.1:$nginx_port;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
  nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' 2>"$work/nginx.log" & pids+=($!); nginx_pid=$!
  wait_port "$nginx_port"
  log "start the floor (a bare hyper reverse proxy) on :$floor_port"
  "$floor" "127.0.0.1:$floor_port" "127.0.0.1:$mock_port" 2>"$work/floor.log" & pids+=($!); floor_pid=$!
  wait_port "$floor_port"
  targets=("direct 127.0.0.1:$mock_port mock-1 $mock_pid" "nginx 127.0.0.1:$nginx_port mock-1 $nginx_pid"
    "floor 127.0.0.1:$floor_port mock-1 $floor_pid" "${targets[@]}")
fi

results=$work/results.jsonl
: > "$results"
run() { # workload target addr model pid round loadgen-args...
  local workload=$1 name=$2 addr=$3 model=$4 pid=$5 round=$6; shift 6
  local before after out
  before=$(cpu_ticks "$pid")
  out=$("$loadgen" --addr "$addr" --model "$model" --tag "$workload-$name" "$@")
  after=$(cpu_ticks "$pid")
  echo "$out" | python3 -c "
import json, sys
r = json.load(sys.stdin)
r.update(workload='$workload', target='$name', round=$round, cpu_ticks=$after - $before, clk_tck=$(getconf CLK_TCK))
print(json.dumps(r))" >> "$results"
  echo "$workload $name: $out" >&2
}

$smoke && ROUNDS=1
for round in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    read -r name addr model pid <<<"$t"
    log "(a) $name: non-streaming, concurrency 1 (round $round of $ROUNDS)"
    run a "$name" "$addr" "$model" "$pid" "$round" --mode chat --concurrency 1 --duration "$SECS"
    log "(b) $name: non-streaming, concurrency 64 (round $round of $ROUNDS)"
    run b "$name" "$addr" "$model" "$pid" "$round" --mode chat --concurrency 64 --duration "$SECS"
  done
done

if $smoke; then
  python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bad = [r for r in rows if r["errors"] or not r["requests"]]
for r in rows:
    print(f"smoke {r['workload']} {r['target']}: {r['requests']} requests, {r['errors']} errors, p50 {r['p50_us']} us")
if bad:
    print("smoke FAILED:", bad)
    sys.exit(1)
PY
  exit 0
fi

for t in "${targets[@]}"; do
  read -r name addr model pid <<<"$t"
  for c in 16 1; do
    log "(c) $name: streaming (20 chunks, 5 ms apart), concurrency $c"
    run "c$c" "$name" "$addr" "$model" "$pid" 1 --mode stream --concurrency "$c" --duration "$SECS" --chunks 20 --chunk-delay-ms 5
  done
done

log "(d) sluice: $HOLD_STREAMS concurrent streams held for $HOLD_SECS s"
chunk_ms=$(( HOLD_SECS * 1000 / 30 ))
peak=$work/peak
echo 0 > "$peak"
( while kill -0 "$sluice_pid" 2>/dev/null; do
    r=$(rss_kb "$sluice_pid"); [ "$r" -gt "$(cat "$peak")" ] && echo "$r" > "$peak"; sleep 0.25
  done ) & sampler=$!; pids+=($sampler)
# One HTTP/1.1 connection per stream would need 2 x 10,000 descriptors in sluice (client
# side and upstream side), above this machine's hard limit of 20,000 per process: the
# client multiplexes its streams over 100 HTTP/2 connections; sluice still holds 10,000
# upstream connections, one per stream.
run d sluice "127.0.0.1:$data_port" support-bot "$sluice_pid" 1 --mode hold --concurrency "$HOLD_STREAMS" \
  --http2-connections 100 --chunks 30 --chunk-delay-ms "$chunk_ms"
kill "$sampler" 2>/dev/null || true
peak_rss_kb=$(cat "$peak")
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$sluice_pid/status")

log "write load-tests/RESULTS.md"
python3 load-tests/report.py "$results" "$idle_rss_kb" "$peak_rss_kb" "$hwm_kb" "$HOLD_STREAMS" "$HOLD_SECS" > load-tests/RESULTS.md
cat load-tests/RESULTS.md
