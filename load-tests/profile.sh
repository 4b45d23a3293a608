#!/usr/bin/env bash
# Where sluice's CPU goes, and what it asks of the kernel per request, next to nginx.
# Writes load-tests/PROFILE.md. Loopback only; stops everything it started, by pid.
#
#   load-tests/profile.sh      # release build, then about a minute
#
# (i)  perf: `perf record -e cpu-clock -F 4999 -g -p SLUICE_PID` for PERF_SECS (10) s while
#      oha drives concurrency 64 with the flag model (`support-bot`); the shared objects, the
#      top symbols (demangled) and a breakdown by category (kernel, malloc/free, hyper, tokio,
#      sluice's own modules, ...).
# (ii) strace: `strace -c -f` attached to nginx's workers, then to sluice (flag model, then
#      the alias), each over exactly STRACE_REQUESTS (10,000) requests from oha at
#      concurrency 64: system calls per request, by name, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PERF_SECS=${PERF_SECS:-10}
STRACE_REQUESTS=${STRACE_REQUESTS:-10000}
CONCURRENCY=64

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'profile.sh: %s\n' "$*" >&2; exit 1; }

target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac
log "build (release)"
cargo build --release --quiet --bin sluice
cargo build --release --quiet -p sluice-loadgen
sluice=$target_dir/release/sluice
upstream_bin=$target_dir/release/sluice-upstream
if ! command -v oha >/dev/null && [ -x "$HOME/.cargo/bin/oha" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
for tool in perf strace oha nginx python3; do
  command -v "$tool" >/dev/null || die "$tool is needed (oha: cargo install oha --locked)"
done
demangle="cat"
command -v rustfilt >/dev/null && demangle=rustfilt

# shellcheck source=load-tests/lib.sh
. load-tests/lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

wait_for() { # what secs cmd...
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 20; i++)); do
    "$@" && return 0
    sleep 0.05
  done
  die "gave up after ${secs}s waiting for $what"
}
alive() { kill -0 "$1" 2>/dev/null || die "$2 exited early"; }
has_addr() { alive "$2" "$3"; grep -q 'address=127\.0\.0\.1:[0-9]' "$1" 2>/dev/null; }
ready() { alive "$2" sluice; [ -s "$1" ]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
children_at_least() { [ "$(pgrep -c -P "$1" || true)" -ge "$2" ]; }

log "start sluice-upstream, sluice and nginx"
"$upstream_bin" 127.0.0.1:0 --threads 2 2>"$work/upstream.log" & pids+=($!)
upstream_pid=$!
wait_for "sluice-upstream's address" 10 has_addr "$work/upstream.log" "$upstream_pid" sluice-upstream
upstream_port=$(grep -o 'address=127\.0\.0\.1:[0-9]*' "$work/upstream.log" | head -1 | sed 's/.*://')

RUST_LOG=warn DATA_ADDR=127.0.0.1:0 ADMIN_ADDR=127.0.0.1:0 MOCK_ADDR=127.0.0.1:$upstream_port \
  "$sluice" serve --config load-tests/sluice.yaml --ready-file "$work/sluice.ready" 2>"$work/sluice.log" & pids+=($!)
sluice_pid=$!
wait_for "sluice's ready file" 30 ready "$work/sluice.ready" "$sluice_pid"
sluice_port=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["data"].rsplit(":", 1)[1])' "$work/sluice.ready")

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream up { server 127.0.0.1:$upstream_port; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$nginx_port;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' \
  2>"$work/nginx/stderr.log" & pids+=($!)
nginx_pid=$!
wait_for "nginx on :$nginx_port" 10 port_open "$nginx_port"
wait_for "nginx's 2 workers" 10 children_at_least "$nginx_pid" 2

for model in mock-1 support-bot plain; do
  for i in $(seq 1024); do
    printf '{"model":"%s","user":"oha-user-%d","messages":[{"role":"user","content":"Where is my order? It was due yesterday and the tracking page says nothing."}]}\n' "$model" "$i"
  done > "$work/bodies-$model.txt"
done
oha_cmd() { # port model -> oha ... URL (append -n / -z)
  oha_args=(oha --no-tui --output-format json -c "$CONCURRENCY" -m POST -T application/json
    -H "authorization: Bearer sk-sluice-demo" -Z "$work/bodies-$2.txt")
  oha_url=http://127.0.0.1:$1/v1/chat/completions
}
oha_ok() { # oha JSON file -> "requests errors"
  python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))
