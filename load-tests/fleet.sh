#!/usr/bin/env bash
# Fleet propagation: three release-built sluice instances on one Redis
# (`state.store: redis`, the demo config), CHANGES If-Match writes spread over them one
# after another, and for each the time from the write's 200 to every instance serving the
# new revision (load-tests/loadgen/src/bin/sluice-fleet-bench.rs). Optionally (DATAPLANE=1)
# the data plane's cost in fleet mode against the file store, with the load generator.
# Writes the section "Fleet propagation" of load-tests/RESULTS.md (replacing an earlier
# one). Loopback only; stops everything it started, by pid.
#
#   load-tests/fleet.sh                       # 1,000 changes, appendfsync everysec
#   CHANGES=200 FSYNC=always load-tests/fleet.sh
#   DATAPLANE=1 SECS=5 load-tests/fleet.sh    # and the data-plane comparison
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
CHANGES=${CHANGES:-1000}
FSYNC=${FSYNC:-everysec}     # Redis's appendfsync (the design's production setting)
POLL_US=${POLL_US:-100}      # microseconds between two polls of one instance
DATAPLANE=${DATAPLANE:-0}
SECS=${SECS:-5}               # seconds per data-plane workload
ROUNDS=${ROUNDS:-3}           # interleaved data-plane rounds; the report takes medians
NOTE=${NOTE:-}               # a sentence for the report (e.g. what the build carries beyond HEAD)
# SLUICE_REV names the build in the report (default: git rev-parse --short HEAD).

log() { printf '\n== %s\n' "$*" >&2; }
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }

log "build (release)"
cargo build --release --quiet --bin sluice
cargo build --release --quiet -p sluice-loadgen
bin=$root/target/release/sluice
bench=$root/target/release/sluice-fleet-bench
loadgen=$root/target/release/sluice-loadgen

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # A graceful shutdown gets 5 s; then SIGKILL (a wedged process never finishes one).
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Redis on a random port below the kernel's ephemeral range, another one when it is taken
# (its log says so). It answers once `INFO` names its pid with the data loaded.
read -r eph_low _ < /proc/sys/net/ipv4/ip_local_port_range
span=$(( eph_low > 20100 ? eph_low - 20000 : 10000 ))
mkdir -p "$work/redis"
redis_port=
for _ in $(seq 40); do
  port=$(( 20000 + RANDOM % span ))
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync "$FSYNC" \
    --dir "$work/redis" --daemonize no --logfile "" >"$work/redis.log" 2>&1 &
  rpid=$!
  for _ in $(seq 500); do
    if ! kill -0 "$rpid" 2>/dev/null; then break; fi
    info=$(redis-cli -p "$port" INFO 2>/dev/null || true)
    if grep -q "^process_id:$rpid" <<<"$info" && grep -q '^loading:0' <<<"$info"; then redis_port=$port; break; fi
    sleep 0.01
  done
  if [ -n "$redis_port" ]; then pids+=("$rpid"); break; fi
  kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
  grep -q "Address already in use" "$work/redis.log" || { cat "$work/redis.log" >&2; exit 1; }
done
[ -n "$redis_port" ] || { echo "no free port for redis-server" >&2; exit 1; }
log "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on :$redis_port (appendfsync $FSYNC)"

