#!/usr/bin/env bash
# Side-by-side load test: Sluice and nginx, one worker each, proxying to the same origin
# over keep-alive connections. Prints req/s, p50, p99 and RSS for each, and the ratios.
#
# "nginx" is set up to do what Sluice does by default (Host as sent, X-Forwarded-For,
# -Proto and -Host, an X-Request-Id upstream and back to the client); "nginx-min" sets
# only Host and X-Forwarded-For, a smaller job, and is measured alongside for reference.
#
#   bench/run.sh                 # defaults: 5 rounds of 5s runs, 50 connections
#   ROUNDS=9 PAIRS=9 DURATION=10s CONNS=100 bench/run.sh
#   SLUICE=/tmp/sluice bench/run.sh   # an already-built binary
#
# Shared machines are noisy: each round runs the proxies back to back (rotating which
# goes first) and the table reports the median over the rounds.
#
# Needs nginx, wrk and h2load (Debian: nginx-light wrk nghttp2-client); installs them
# when missing. The proxy under test is pinned to CPU 0; origin and load generator to
# the other CPUs, so both proxies get the same single core.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-5}
PAIRS=${PAIRS:-5}
CONNS=${CONNS:-50}
H2_STREAMS=${H2_STREAMS:-10}
ORIGIN_PORT=${ORIGIN_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
NGINX_MIN_PORT=${NGINX_MIN_PORT:-18084}
SLUICE_PORT=${SLUICE_PORT:-18082}
SLUICE_ADMIN=${SLUICE_ADMIN:-18083}

bench_tools nginx:nginx-light wrk:wrk h2load:nghttp2-client

bench_workdir

bench_sluice

nginx_origin "$work/origin" "$ORIGIN_PORT" "hello from the origin, a small JSON-sized answer"
nginx_proxy "$work/proxy" "$NGINX_PORT" "$ORIGIN_PORT" "" "$((NGINX_PORT + 10))"
nginx_proxy "$work/proxy-min" "$NGINX_MIN_PORT" "$ORIGIN_PORT" "" "" minimal

cat > "$work/sluice.toml" <<CONF
[server]
listen = ["127.0.0.1:$SLUICE_PORT"]
threads = 1
access_log = false

[admin]
listen = "127.0.0.1:$SLUICE_ADMIN"

[clusters.origin]
targets = ["http://127.0.0.1:$ORIGIN_PORT"]
pool_max_idle = 128   # as nginx's "keepalive 128"

[[routes]]
name = "all"
prefix = "/"
cluster = "origin"
CONF

taskset -c "$OTHER_CPUS" nginx -c "$work/origin/nginx.conf" -p "$work/origin" 2>/dev/null & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" 2>/dev/null & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/proxy-min/nginx.conf" -p "$work/proxy-min" 2>/dev/null & pids+=($!)
taskset -c "$PROXY_CPU" "$SLUICE" run -c "$work/sluice.toml" >"$work/sluice.log" 2>&1 & sluice_pid=$!; pids+=("$sluice_pid")

for port in $ORIGIN_PORT $NGINX_PORT $NGINX_MIN_PORT $SLUICE_PORT; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.05; done
done

rss_kb() { ps -o rss= -p "$1" | tr -d ' '; }
nginx_worker() { pgrep -P "$(cat "$work/proxy/nginx.pid")" | head -1; }
sluice_idle_rss=$(rss_kb "$sluice_pid")

# wrk: "Requests/sec: N" and the latency distribution lines "50% 1.2ms".
run_wrk() {
  local out; out=$(taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$1/bench" 2>&1)
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  echo "$rps $p50 $p99 ${errs:-none}"
}
# h2load: one connection per client, $H2_STREAMS concurrent streams each.
run_h2load() {
  local out; out=$(taskset -c "$OTHER_CPUS" h2load -c"$CONNS" -m"$H2_STREAMS" -D"${DURATION%s}" "http://127.0.0.1:$1/bench" 2>&1)
  local rps errs
  rps=$(awk '/^finished in/ {gsub(",","",$4); print $4}' <<<"$out")
  errs=$(awk '/^requests:/ {print $8, $9, $10, $11}' <<<"$out")
  echo "$rps - - $errs"
}

# Warm both proxies (pools filled, code paged in) before measuring.
taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_PORT/" >/dev/null 2>&1
taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_MIN_PORT/" >/dev/null 2>&1
taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$SLUICE_PORT/" >/dev/null 2>&1

: > "$work/results"
# All HTTP/1.1 rounds first, then all HTTP/2 rounds: h2load's 500 concurrent streams
# grow both proxies' upstream pools, which would otherwise colour the next wrk run.
# The order within a round rotates, so no proxy always runs first or last.
for proto in h1 h2; do
  for round in $(seq "$ROUNDS"); do
    if [ "$proto" = h1 ]; then
      case $((round % 3)) in
        1) order="nginx sluice nginx-min" ;; 2) order="sluice nginx-min nginx" ;; *) order="nginx-min nginx sluice" ;;
      esac
    elif (( round % 2 )); then order="nginx sluice"; else order="sluice nginx"; fi
    for who in $order; do
      case $who in
        nginx) h1=$NGINX_PORT; h2=$((NGINX_PORT + 10)) ;;
        nginx-min) h1=$NGINX_MIN_PORT; h2="" ;;
        *) h1=$SLUICE_PORT; h2=$SLUICE_PORT ;;
      esac
      if [ "$proto" = h1 ]; then
        read -r rps p50 p99 err < <(run_wrk "$h1")
        echo "$who h1 $round $rps $p50 $p99 $err" >> "$work/results"
      else
        read -r rps _ _ err < <(run_h2load "$h2")
        echo "$who h2 $round $rps - - $err" >> "$work/results"
      fi
    done
    echo "$proto round $round done" >&2
  done
