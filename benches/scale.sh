#!/usr/bin/env bash
# Scale: 10,000 tenants x 3 signals, every tenant with its own endpoints
# (30,000 endpoints, each with its own health prober). Reports start-up time
# (parse, validate, build, first probes, bind), RSS, and the time of API
# reloads while wrk drives one tenant, with that tenant's failed requests.
#
#   benches/scale.sh [tenants, default 10000]
#
# Loopback only: tenant t0 points at an nginx backend on 127.0.0.1; the
# others point at addresses of 127.0.0.0/8 where nothing listens (their
# probes are refused at once, as for dead endpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=${1:-10000}
command -v nginx >/dev/null && command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
cargo build --release --quiet --bin mirador-router
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT

BACKEND=127.0.0.1:18700
cat > "$WORK/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log;
events { worker_connections 1024; }
http { access_log off; server { listen $BACKEND; location / { return 200 'ok'; } } }
EOF
nginx -c "$WORK/backend.conf" &

generate() { # extra-comment
  python3 - "$TENANTS" "$BACKEND" "$1" > "$WORK/scale.toml" <<'EOF'
import sys
tenants, backend, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"""# {extra}
[server]
listen = ["127.0.0.1:18711"]
threads = 1
grace_period = "0s"
pid_file = "/tmp/mirador-scale.pid"
upgrade_sock = "/tmp/mirador-scale.sock"
[admin]
listen = "127.0.0.1:18712"
[health_check]
interval = "60s"
timeout = "1s"
""")
for i in range(tenants):
    a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
    host = backend if i == 0 else f"127.{a + 1}.{b}.{c}"
    for signal, port in (("metrics", 8428), ("logs", 9428), ("traces", 10428)):
        url = f"http://{host}" if i == 0 else f"http://{host}:{port}"
        print(f'[tenants.t{i}.{signal}]\nendpoints = ["{url}"]')
EOF
}
generate "first"
echo "config: $TENANTS tenants x 3 signals, $(wc -c < "$WORK/scale.toml") bytes"
start=$(date +%s.%N)
RUST_LOG=error target/release/mirador-router --config "$WORK/scale.toml" > "$WORK/router.log" 2>&1 &
PID=$!
until curl -s -o /dev/null "http://127.0.0.1:18712/ready"; do sleep 0.05; done
echo "start-up to ready (parse, validate, build, first probes of every endpoint, bind): $(echo "$(date +%s.%N) - $start" | bc) s"
sleep 1
awk '/VmRSS|VmHWM/ {printf "%s %.1f MiB\n", $1, $2/1024}' "/proc/$PID/status"

wrk -t1 -c16 -d8s -H 'X-Tenant-ID: t0' "http://127.0.0.1:18711/api/v1/query" > "$WORK/wrk.txt" &
WRK=$!
sleep 1
for n in 1 2 3; do
  generate "reload $n"
  curl -s -XPOST "http://127.0.0.1:18712/api/v1/reload" | python3 -c 'import json,sys; ms=json.load(sys.stdin)["changes"]["duration_ms"]; print("reload: %.1f ms (parse, validate, build, swap; no new endpoint to probe)" % ms)'
  sleep 1
done
wait "$WRK"
echo "t0 under wrk during the reloads: $(awk '/requests in/ {print $1, "requests"}' "$WORK/wrk.txt"), $(grep -E 'Non-2xx|Socket errors' "$WORK/wrk.txt" || echo '0 failed')"
awk '/VmRSS|VmHWM/ {printf "after reloads: %s %.1f MiB\n", $1, $2/1024}' "/proc/$PID/status"
