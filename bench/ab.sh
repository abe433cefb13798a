#!/usr/bin/env bash
# Two Sluice builds against each other: both proxy the same origin at once on CPU 0, each
# driven by its own wrk, so they share the core and the machine's noise alike; the ratio of
# their req/s is the ratio of their CPU per request. For data-path changes too small for
# bench/run.sh's sequential medians to tell apart.
#
#   bench/ab.sh OLD NEW              # PAIRS=5 pairs of 5s, then the same with sides swapped
#   PAIRS=9 DURATION=10s bench/ab.sh /tmp/sluice-before target/release/sluice
#
# Prints NEW/OLD for each pair. The two ports are not quite alike (one side came out about
# 1 % ahead with the same binary on both), hence the swapped half: read the two halves
# together. Needs nginx and wrk (Debian: nginx-light wrk); installs them when missing.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/ab.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
old=$(realpath -- "$1")
new=$(realpath -- "$2")
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

PAIRS=${PAIRS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-25}
ORIGIN_PORT=${ORIGIN_PORT:-19480}
PORT_A=${PORT_A:-19481}
PORT_B=${PORT_B:-19482}

bench_tools nginx:nginx-light wrk:wrk

bench_workdir

nginx_origin "$work/origin" "$ORIGIN_PORT" "hello from the origin, a small JSON-sized answer"
taskset -c "$OTHER_CPUS" nginx -c "$work/origin/nginx.conf" -p "$work/origin" 2>/dev/null & pids+=($!)
for port in $PORT_A $PORT_B; do
  cat > "$work/$port.toml" <<CONF
[server]
listen = ["127.0.0.1:$port"]
threads = 1
access_log = false
watch_config = false

[admin]
enabled = false

[clusters.origin]
targets = ["http://127.0.0.1:$ORIGIN_PORT"]
pool_max_idle = 128

[[routes]]
name = "all"
prefix = "/"
cluster = "origin"
CONF
done

# pairs A_BINARY B_BINARY LABEL: PAIRS rounds of both at once; prints B/A for each.
pairs() {
  taskset -c "$PROXY_CPU" "$1" run -c "$work/$PORT_A.toml" >"$work/a.log" 2>&1 & local a=$!
  taskset -c "$PROXY_CPU" "$2" run -c "$work/$PORT_B.toml" >"$work/b.log" 2>&1 & local b=$!
  pids+=("$a" "$b")
  for port in $ORIGIN_PORT $PORT_A $PORT_B; do
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.05; done
  done
  local out=()
  for _ in $(seq "$PAIRS"); do
    taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$PORT_A/" > "$work/wa" 2>&1 & local wa=$!
    taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$PORT_B/" > "$work/wb" 2>&1 & local wb=$!
    wait "$wa" "$wb"
    out+=("$(awk '/Requests\/sec/ {print $2}' "$work/wa" "$work/wb" | paste -sd' ' | awk "{ printf \"%.3f\", $3 }")")
  done
  kill "$a" "$b"; wait "$a" "$b" 2>/dev/null || true
  echo "$4: ${out[*]}"
}
pairs "$old" "$new" '$2 / $1' "NEW/OLD, new on the second port"
pairs "$new" "$old" '$1 / $2' "NEW/OLD, new on the first port "