codes = {int(k): v for k, v in (o.get("statusCodeDistribution") or {}).items()}
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
print(ok, sum(codes.values()) - ok + sum((o.get("errorDistribution") or {}).values()))' "$1"
}

# --- (i) perf ------------------------------------------------------------------------------
log "(i) perf record on sluice for ${PERF_SECS}s, oha at concurrency $CONCURRENCY, model support-bot"
oha_cmd "$sluice_port" support-bot
timeout -k 5 60 "${oha_args[@]}" -n 20000 "$oha_url" > /dev/null   # warm-up
timeout -k 5 $((PERF_SECS + 60)) "${oha_args[@]}" -z "$((PERF_SECS + 2))s" -w "$oha_url" > "$work/perf-oha.json" &
oha_pid=$!
pids+=("$oha_pid")
wait_for "oha's connections to sluice" 10 sh -c "[ \$(ss -Htn state established '( dport = :$sluice_port )' | wc -l) -ge $CONCURRENCY ]"
timeout -k 5 $((PERF_SECS + 30)) perf record -q -e cpu-clock -F 4999 -g -p "$sluice_pid" -o "$work/perf.data" \
  -- sleep "$PERF_SECS" 2>"$work/perf.log" || { cat "$work/perf.log" >&2; die "perf record failed"; }
wait "$oha_pid" || die "oha (perf workload) failed"
read -r perf_ok perf_err < <(oha_ok "$work/perf-oha.json")
report() { perf report -i "$work/perf.data" --stdio --no-children -g none --percent-limit 0 "$@" 2>/dev/null; }
report --sort dso > "$work/dso.txt"
report --sort dso,symbol -t $'\t' | "$demangle" > "$work/symbols.tsv"
[ -s "$work/symbols.tsv" ] || die "perf report gave no symbols"

# --- (ii) strace ---------------------------------------------------------------------------
# strace reports `Process N attached` or `Process N attached with K threads`.
attached_at_least() { # log threads
  [ "$(awk '/attached with [0-9]+ threads/ {n += $(NF - 1); next} /attached/ {n++} END {print n + 0}' "$1")" -ge "$2" ]
}
# Attach, wait until strace reports every thread attached, drive exactly N requests, detach.
strace_run() { # name port model pids...
  local name=$1 port=$2 model=$3; shift 3
  local tids=0 p args=() spid
  for p in "$@"; do
    tids=$((tids + $(find "/proc/$p/task" -mindepth 1 -maxdepth 1 | wc -l)))
    args+=(-p "$p")
  done
  log "(ii) strace -c -f on $name ($tids threads) over $STRACE_REQUESTS requests, concurrency $CONCURRENCY"
  oha_cmd "$port" "$model"
  timeout -k 5 60 "${oha_args[@]}" -n 5000 "$oha_url" > /dev/null   # warm-up, connections pooled
  strace -c -f -o "$work/strace-$name.txt" "${args[@]}" 2>"$work/strace-$name.log" & spid=$!
  pids+=("$spid")
  wait_for "strace to attach to $name's $tids threads" 20 attached_at_least "$work/strace-$name.log" "$tids"
  timeout -k 5 300 "${oha_args[@]}" -n "$STRACE_REQUESTS" "$oha_url" > "$work/strace-oha-$name.json"
  kill -INT "$spid"
  wait_for "strace on $name to write its summary" 20 sh -c "! kill -0 $spid 2>/dev/null"
  read -r ok err < <(oha_ok "$work/strace-oha-$name.json")
  if [ "$ok" != "$STRACE_REQUESTS" ] || [ "$err" != 0 ]; then
    die "$name: $ok requests ok, $err errors under strace"
  fi
}
# nginx: its workers (the master only supervises them).
mapfile -t nginx_workers < <(pgrep -P "$nginx_pid")
strace_run nginx "$nginx_port" mock-1 "${nginx_workers[@]}"
strace_run sluice-flag "$sluice_port" support-bot "$sluice_pid"
strace_run sluice-alias "$sluice_port" plain "$sluice_pid"

