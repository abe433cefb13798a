#!/usr/bin/env bash
# Chaos load test: Sluice and nginx, one worker each, balancing over three origins while
# one origin is killed (SIGKILL, master and worker) in the middle of a wrk run and started
# again later on the same port. Counts what the clients see: error rate, errors / requests,
# req/s, p50 and p99 latency.
#
#   bench/chaos.sh               # defaults: 3 rounds of 30s runs, 50 connections,
#                                #           kill at 10s, restart at 20s
#   SLUICE=target/release/sluice ROUNDS=5 DURATION=20s KILL_AT=6 RESTART_AT=13 CONNS=100 bench/chaos.sh
#
# Both proxies get their usual resilience settings against three origins (nginx, one
# worker each, `return 200`):
#   nginx:  upstream with keepalive 128, max_fails=1 fail_timeout=2s on every server,
#           proxy_next_upstream error timeout http_502 http_503 http_504, tries 3,
#           proxy_connect_timeout 1s.
#   Sluice: cluster with pool_max_idle 128, connect_timeout 1s, active HTTP health checks
#           every 1s, outlier ejection after 1 failure (2s, doubling up to 8s), and
#           retries = 3 attempts on connect_failure, reset, 502, 503, 504.
# Errors are wrk's "Non-2xx or 3xx responses" plus its socket errors (connect, read,
# write, timeout). An error rate of 0 means every failure was hidden by a retry.
#
# SLUICE is the binary under test (default: the release build of this tree, built or found
# up to date with cargo). Sluice's log is kept in /tmp/chaos-sluice.log and
# the nginx proxy's error log in /tmp/chaos-nginx-error.log.
#
# Shared machines are noisy: each round runs nginx and Sluice back to back (alternating
# which goes first) and the table reports the median over the rounds. Between runs the
# origin is up again and both proxies have recovered (Sluice's /health says every target
# is healthy) plus SETTLE seconds.
#
# Needs nginx and wrk (Debian: nginx-light wrk); installs them when missing. The proxy
# under test is pinned to CPU 0; origins and the load generator to the other CPUs.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-30s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
KILL_AT=${KILL_AT:-10}
RESTART_AT=${RESTART_AT:-20}
SETTLE=${SETTLE:-5}
VICTIM=${VICTIM:-2}                 # which origin (1, 2 or 3) is killed
ORIGIN_PORT=${ORIGIN_PORT:-18090}   # origins on ORIGIN_PORT, +1, +2
NGINX_PORT=${NGINX_PORT:-18093}
SLUICE_PORT=${SLUICE_PORT:-18094}
SLUICE_ADMIN=${SLUICE_ADMIN:-18095}

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
# wrk durations: "30s", "2m", "1h" or a bare number of seconds.
duration_s() { awk -v d="$1" 'BEGIN { n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
  if (u == "" || u == "s") print n; else if (u == "m") print n * 60; else if (u == "h") print n * 3600; else print -1 }'; }
DURATION_S=$(duration_s "$DURATION")
for v in ROUNDS CONNS KILL_AT RESTART_AT SETTLE; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "chaos.sh: $v must be a whole number, got '${!v}'" >&2; usage; }
done
[[ $VICTIM =~ ^[123]$ ]] || { echo "chaos.sh: VICTIM must be 1, 2 or 3" >&2; usage; }
if ! awk -v d="$DURATION_S" -v k="$KILL_AT" -v r="$RESTART_AT" 'BEGIN { exit !(d > 0 && k > 0 && k < r && r < d) }'; then
  echo "chaos.sh: need 0 < KILL_AT ($KILL_AT) < RESTART_AT ($RESTART_AT) < DURATION ($DURATION)" >&2; usage
fi

bench_tools nginx:nginx-light wrk:wrk

bench_sluice

work=$(mktemp -d)
pids=()
wrk_pid=
declare -A origin_master=() origin_job=()
cleanup() {
  local rc=$?
  for i in "${!origin_master[@]}"; do kill_origin "$i" 2>/dev/null || true; done
  for p in $wrk_pid "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -f "$work/sluice.log" ] && cp "$work/sluice.log" /tmp/chaos-sluice.log
  [ -f "$work/proxy/error.log" ] && cp "$work/proxy/error.log" /tmp/chaos-nginx-error.log
  if [ "$rc" != 0 ] && [ -f "$work/sluice.log" ]; then
    echo "chaos.sh failed ($rc); last lines of Sluice's log (all of it: /tmp/chaos-sluice.log):" >&2
    tail -n 40 "$work/sluice.log" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT

origin_port() { echo $((ORIGIN_PORT + $1 - 1)); }
for i in 1 2 3; do
  nginx_origin "$work/origin$i" "$(origin_port "$i")" "hello from origin $i, a small JSON-sized answer"
done

mkdir -p "$work/proxy"
cat > "$work/proxy/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/proxy/error.log warn;
pid $work/proxy/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origins {
    server 127.0.0.1:$(origin_port 1) max_fails=1 fail_timeout=2s;
    server 127.0.0.1:$(origin_port 2) max_fails=1 fail_timeout=2s;
    server 127.0.0.1:$(origin_port 3) max_fails=1 fail_timeout=2s;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://origins;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_connect_timeout 1s;
      proxy_next_upstream error timeout http_502 http_503 http_504;
      proxy_next_upstream_tries 3;
    }
  }
}
CONF

