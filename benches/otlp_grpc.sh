#!/usr/bin/env bash
# OTLP over gRPC against OTLP/HTTP through the same router, in one run: the
# same metrics export (ExportMetricsServiceRequest, made with the OpenTelemetry
# Python SDK's protobuf classes) sent as a gRPC call to [server]
# otlp_grpc_listen and as an OTLP/HTTP POST to /opentelemetry/v1/metrics.
#
#   [ROUNDS=2] benches/otlp_grpc.sh [seconds per run, default 10] [data points per export, default 100]
#
# Loopback only. The router (release, threads = 1: one Pingora worker and one
# gRPC worker) is pinned alone on CPU 0; h2load and the backend (one nginx
# worker answering 200 to the export) share CPU 1. Clients: gRPC over h2c, 8
# connections × 8 streams; OTLP/HTTP over h2c, the same 8 × 8; OTLP/HTTP over
# HTTP/1.1, 64 connections. Reported per run: exports/s, and the router's CPU
# time per export (from /proc/<pid>/stat over the run: on 2 CPUs exports/s
# saturate, so this is the figure to compare). Every export is checked to
# have reached the backend (its access log counts them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
POINTS=${2:-100}
PYTHON="${MIRADOR_VENV:-$PWD/.venv}/bin/python"
"$PYTHON" -c 'import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2' \
  || { echo "the venv of scripts/test (opentelemetry-proto) is needed: $PYTHON" >&2; exit 1; }
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin mirador-router
WORK=$(mktemp -d)
chmod 755 "$WORK"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT

# The export: $POINTS gauge points over 10 metrics, as protobuf, and as one
# gRPC length-prefixed message.
"$PYTHON" - "$WORK" "$POINTS" <<'EOF'
import struct, sys
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
work, points = sys.argv[1], int(sys.argv[2])
request = ExportMetricsServiceRequest()
rm = request.resource_metrics.add()
rm.resource.attributes.add(key="service.name").value.string_value = "bench"
scope = rm.scope_metrics.add()
for m in range(10):
    metric = scope.metrics.add(name=f"bench_metric_{m}")
    for p in range(points // 10):
        point = metric.gauge.data_points.add(as_double=p * 1.5, time_unix_nano=1_700_000_000_000_000_000 + p)
        point.attributes.add(key="instance").value.string_value = f"host-{p}"
body = request.SerializeToString()
open(f"{work}/export.bin", "wb").write(body)
open(f"{work}/export.grpc", "wb").write(b"\0" + struct.pack(">I", len(body)) + body)
print(f"export: {len(body)} bytes, {points} points")
EOF

BACKEND=127.0.0.1:18700
cat > "$WORK/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log;
events { worker_connections 4096; }
http {
  log_format path '\$request_uri';
  access_log $WORK/backend-access.log path;
  keepalive_requests 10000000;
  server {
    listen $BACKEND;
    client_body_buffer_size 64k;
    location = /opentelemetry/v1/metrics { return 200; }
    location / { return 200 'OK'; }
  }
}
EOF
taskset -c 1 nginx -c "$WORK/backend.conf" &
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18700) 2>/dev/null && break; sleep 0.1; done

cat > "$WORK/mirador.toml" <<EOF
[server]
listen = ["127.0.0.1:18711"]
threads = 1
http2 = true
grace_period = "0s"
pid_file = "$WORK/mirador.pid"
upgrade_sock = "$WORK/mirador.sock"
otlp_grpc_listen = "127.0.0.1:18717"
[admin]
listen = "127.0.0.1:18712"
[health_check]
interval = "5s"
[tenants.bench.metrics]
endpoints = ["http://$BACKEND"]
[tenants.bench.quotas]
requests_per_second = 10000000
max_concurrent_requests = 100000
max_body_bytes = 1048576
EOF
RUST_LOG=warn taskset -c 0 target/release/mirador-router --config "$WORK/mirador.toml" > "$WORK/mirador.log" 2>&1 &
PID=$!
# Ready once an export goes through (the endpoint probed healthy).
for _ in $(seq 100); do
  status=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-tenant-id: bench' -H 'content-type: application/x-protobuf' \
    --data-binary @"$WORK/export.bin" http://127.0.0.1:18711/opentelemetry/v1/metrics || true)
  [ "$status" = 200 ] && (exec 3<>/dev/tcp/127.0.0.1/18717) 2>/dev/null && break
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICKS=$(getconf CLK_TCK)

run() {
  local name=$1; shift
  : > "$WORK/backend-access.log"
  local before after out done
  before=$(cpu_ticks)
  out=$(taskset -c 1 h2load -D "$SECONDS_PER_RUN" "$@" 2>&1)
  after=$(cpu_ticks)
  done=$(echo "$out" | awk '/^requests:/ {print $6}')
  local succeeded
  succeeded=$(echo "$out" | awk '/^status codes:/ {print $3}')
  sleep 0.2
  local arrived
  arrived=$(grep -c '^/opentelemetry/v1/metrics$' "$WORK/backend-access.log" || true)
  awk -v name="$name" -v n="$done" -v ok="$succeeded" -v arrived="$arrived" -v s="$SECONDS_PER_RUN" \
      -v ticks=$((after - before)) -v hz="$TICKS" 'BEGIN {
    printf "| %s | %.0f | %.1f | %d | %d |\n", name, n / s, (n > 0 ? ticks / hz * 1e6 / n : 0), ok, arrived
  }'
}

echo "| client → router | exports/s | router CPU µs/export | 2xx answers | exports at the backend |"
echo "|---|---|---|---|---|"
GRPC=(-H 'content-type: application/grpc' -H 'te: trailers' -H 'x-tenant-id: bench' -d "$WORK/export.grpc")
HTTP=(-H 'content-type: application/x-protobuf' -H 'x-tenant-id: bench' -d "$WORK/export.bin")
for round in $(seq "${ROUNDS:-2}"); do
  run "OTLP/gRPC, h2c 8×8 (round $round)" -c 8 -m 8 "${GRPC[@]}" \
    http://127.0.0.1:18717/opentelemetry.proto.collector.metrics.v1.MetricsService/Export
  run "OTLP/HTTP, h2c 8×8 (round $round)" -c 8 -m 8 "${HTTP[@]}" http://127.0.0.1:18711/opentelemetry/v1/metrics
  run "OTLP/HTTP, HTTP/1.1 ×64 (round $round)" --h1 -c 64 "${HTTP[@]}" http://127.0.0.1:18711/opentelemetry/v1/metrics
done
# A gRPC answer is HTTP 200 whatever its grpc-status: the backend's count is
# the check that every call was delivered (it runs ahead of the answers by
# the calls in flight when h2load stops). Errors in the router's log, but for
# the clients h2load cuts off at the end of each run:
grep ' error' "$WORK/mirador.log" | grep -v 'error=Downstream' | head -5 || true