# --- PROFILE.md ----------------------------------------------------------------------------
log "write load-tests/PROFILE.md"
python3 - "$work" "$PERF_SECS" "$STRACE_REQUESTS" "$CONCURRENCY" "$perf_ok" "$perf_err" > "$work/PROFILE.md" <<'PY'
import datetime, os, platform, re, subprocess, sys
work, perf_secs, n_req, conc, perf_ok, perf_err = sys.argv[1:]
n_req, perf_ok = int(n_req), int(perf_ok)


def cmd(*a):
    try:
        p = subprocess.run(a, capture_output=True, text=True, timeout=10)
        return (p.stdout.strip() or p.stderr.strip()).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


samples = next((l.split(":", 1)[1].split()[0] for l in open(os.path.join(work, "dso.txt")) if l.startswith("# Samples:")), "?")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
syms = []  # (percent, dso, symbol)
for line in open(os.path.join(work, "symbols.tsv")):
    if line.startswith("#") or not line.strip():
        continue
    parts = line.rstrip("\n").split("\t")
    if len(parts) < 3:
        continue
    try:
        pct = float(parts[0].strip().rstrip("%"))
    except ValueError:
        continue
    sym = parts[2].strip()
    kernel = sym.startswith("[k]")
    sym = re.sub(r"^\[[k.]\]\s*", "", sym)
    syms.append((pct, parts[1].strip(), sym, kernel))

MALLOC = re.compile(r"^(__libc_)?(malloc|free|calloc|realloc|cfree|posix_memalign|aligned_alloc|memalign)\b|"
                    r"^_int_(malloc|free|realloc)|^(tcache|arena|sysmalloc|malloc_consolidate|unlink_chunk|_?mi_)|"
                    r"^__rust_(alloc|dealloc|realloc)|^alloc::alloc::")


PRIMITIVE = {"u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
             "f32", "f64", "bool", "char", "str"}
PATH = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)")


def path_of(sym):
    """The first Rust path in a symbol: `<a::B as c::D>::f` -> a::B; `core::ptr::drop_in_place<x::Y>` -> core::...;
    for a primitive or a bare generic parameter (`<u64 as core::fmt::Display>`, `<D as ...>`), the trait's path."""
    s = sym.lstrip("<&*[").replace("mut ", "").replace("dyn ", "")
    m = PATH.match(s)
    if not m:
        return s
    p = m.group(1)
    if p in PRIMITIVE or re.fullmatch(r"[A-Z]", p):
        t = re.search(r" as " + PATH.pattern, s)
        return t.group(1) if t else "core"
    return p


def category(dso, sym, kernel):
    if kernel or dso.startswith("[kernel"):
        return "kernel"
    if MALLOC.search(sym):
        return "malloc / free"
    if dso.startswith("libc") or dso.startswith("ld-linux"):
        return "libc, other (memcpy, memmove, ...)"
    if dso.startswith("[vdso"):
        return "vdso (clock_gettime)"
    if dso.startswith("libm"):
        return "libm"
    if re.match(r"^__(u|)(div|mod|mul)[a-z]*[0-9]$", sym):
        return "compiler builtins"
    p = path_of(sym)
    top = p.split("::")[0]
    if top == "sluice":
        parts = p.split("::")
        return "sluice::" + (parts[1] + "::" if len(parts) > 2 else (parts[1] if len(parts) > 1 else ""))
    if top in ("hyper", "hyper_util", "h2", "httparse", "http", "http_body", "http_body_util"):
        return "hyper (hyper, hyper-util, httparse, http)"
    if top in ("tokio", "mio"):
        return "tokio (tokio, mio)"
    if top in ("serde_json", "serde"):
        return "serde_json"
    if top in ("core", "alloc", "std"):
        return "core / alloc / std (generic code, drop glue, fmt)"
    if dso.startswith("[unknown") or sym.startswith("0x"):
        return "unknown"
    return top or "unknown"


cats = {}
for pct, dso, sym, kernel in syms:
    c = category(dso, sym, kernel)
    cats[c] = cats.get(c, 0) + pct

