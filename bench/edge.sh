#!/usr/bin/env bash
# The edge on the hot path: Sluice proxying through a route that checks a JWT (RS256),
# counts a rate limit in memory and writes an access-log line per request, against nginx
# proxying the same origin with no checks at all, one worker each, side by side.
#
#   bench/edge.sh                      # 5 rounds of 5s runs, 50 connections, 3 pairs
#   ROUNDS=7 PAIRS=5 DURATION=10s bench/edge.sh
#   SLUICE=/tmp/sluice bench/edge.sh   # an already-built binary
#
# Needs nginx, wrk, openssl and PyJWT (Debian: nginx-light wrk openssl; pip: pyjwt
# cryptography); installs them when missing. The proxies are pinned to CPU 0, the origin and
# wrk to the other CPUs. The token is minted by PyJWT with a fresh RSA key; the rate limit is
# high enough never to refuse, so every request pays for counting, not for refusing.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-5}
PAIRS=${PAIRS:-3}
CONNS=${CONNS:-50}
ORIGIN_PORT=${ORIGIN_PORT:-19180}
NGINX_PORT=${NGINX_PORT:-19181}
SLUICE_PORT=${SLUICE_PORT:-19182}

bench_tools nginx:nginx-light wrk:wrk

bench_sluice

bench_workdir

TOKEN=$(edge_jwt "$work")

nginx_origin "$work/origin" "$ORIGIN_PORT" "hello from the origin, a small JSON-sized answer"
nginx_proxy "$work/proxy" "$NGINX_PORT" "$ORIGIN_PORT"
cat > "$work/sluice.toml" <<CONF
[server]
listen = ["127.0.0.1:$SLUICE_PORT"]
threads = 1
access_log = true
watch_config = false

[admin]
enabled = false

$(edge_middleware jwt.pub.pem)

[clusters.origin]
targets = ["http://127.0.0.1:$ORIGIN_PORT"]
pool_max_idle = 128

[[routes]]
name = "api"
prefix = "/"
cluster = "origin"
middleware = ["auth", "limit"]
CONF
"$SLUICE" validate -c "$work/sluice.toml" >/dev/null

taskset -c "$OTHER_CPUS" nginx -c "$work/origin/nginx.conf" -p "$work/origin" 2>/dev/null & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/proxy/nginx.conf" -p "$work/proxy" 2>/dev/null & pids+=($!)
# The access log is written (JSON lines), as in production, to a file.
taskset -c "$PROXY_CPU" "$SLUICE" run --log-format json -c "$work/sluice.toml" >"$work/sluice.log" 2>&1 & pids+=($!)
for port in $ORIGIN_PORT $NGINX_PORT; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.05; done
done
for _ in $(seq 100); do curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$SLUICE_PORT/" >/dev/null 2>&1 && break; sleep 0.05; done
# The route really checks: no token is 401, the token is 200.
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SLUICE_PORT/")" = 401 ] || { echo "edge.sh: a request without a token was not refused" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$SLUICE_PORT/")" = 200 ] || { echo "edge.sh: the token was refused" >&2; tail -5 "$work/sluice.log" >&2; exit 1; }

run_wrk() {
  local out; out=$(taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1/bench" 2>&1)
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out" | to_ms) $(awk '$1=="99%" {print $2}' <<<"$out" | to_ms) $(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")"
}

taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_PORT/" >/dev/null 2>&1
taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$SLUICE_PORT/" >/dev/null 2>&1
: > "$work/results"
for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then order="nginx sluice"; else order="sluice nginx"; fi
  for who in $order; do
    if [ "$who" = nginx ]; then port=$NGINX_PORT; else port=$SLUICE_PORT; fi
    echo "$who $(run_wrk "$port")" >> "$work/results"
  done
done
pick() { awk -v w="$1" -v c="$2" '$1 == w { print $c }' "$work/results" | median; }
s_rps=$(pick sluice 2); n_rps=$(pick nginx 2)

: > "$work/paired"
for _ in $(seq "$PAIRS"); do
  taskset -c "$OTHER_CPUS" wrk -t1 -c$((CONNS / 2)) -d"$DURATION" "http://127.0.0.1:$NGINX_PORT/bench" > "$work/pn" 2>&1 & a=$!
  taskset -c "$OTHER_CPUS" wrk -t1 -c$((CONNS / 2)) -d"$DURATION" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$SLUICE_PORT/bench" > "$work/ps" 2>&1 & b=$!
  wait "$a" "$b"
  awk '/Requests\/sec/ {print $2}' "$work/pn" "$work/ps" | paste -sd' ' >> "$work/paired"
done
paired=$(awk '{ printf "%.2f\n", $2 / $1 }' "$work/paired")

echo
echo "Sluice (JWT RS256 + memory rate limit + access log) vs nginx (plain proxying), one worker each on CPU $PROXY_CPU"
echo "$CONNS connections; median of $ROUNDS rounds of $DURATION"
echo
printf '| %-22s | %10s | %10s | %6s |\n' "run" "sluice" "nginx" "ratio"
printf '|%s|%s|%s|%s|\n' "------------------------" "------------" "------------" "--------"
printf '| %-22s | %10.0f | %10.0f | %6s |\n' "HTTP/1.1 req/s" "$s_rps" "$n_rps" "$(ratio "$s_rps" "$n_rps")"
printf '| %-22s | %10s | %10s | %6s |\n' "p50 ms" "$(pick sluice 3)" "$(pick nginx 3)" "$(ratio "$(pick sluice 3)" "$(pick nginx 3)")"
printf '| %-22s | %10s | %10s | %6s |\n' "p99 ms" "$(pick sluice 4)" "$(pick nginx 4)" "$(ratio "$(pick sluice 4)" "$(pick nginx 4)")"
echo
echo "paired on one core, Sluice/nginx req/s: $(tr '\n' ' ' <<<"$paired")(median $(median <<<"$paired"))"
echo "access-log lines written: $(grep -c '"sluice::access"' "$work/sluice.log" || true)"
echo "every run:"; cat "$work/results"
