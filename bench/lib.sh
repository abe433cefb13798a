# shellcheck shell=bash
# Shared by the bench scripts, sourced first thing: the binary under test, the tools, the
# CPU split, an nginx origin, and the arithmetic on wrk's output.

# SLUICE=path measures that binary (resolved against the caller's directory); otherwise
# the release build of this tree, built (or found up to date) by bench_sluice.
if [ -n "${SLUICE:-}" ]; then SLUICE=$(realpath -- "$SLUICE"); fi
cd "$(dirname "$0")/.." || exit 1

# The proxies under test share CPU 0; origins and load generators get the others.
export PROXY_CPU=0
export OTHER_CPUS=$(( $(nproc) > 1 ? 1 : 0 ))-$(( $(nproc) - 1 ))

# bench_tools CMD:PACKAGE ...: installs the Debian packages of the commands missing.
bench_tools() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

bench_sluice() {
  if [ -z "${SLUICE:-}" ]; then
    cargo build --release -p sluice -q
    SLUICE=target/release/sluice
  fi
  [ -x "$SLUICE" ] || { echo "$(basename "$0"): no Sluice binary at $SLUICE" >&2; exit 1; }
}

# nginx_origin DIR PORT BODY: writes DIR/nginx.conf for a one-worker origin answering
# every request with 200 and BODY.
nginx_origin() {
  mkdir -p "$1"
  cat > "$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2;
    location / { return 200 "$3\n"; }
  }
}
CONF
}

# wrk's latency ("812.00us", "1.20ms", "2.01s") in milliseconds.
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us/,"",v); v=v/1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v=v*1000 }; printf "%.3f", v }'; }
# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
