#!/usr/bin/env bash
# Throughput of `sluice mock-provider` alone and of sluice in front of it, with wrk,
# on loopback. Usage: load-tests/mock-throughput.sh [seconds] [connections]
# Installs wrk (Debian package) if missing. Stops everything it started, by process id.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-64}

if ! command -v wrk >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
cargo build --release --quiet
bin=target/release/sluice
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

mock_port=$(free_port); data_port=$(free_port); admin_port=$(free_port)
"$bin" mock-provider --listen "127.0.0.1:$mock_port" 2>"$work/mock.log" & pids+=($!); mock_pid=$!
sed -e "s#https://api.openai.com/v1#http://127.0.0.1:$mock_port/v1#" \
    -e "s/127.0.0.1:8080/127.0.0.1:$data_port/; s/127.0.0.1:8081/127.0.0.1:$admin_port/" \
    -e "s/access_log: true/access_log: false/" config/sluice.yaml > "$work/sluice.yaml"
"$bin" serve --config "$work/sluice.yaml" 2>"$work/sluice.log" & pids+=($!); sluice_pid=$!
wait_port "$mock_port"; wait_port "$data_port"

run() { # name url model pid
  cat > "$work/req.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"$3","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-sluice-demo"
LUA
  local before after out rps
  before=$(cpu_ticks "$4")
  out=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$work/req.lua" "$2")
  after=$(cpu_ticks "$4")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  hz=$(getconf CLK_TCK)
  cpu_us=$(python3 -c "print(round(($after-$before)/$hz*1e6/$total, 1))")
  printf '%-8s %10s req/s   %6s us CPU per request (%s connections)\n' "$1" "$rps" "$cpu_us" "$conns"
}
run direct "http://127.0.0.1:$mock_port/v1/chat/completions" mock-1 "$mock_pid"
run sluice "http://127.0.0.1:$data_port/v1/chat/completions" openai/mock-1 "$sluice_pid"
