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

# bench_workdir: a scratch directory in $work and a list of processes in $pids (append
# to it), both cleaned up when the script exits.
bench_workdir() {
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
}
bench_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }

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

# nginx_proxy DIR PORT ORIGIN_PORT [TOP] [H2_PORT] [HEADERS]: writes DIR/nginx.conf for a
# one-worker nginx proxying every request on PORT (and HTTP/2 on H2_PORT) to the origin
# over keep-alive connections, as Sluice does; TOP is added to the top-level directives.
# By default nginx sends and returns what Sluice does with its default forwarding: Host
# as the client sent it, X-Forwarded-For/-Proto/-Host and an X-Request-Id upstream (the
# client's, or a new one), and the same X-Request-Id back to the client. HEADERS=minimal
# sets only Host and X-Forwarded-For, the smaller job most nginx examples configure.
nginx_proxy() {
  mkdir -p "$1"
  local h2="" map headers
  if [ -n "${5:-}" ]; then h2="listen 127.0.0.1:$5 http2;"; fi
  if [ "${6:-}" = minimal ]; then
    map=""
    headers='proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;'
  else
    map='map $http_x_request_id $reqid { default $http_x_request_id; "" $request_id; }'
    headers='proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Request-Id $reqid;
      add_header X-Request-Id $reqid always;'
  fi
  cat > "$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
${4:-}
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  $map
  upstream origin { server 127.0.0.1:$3; keepalive 128; }
  server {
    listen 127.0.0.1:$2;
    $h2
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $headers
    }
  }
}
CONF
}

# edge_jwt DIR: an RS256 key pair in DIR (jwt.key, jwt.pub.pem); prints a token that
# edge_middleware accepts. Installs openssl and PyJWT when missing.
edge_jwt() {
  bench_tools openssl:openssl
  if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
    python3 -m pip install --quiet pyjwt cryptography || python3 -m pip install --quiet --break-system-packages pyjwt cryptography
  fi
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1/jwt.key" 2>/dev/null
  openssl pkey -in "$1/jwt.key" -pubout -out "$1/jwt.pub.pem"
  python3 - "$1/jwt.key" <<'PY'
import sys, time, jwt
key = open(sys.argv[1]).read()
claims = {"sub": "bench-user", "iss": "https://idp.bench", "aud": "api",
          "iat": int(time.time()), "exp": int(time.time()) + 86400, "scope": "orders:read"}
print(jwt.encode(claims, key, algorithm="RS256"))
PY
}

# edge_middleware PUBLIC_KEY: the edge route's middleware blocks, `auth` (JWT, RS256 with
# PUBLIC_KEY, issuer, audience and a scope checked, `sub` forwarded) and `limit` (a memory
# rate limit high enough never to refuse).
edge_middleware() {
  cat <<CONF
[middleware.auth]
type = "jwt"
algorithms = ["RS256"]
public_keys = ["$1"]
issuer = "https://idp.bench"
audience = ["api"]
require_scopes = ["orders:read"]
forward_claims = { sub = "x-user-id" }

[middleware.limit]
type = "rate_limit"
rate = 1000000000
per = "1s"
key = "ip"
CONF
}

# wrk's latency ("812.00us", "1.20ms", "2.01s") in milliseconds.
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us/,"",v); v=v/1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v=v*1000 }; printf "%.3f", v }'; }
# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