out = []
w = out.append
w("# sluice profile\n")
w(f"Written by `load-tests/profile.sh` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC;"
  f" {os.cpu_count()} CPUs, {cpu}, kernel {platform.release()}; commit `{cmd('git', 'rev-parse', '--short', 'HEAD')}`;"
  f" {cmd('perf', '--version')}; {cmd('strace', '-V')}; {cmd('nginx', '-v')}.\n")
w(f"The upstream is `sluice-upstream`; sluice runs `load-tests/sluice.yaml`; nginx is a keep-alive reverse proxy"
  f" (2 workers, upstream keepalive, `proxy_buffering off`). Unpinned; oha is on the same machine.\n")
w("## (i) Where sluice's CPU goes\n")
w(f"`perf record -e cpu-clock -F 4999 -g -p SLUICE_PID` for {perf_secs} s while oha drove concurrency {conc} with the"
  f" flag model `support-bot` ({perf_ok:,} requests over the whole oha run, {perf_err} errors)."
  f" Self time (`--no-children`), as a share of sluice's {samples} samples.\n")
w("### By category\n")
w("Rust symbols are attributed by their first path (`<sluice::proxy::X as hyper::...>::call` counts as"
  " `sluice::proxy::`); generic code instantiated from core/alloc/std (drop glue, iterators, fmt) is its own line.\n")
w("| category | share |")
w("|---|---|")
for c, pct in sorted(cats.items(), key=lambda kv: -kv[1]):
    if pct >= 0.05:
        w(f"| {c} | {pct:.1f} % |")
w("\n### By shared object (`perf report --no-children --sort dso`)\n")
w("| share | shared object |")
w("|---|---|")
for line in open(os.path.join(work, "dso.txt")):
    m = re.match(r"\s*([\d.]+)%\s+(\S.*)$", line)
    if m and float(m.group(1)) >= 0.05:
        w(f"| {m.group(1)} % | `{m.group(2).strip()}` |")
w("\n### Top 30 symbols (`perf report --no-children --sort dso,symbol`, demangled)\n")
w("| share | shared object | symbol | category |")
w("|---|---|---|---|")
by_sym = {}
for pct, dso, sym, kernel in syms:
    k = (sym, dso, kernel)
    by_sym[k] = by_sym.get(k, 0) + pct
for (sym, dso, kernel), pct in sorted(by_sym.items(), key=lambda kv: -kv[1])[:30]:
    s = (sym if len(sym) <= 140 else sym[:137] + "...").replace("|", "\\|")
    w(f"| {pct:.2f} % | `{dso}` | `{s}` | {category(dso, sym, kernel)} |")


def strace(name):
    calls = {}
    for line in open(os.path.join(work, f"strace-{name}.txt")):
        f = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
            try:
                calls[f[-1]] = int(f[3])
            except ValueError:
                pass
    return calls


names = ["nginx", "sluice-flag", "sluice-alias"]
st = {n: strace(n) for n in names}
allsys = sorted({s for n in names for s in st[n]}, key=lambda s: -max(st[n].get(s, 0) for n in names))
w(f"\n## (ii) System calls per request\n")
w(f"`strace -c -f` attached to nginx's two workers, then to every thread of sluice, each over exactly {n_req:,}"
  f" requests from oha at concurrency {conc} (connections opened and warmed before attaching). Calls ÷ {n_req:,};"
  " strace slows the process down, so the counts, not the times, are the point.\n")
w("| system call | " + " | ".join(names) + " |")
w("|---|" + "---|" * len(names))
rare = [s for s in allsys if max(st[n].get(s, 0) for n in names) / n_req < 0.005]
for s in allsys:
    if s not in rare:
        w(f"| `{s}` | " + " | ".join(f"{st[n].get(s, 0) / n_req:.2f}" for n in names) + " |")
if rare:
    w(f"| others ({', '.join(rare)}) | " + " | ".join(f"{sum(st[n].get(s, 0) for s in rare) / n_req:.3f}" for n in names) + " |")
w("| **total** | " + " | ".join(f"**{sum(st[n].values()) / n_req:.2f}**" for n in names) + " |")
print("\n".join(out))
PY
cp "$work/PROFILE.md" load-tests/PROFILE.md
cat load-tests/PROFILE.md