# The demo config as a fleet member: listeners on port 0, warn-level logs, no access log,
# the mocks without their demo latency, the state on Redis (local copy in its own dir).
fleet_config() { # out state-dir store(redis|file)
  python3 - "$1" "$2" "$3" "$redis_port" <<'PY'
import sys
out, state_dir, store, port = sys.argv[1:]
t = open("config/sluice.yaml").read()
def must(a, b):
    global t
    assert a in t, a
    t = t.replace(a, b)
must("127.0.0.1:8080", "127.0.0.1:0")
must("127.0.0.1:8081", "127.0.0.1:0")
must("latency: 20ms", "latency: 0ms")
must("latency: 40ms", "latency: 0ms")
must("  level: info ", "  level: warn ")
must("  access_log: true ", "  access_log: false ")
line = next(l for l in t.splitlines() if l.startswith("  dir: ${SLUICE_STATE_DIR"))
state = f"  dir: {state_dir}"
if store == "redis":
    state += f"\n  store: redis\n  redis:\n    url: redis://127.0.0.1:{port}\n    prefix: sluice"
must(line, state)
open(out, "w").write(t)
PY
}
# The address sluice bound for `key`, from the file `serve --ready-file` writes.
addr_in_ready_file() {
  for _ in $(seq 400); do
    [ -f "$1" ] && { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; return 0; }
    kill -0 "$3" 2>/dev/null || { echo "sluice exited before it was ready:" >&2; cat "${1%.ready}.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "$1 was never written" >&2; exit 1
}
start_sluice() { # name store -> sets last_pid, last_admin, last_data
  fleet_config "$work/$1.yaml" "$work/$1" "$2"
  env -u SLUICE_DATA_ADDR -u SLUICE_ADMIN_ADDR -u SLUICE_ADMIN_TOKEN -u SLUICE_DEMO_KEY -u RUST_LOG \
    "$bin" serve --config "$work/$1.yaml" --ready-file "$work/$1.ready" 2>"$work/$1.log" &
  last_pid=$!; pids+=("$last_pid")
  last_admin=$(addr_in_ready_file "$work/$1.ready" admin "$last_pid")
  last_data=$(addr_in_ready_file "$work/$1.ready" data "$last_pid")
}

admins=(); datas=(); spids=()
for name in a b c; do
  start_sluice "$name" redis
  admins+=("$last_admin"); datas+=("$last_data"); spids+=("$last_pid")
done
log "sluice a b c: admin ${admins[*]}"
# A first start seeds the empty Redis once it stayed empty 2.5 s: wait for all three.
wait_ready() {
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "sluice on $1 never became ready" >&2; exit 1
}
for a in "${admins[@]}"; do wait_ready "$a"; done

log "propagation: $CHANGES changes"
if ! result=$("$bench" --admin "$(IFS=,; echo "${admins[*]}")" --changes "$CHANGES" --poll-us "$POLL_US"); then
  for name in a b c; do echo "--- $name.log (last lines)" >&2; tail -5 "$work/$name.log" >&2; done
  exit 1
fi
echo "$result" >&2

dataplane=""
if [ "$DATAPLANE" = 1 ]; then
  start_sluice file file; file_data=$last_data; file_pid=$last_pid
  rows=$work/dataplane.jsonl; : > "$rows"
  for round in $(seq "$ROUNDS"); do
    for c in 1 64; do
      for t in "fleet ${datas[0]} ${spids[0]}" "file $file_data $file_pid"; do
        read -r name addr pid <<<"$t"
        log "data plane, $name store, concurrency $c (round $round of $ROUNDS)"
        out=$("$loadgen" --addr "$addr" --model support-bot --tag "fleet-$name-$c-$round" --mode chat --concurrency "$c" --duration "$SECS")
        echo "$out" | python3 -c "import json,sys; r=json.load(sys.stdin); r.update(store='$name', concurrency=$c); print(json.dumps(r))" >> "$rows"
        echo "$name c$c: $out" >&2
      done
    done
  done
  dataplane=$rows
fi

log "write load-tests/RESULTS.md (section: Fleet propagation)"
python3 - "$result" "$FSYNC" "$POLL_US" "$CHANGES" "$dataplane" "$SECS" "$NOTE" "$ROUNDS" <<'PY'
import json, os, re, statistics, subprocess, sys, datetime
r = json.loads(sys.argv[1]); fsync, poll_us, changes, dataplane, secs, note, rounds = sys.argv[2:]
def ms(us): return f"{us / 1000:.2f} ms"
def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return "?"
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
rev = os.environ.get("SLUICE_REV") or sh("git rev-parse --short HEAD 2>/dev/null") or "(not a git checkout)"
redis_v = sh("redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2")
cmd = "load-tests/fleet.sh" if changes == "1000" and fsync == "everysec" else f"CHANGES={changes} FSYNC={fsync} load-tests/fleet.sh"
if dataplane: cmd = f"DATAPLANE=1 SECS={secs} ROUNDS={rounds} " + cmd
f, o, w = r["fleet"], r["others"], r["write"]
ok = "✓" if f["p99_us"] <= 10_000 else "✗"
lines = [
    "## Fleet propagation",
    "",
    f"Written by `{cmd}` on {when} (sluice {rev}, Redis {redis_v}, `appendonly yes`, `appendfsync {fsync}`)." + (f" {note}" if note else ""),
    "",
    f"Three release-built `sluice serve` instances (the demo config, `state.store: redis`) and one `redis-server` on this machine's two cores; "
    f"{r['changes']} `If-Match` writes (the kill switch of `support-bot`, then its restore, …) sent one after another to the instances in turn "
    f"by `load-tests/loadgen/src/bin/sluice-fleet-bench.rs`. For each change, one thread per instance polls `GET /admin/v1/status` on a kept-alive "
    f"connection every {poll_us} µs from the write's 200 until the instance serves the new revision: a sample is the time from the 200 to that poll "
    f"(an upper bound, by at most one poll). The instance that took the write serves the change before it answers, so its samples are one poll; "
    f"\"other instances\" leaves them out. {r['errors']} writes answered anything but 200; the run took {r['seconds']:.1f} s. "
    f"(`load-tests/run.sh` writes this file anew: run `load-tests/fleet.sh` after it.)",
    "",
    "| samples | count | p50 | p90 | p99 | max | budget |",
    "|---|---|---|---|---|---|---|",
    f"| the fleet (every instance, every change) | {f['samples']} | {ms(f['p50_us'])} | {ms(f['p90_us'])} | {ms(f['p99_us'])} | {ms(f['max_us'])} | p99 ≤ 10 ms {ok} |",
    f"| other instances only | {o['samples']} | {ms(o['p50_us'])} | {ms(o['p90_us'])} | {ms(o['p99_us'])} | {ms(o['max_us'])} |  |",
    f"| the write itself (request to 200) | {w['samples']} | {ms(w['p50_us'])} | {ms(w['p90_us'])} | {ms(w['p99_us'])} | {ms(w['max_us'])} |  |",
]
if dataplane:
    rows = [json.loads(l) for l in open(dataplane)]
    lines += ["", f"Data plane, fleet store against file store: non-streaming chat completions of `support-bot` (the demo's in-process mock, no latency) "
              f"on instance a of the fleet above and on a fourth instance on a file store, same build and config; {rounds} interleaved rounds of {secs} s, "
              "medians of the rounds (requests and errors are totals). Compare the rows with each other, not with the tables above.", "",
              "| store | concurrency | requests | errors | p50 | p99 |", "|---|---|---|---|---|---|"]
    for c in (1, 64):
        for store in ("fleet", "file"):
            xs = [x for x in rows if x["store"] == store and x["concurrency"] == c]
            if not xs: continue
            med = lambda k: int(statistics.median(x[k] for x in xs))
            lines.append(f"| {store} | {c} | {sum(x['requests'] for x in xs)} | {sum(x['errors'] for x in xs)} | {med('p50_us')} µs | {med('p99_us')} µs |")
section = "\n".join(lines) + "\n"
path = "load-tests/RESULTS.md"
text = open(path).read() if os.path.exists(path) else "# Load test results\n"
text = re.sub(r"\n## Fleet propagation\n.*?(?=\n## |\Z)", "\n", text, flags=re.S).rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
print(section)
PY