cat > "$work/sluice.toml" <<CONF
[server]
listen = ["127.0.0.1:$SLUICE_PORT"]
threads = 1
access_log = false

[admin]
listen = "127.0.0.1:$SLUICE_ADMIN"

[clusters.origins]
targets = ["http://127.0.0.1:$(origin_port 1)", "http://127.0.0.1:$(origin_port 2)", "http://127.0.0.1:$(origin_port 3)"]
pool_max_idle = 128      # as nginx's "keepalive 128"
connect_timeout = "1s"   # as nginx's proxy_connect_timeout

[clusters.origins.health]
path = "/"
interval = "1s"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 2

[clusters.origins.outlier] # as nginx's max_fails=1 fail_timeout=2s
consecutive_failures = 1
base_ejection = "2s"
max_ejection = "8s"

[[routes]]
name = "all"
prefix = "/"
cluster = "origins"
retries = { attempts = 3, on = ["connect_failure", "reset", "502", "503", "504"] }
CONF

if ! msg=$("$SLUICE" validate -c "$work/sluice.toml" 2>&1); then
  echo "chaos.sh: the generated Sluice configuration is invalid:" >&2; echo "$msg" >&2; exit 1
fi

answers() { curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$1/"; }
wait_answers() { # port, seconds
  local i
  for i in $(seq $(( $2 * 20 ))); do answers "$1" && return 0; sleep 0.05; done
  echo "chaos.sh: nothing answers on port $1 after $2 s" >&2; return 1
}

start_origin() {
  local dir="$work/origin$1"
  taskset -c "$OTHER_CPUS" nginx -c "$dir/nginx.conf" -p "$dir" 2>>"$dir/stderr" & origin_job[$1]=$!
  wait_answers "$(origin_port "$1")" 10
  # The pid file is written before the worker accepts, so it is fresh once the port answers.
  origin_master[$1]=$(cat "$dir/nginx.pid")
}
# SIGKILL of the master alone leaves its worker serving on the shared listening socket:
# collect the workers first, then kill the master (so it cannot respawn one) and them.
kill_origin() {
  local master=${origin_master[$1]:-} workers
  [ -n "$master" ] || return 0
  workers=$(pgrep -P "$master" || true)
  # shellcheck disable=SC2086 # $workers is a list of pids
  kill -KILL "$master" $workers 2>/dev/null || true
  wait "${origin_job[$1]}" 2>/dev/null || true
  unset "origin_master[$1]"
  local i
  for i in $(seq 40); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$(origin_port "$1")/" || return 0
    sleep 0.05
  done
  echo "chaos.sh: origin $1 still answers after SIGKILL" >&2; return 1
}

for i in 1 2 3; do start_origin "$i"; done
taskset -c "$PROXY_CPU" nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" 2>/dev/null & pids+=($!)
taskset -c "$PROXY_CPU" "$SLUICE" run -c "$work/sluice.toml" >"$work/sluice.log" 2>&1 & pids+=($!)
wait_answers "$NGINX_PORT" 10
wait_answers "$SLUICE_PORT" 10

# Sluice's /health lists every target with "healthy": true once it passes its checks
# and is not ejected.
sluice_recovered() {
  local h; h=$(curl -fs --max-time 1 "http://127.0.0.1:$SLUICE_ADMIN/health") || return 1
  [ "$(grep -o '"healthy": *true' <<<"$h" | wc -l)" -ge 3 ] && ! grep -q '"healthy": *false' <<<"$h"
}
recover() {
  local i
  wait_answers "$(origin_port "$VICTIM")" 10
  for i in $(seq 600); do sluice_recovered && break; sleep 0.1; done
  sluice_recovered || { echo "chaos.sh: Sluice's targets are not all healthy after 60 s:" >&2
    curl -s "http://127.0.0.1:$SLUICE_ADMIN/health" >&2; return 1; }
  sleep "$SETTLE"   # nginx has no health endpoint: fail_timeout=2s has long passed by then
}

now() { date +%s.%N; }
sleep_until() { local left; left=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }'); sleep "$left"; }

# One run against a proxy: wrk for DURATION; origin VICTIM killed at KILL_AT and started
# again at RESTART_AT. Appends to the results: proxy round requests errors rate% req/s p50
# p99 non2xx connect read write timeout. (Not run in a subshell: it restarts an origin.)
run_chaos() { # proxy-name round port
  local out="$work/wrk.out" start
  start=$(now)
  taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$3/bench" >"$out" 2>&1 & wrk_pid=$!
  sleep_until "$(awk -v s="$start" -v k="$KILL_AT" 'BEGIN { printf "%.3f", s + k }')"
  kill_origin "$VICTIM"
  sleep_until "$(awk -v s="$start" -v k="$RESTART_AT" 'BEGIN { printf "%.3f", s + k }')"
  start_origin "$VICTIM"
  wait "$wrk_pid" || { echo "chaos.sh: wrk failed:" >&2; cat "$out" >&2; return 1; }
  wrk_pid=
  cat "$out" >> "$work/wrk.all"
  local requests rps p50 p99 non2xx sock
  requests=$(awk '/ requests in / { print $1 }' "$out")
  rps=$(awk '/Requests\/sec/ { print $2 }' "$out")
  p50=$(awk '$1 == "50%" { print $2 }' "$out" | to_ms)
  p99=$(awk '$1 == "99%" { print $2 }' "$out" | to_ms)
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  sock=$(awk '/Socket errors:/ { gsub(",", ""); print $4, $6, $8, $10 }' "$out")
  read -r connect rd wr timeout <<<"${sock:-0 0 0 0}"
  local errors rate line
  errors=$(( ${non2xx:-0} + connect + rd + wr + timeout ))
  rate=$(awk -v e="$errors" -v r="$requests" 'BEGIN { printf "%.4f", (r > 0 ? 100 * e / r : 0) }')
  line="$1 $2 $requests $errors $rate $rps $p50 $p99 ${non2xx:-0} $connect $rd $wr $timeout"
  echo "$line" >> "$work/results"
  echo "run: $line" >&2
}

# Warm both proxies (pools filled, code paged in) before measuring.
taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_PORT/" >/dev/null 2>&1
taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$SLUICE_PORT/" >/dev/null 2>&1

: > "$work/results"
for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then order="nginx sluice"; else order="sluice nginx"; fi
  for who in $order; do
    if [ "$who" = nginx ]; then port=$NGINX_PORT; else port=$SLUICE_PORT; fi
    run_chaos "$who" "$round" "$port"
    recover
  done
done

pick() { awk -v w="$1" -v c="$2" '$1 == w { print $c }' "$work/results" | median; }
sluice_req=$(pick sluice 3); sluice_err=$(pick sluice 4); sluice_rate=$(pick sluice 5)
sluice_rps=$(pick sluice 6); sluice_p50=$(pick sluice 7); sluice_p99=$(pick sluice 8)
nginx_req=$(pick nginx 3); nginx_err=$(pick nginx 4); nginx_rate=$(pick nginx 5)
nginx_rps=$(pick nginx 6); nginx_p50=$(pick nginx 7); nginx_p99=$(pick nginx 8)

echo
echo "Chaos: Sluice vs nginx, one worker each on CPU $PROXY_CPU, three origins; origin $VICTIM killed (SIGKILL) and restarted during each run"
echo "CONNS=$CONNS DURATION=$DURATION KILL_AT=$KILL_AT RESTART_AT=$RESTART_AT ROUNDS=$ROUNDS (median of the rounds)"
echo
printf '| %-18s | %18s | %18s |\n' "metric" "sluice" "nginx"
printf '|%s|%s|%s|\n' "--------------------" "-------------------:" "-------------------:"
printf '| %-18s | %18.4f | %18.4f |\n' "error rate %" "$sluice_rate" "$nginx_rate"
printf '| %-18s | %18s | %18s |\n' "errors / requests" "$(printf '%.0f / %.0f' "$sluice_err" "$sluice_req")" "$(printf '%.0f / %.0f' "$nginx_err" "$nginx_req")"
printf '| %-18s | %18.0f | %18.0f |\n' "req/s" "$sluice_rps" "$nginx_rps"
printf '| %-18s | %18.3f | %18.3f |\n' "p50 ms" "$sluice_p50" "$nginx_p50"
printf '| %-18s | %18.3f | %18.3f |\n' "p99 ms" "$sluice_p99" "$nginx_p99"
echo
echo "every run: proxy round requests errors rate% req/s p50_ms p99_ms non2xx connect read write timeout"
cat "$work/results"