done
# Columns of $work/results: who, protocol, round, req/s, p50, p99, errors.
pick() { awk -v w="$1" -v p="$2" -v c="$3" '$1 == w && $2 == p { print $c }' "$work/results" | median; }
errs() { awk -v w="$1" -v p="$2" '$1 == w && $2 == p { $1 = $2 = $3 = $4 = $5 = $6 = ""; print }' "$work/results" | sort | uniq -c | tr -s ' ' | tr '\n' ';'; }
# by_round A B PROTO COLUMN: the median over rounds of A's value over B's in the same
# round, runs a few seconds apart, so slow drifts of the machine cancel out.
by_round() {
  awk -v a="$1" -v b="$2" -v p="$3" -v c="$4" '
    $2 == p && $1 == a { x[$3] = $c } $2 == p && $1 == b { y[$3] = $c }
    END { for (r in x) if (y[r] > 0) printf "%.2f\n", x[r] / y[r] }' "$work/results" | median
}
n1_rps=$(pick nginx h1 4); n1_p50=$(pick nginx h1 5); n1_p99=$(pick nginx h1 6)
s1_rps=$(pick sluice h1 4); s1_p50=$(pick sluice h1 5); s1_p99=$(pick sluice h1 6)
m1_rps=$(pick nginx-min h1 4); m1_p50=$(pick nginx-min h1 5); m1_p99=$(pick nginx-min h1 6)
n2_rps=$(pick nginx h2 4); s2_rps=$(pick sluice h2 4)
n1_err=$(errs nginx h1); s1_err=$(errs sluice h1); m1_err=$(errs nginx-min h1); n2_err=$(errs nginx h2); s2_err=$(errs sluice h2)
sluice_rss=$(rss_kb "$sluice_pid")
nginx_rss=$(rss_kb "$(nginx_worker)")
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "Sluice vs nginx, one worker each on CPU $PROXY_CPU; $CONNS connections; median of $ROUNDS rounds of $DURATION"
echo "(ratio: of the medians; by round: median of the ratios within each round)"
echo
row() { printf '| %-26s | %12s | %12s | %8s | %8s |\n' "$@"; }
row "run" "sluice" "nginx" "ratio" "by round"
printf '|%s|%s|%s|%s|%s|\n' "----------------------------" "--------------" "--------------" "----------" "----------"
row "HTTP/1.1 req/s (wrk)" "$(printf %.0f "$s1_rps")" "$(printf %.0f "$n1_rps")" "$(ratio "$s1_rps" "$n1_rps")" "$(by_round sluice nginx h1 4)"
row "HTTP/1.1 p50 ms" "$s1_p50" "$n1_p50" "$(ratio "$s1_p50" "$n1_p50")" "$(by_round sluice nginx h1 5)"
row "HTTP/1.1 p99 ms" "$s1_p99" "$n1_p99" "$(ratio "$s1_p99" "$n1_p99")" "$(by_round sluice nginx h1 6)"
row "HTTP/1.1 req/s, nginx-min" "$(printf %.0f "$s1_rps")" "$(printf %.0f "$m1_rps")" "$(ratio "$s1_rps" "$m1_rps")" "$(by_round sluice nginx-min h1 4)"
row "HTTP/1.1 p50 ms, nginx-min" "$s1_p50" "$m1_p50" "$(ratio "$s1_p50" "$m1_p50")" "$(by_round sluice nginx-min h1 5)"
row "HTTP/1.1 p99 ms, nginx-min" "$s1_p99" "$m1_p99" "$(ratio "$s1_p99" "$m1_p99")" "$(by_round sluice nginx-min h1 6)"
row "HTTP/2 req/s (h2load)" "$(printf %.0f "$s2_rps")" "$(printf %.0f "$n2_rps")" "$(ratio "$s2_rps" "$n2_rps")" "$(by_round sluice nginx h2 4)"
row "RSS after load (MB)" "$(mb "$sluice_rss")" "$(mb "$nginx_rss")" "$(ratio "$sluice_rss" "$nginx_rss")" ""
row "Sluice idle RSS (MB)" "$(mb "$sluice_idle_rss")" "" "" ""
echo
echo "errors (runs: wrk non-2xx/socket errors; h2load succeeded/failed):"
echo "  sluice h1: $s1_err"; echo "  nginx h1: $n1_err"; echo "  nginx-min h1: $m1_err"
echo "  sluice h2: $s2_err"; echo "  nginx h2: $n2_err"
echo "every run: $work/results is printed below"; cat "$work/results"

