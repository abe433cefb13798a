#!/usr/bin/env bash
# User-space instructions per proxied request, Sluice and nginx side by side, counted by
# valgrind's callgrind: the same count for the same binaries and load whatever else the
# machine is doing, so small changes to the data path show up where req/s is too noisy.
#
#   bench/instructions.sh                      # plain proxying, and the edge route
#   N=20000 SLUICE=/tmp/sluice bench/instructions.sh
#
# Each proxy runs under callgrind twice, serving 2,000 then N+2,000 HTTP/1.1 requests
# (h2load, 10 connections); the difference over N is the cost of one request, start-up
# and warm-up left out. Kernel time is not counted: Sluice makes four system calls per
# request (read the client, write the target, read the target, write the client); nginx
# makes the same four plus a getsockopt on the target connection and, for the
# X-Request-Id it generates, a getpid (counted with strace -c).
# "nginx, plain proxying" sends and returns the headers Sluice does (bench/lib.sh);
# "Host and X-Forwarded-For only" is the smaller job, for reference.
# "edge" adds JWT (RS256, the token cache warm) + a memory rate limit + the access log,
# against nginx still proxying plainly, as bench/edge.sh does.
#
# Needs valgrind, nginx and h2load (Debian: valgrind nginx-light nghttp2-client);
# installs them when missing.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

N=${N:-10000}
ORIGIN_PORT=${ORIGIN_PORT:-19280}
PROXY_PORT=${PROXY_PORT:-19281}

bench_tools valgrind:valgrind nginx:nginx-light h2load:nghttp2-client
bench_sluice

bench_workdir

nginx_origin "$work/origin" "$ORIGIN_PORT" "hello from the origin, a small JSON-sized answer"
taskset -c "$OTHER_CPUS" nginx -c "$work/origin/nginx.conf" -p "$work/origin" 2>/dev/null & pids+=($!)

TOKEN=$(edge_jwt "$work")

nginx_proxy "$work/proxy" "$PROXY_PORT" "$ORIGIN_PORT" "master_process off;"
nginx_proxy "$work/proxy-min" "$PROXY_PORT" "$ORIGIN_PORT" "master_process off;" "" minimal

sluice_config() { # $1: plain | edge
  cat <<CONF
[server]
listen = ["127.0.0.1:$PROXY_PORT"]
threads = 1
access_log = $([ "$1" = edge ] && echo true || echo false)
watch_config = false

[admin]
enabled = false

$(edge_middleware "$work/jwt.pub.pem")

[clusters.origin]
targets = ["http://127.0.0.1:$ORIGIN_PORT"]
pool_max_idle = 128

[[routes]]
name = "api"
prefix = "/"
cluster = "origin"
$([ "$1" = edge ] && echo 'middleware = ["auth", "limit"]')
CONF
}
sluice_config plain > "$work/plain.toml"
sluice_config edge > "$work/edge.toml"
"$SLUICE" validate -c "$work/edge.toml" >/dev/null

# count REQUESTS CMD...: total instructions of CMD serving REQUESTS requests.
count() {
  local requests=$1; shift
  rm -f "$work"/cg.out.*
  taskset -c "$PROXY_CPU" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out.%p" "$@" >"$work/proxy.log" 2>&1 &
  local pid=$!
  local ok=
  for _ in $(seq 200); do
    if curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PROXY_PORT/"; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "instructions.sh: $* did not answer" >&2; tail -5 "$work/proxy.log" >&2; exit 1; }
  local done_line
  done_line=$(taskset -c "$OTHER_CPUS" h2load --h1 -n "$requests" -c 10 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PROXY_PORT/bench" | awk '/^status codes:/ {print $3}')
  [ "$done_line" = "$requests" ] || { echo "instructions.sh: $requests requests, $done_line answered 2xx" >&2; exit 1; }
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$work"/cg.out.*
}
per_request() { # CMD...: instructions per request
  local small large
  small=$(count 2000 "$@")
  large=$(count $((N + 2000)) "$@")
  echo $(( (large - small) / N ))
}

nginx_ir=$(per_request nginx -c "$work/proxy/nginx.conf" -p "$work/proxy")
min_ir=$(per_request nginx -c "$work/proxy-min/nginx.conf" -p "$work/proxy-min")
plain_ir=$(per_request "$SLUICE" run -c "$work/plain.toml")
edge_ir=$(per_request "$SLUICE" run --log-format json -c "$work/edge.toml")

echo
echo "User-space instructions per HTTP/1.1 request (callgrind; $N requests, 10 connections)"
echo
printf '| %-40s | %12s | %14s |\n' "proxy" "instructions" "vs nginx plain"
printf '|%s|%s|%s|\n' "------------------------------------------" "--------------" "----------------"
printf '| %-40s | %12s | %14s |\n' "nginx, plain proxying" "$nginx_ir" "1.00"
printf '| %-40s | %12s | %14s |\n' "nginx, Host and X-Forwarded-For only" "$min_ir" "$(ratio "$min_ir" "$nginx_ir")"
printf '| %-40s | %12s | %14s |\n' "Sluice, plain proxying" "$plain_ir" "$(ratio "$plain_ir" "$nginx_ir")"
printf '| %-40s | %12s | %14s |\n' "Sluice, JWT + rate limit + access log" "$edge_ir" "$(ratio "$edge_ir" "$nginx_ir")"