# Paired: two proxies loaded at the same time on the same core, each by its own wrk.
# The scheduler shares the core, so the req/s ratio is the ratio of CPU per request,
# and machine noise hits both alike: the number to compare changes by. Sluice is paired
# with each nginx in turn.
paired() {
  : > "$work/paired"
  for _ in $(seq "$PAIRS"); do
    taskset -c "$OTHER_CPUS" wrk -t1 -c$((CONNS / 2)) -d"$DURATION" "http://127.0.0.1:$1/bench" > "$work/pn" 2>&1 & a=$!
    taskset -c "$OTHER_CPUS" wrk -t1 -c$((CONNS / 2)) -d"$DURATION" "http://127.0.0.1:$SLUICE_PORT/bench" > "$work/ps" 2>&1 & b=$!
    wait "$a" "$b"
    awk '/Requests\/sec/ {print $2}' "$work/pn" "$work/ps" | paste -sd' ' >> "$work/paired"
  done
  local ratios; ratios=$(awk '{ printf "%.2f\n", $2 / $1 }' "$work/paired")
  echo "$(tr '\n' ' ' <<<"$ratios")(median $(median <<<"$ratios"))"
}
echo
echo "HTTP/1.1 paired on one core, Sluice/nginx req/s: $(paired "$NGINX_PORT")"
echo "HTTP/1.1 paired on one core, Sluice/nginx-min req/s: $(paired "$NGINX_MIN_PORT")"

# Loading a 10,000-route file: validation plus router build, as `sluice run` does.
routes_file="$work/routes.toml"
{
  echo '[clusters.c]'; echo 'targets = ["http://127.0.0.1:1"]'
  for i in $(seq 1 10000); do printf '[[routes]]\nname = "r%d"\npath = "/api/v%d/items/{id}/sub%d"\ncluster = "c"\n' "$i" $((i % 7)) "$i"; done
} > "$routes_file"
start=$(date +%s%N); "$SLUICE" validate -c "$routes_file" >/dev/null; end=$(date +%s%N)
echo "10,000-route file validated and routed in $(( (end - start) / 1000000 )) ms"
