#!/usr/bin/env bash
# What recording metrics costs: the release router with [observability]
# metrics = true against the same router with metrics = false, side by side
# in one run, the order flipping every round (AB BA AB ...) so neither
# variant always runs first.
#
#   benches/metrics_overhead.sh [seconds per run, default 10] [rounds, default 2]
#
# Loopback only. nginx (one worker) is the backend: a ~100-byte 200 answer.
# The router runs alone on CPU 0 with one worker thread; nginx and wrk
# (1 thread, 64 connections, small GETs on the drop-in metrics listener) share
# CPU 1. Reports req/s, latency and the router's CPU time per request (from
# /proc/<pid>/stat over the run), the figure to compare on 2 CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-2}

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
ROUTER=target/release/mirador-router
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.2; rm -rf "$WORK"' EXIT

BACKEND=127.0.0.1:18500
cat > "$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen $BACKEND;
    location / { return 200 "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[]},\"stats\":{\"seriesFetched\":\"0\"}}\n"; }
  }
}
EOF
taskset -c 1 nginx -c "$WORK/nginx.conf" &
for _ in $(seq 100); do curl -s -o /dev/null "http://$BACKEND/health" && break; sleep 0.05; done

write_config() { # name metrics port
  cat > "$WORK/$1.toml" <<EOF
[server]
listen = ["127.0.0.1:$(( $3 + 1 ))"]
threads = 1
grace_period = "0s"
pid_file = "$WORK/$1.pid"
upgrade_sock = "$WORK/$1.sock"
[server.signal_listeners]
metrics = "127.0.0.1:$3"
[admin]
listen = "127.0.0.1:$(( $3 + 2 ))"
[observability]
metrics = $2
[health_check]
interval = "5s"
[tenants.bench.metrics]
endpoints = ["http://$BACKEND"]
EOF
}
write_config metrics_on true 18510
write_config metrics_off false 18520

start_router() { # name port -> pid
  RUST_LOG=warn taskset -c 0 "$ROUTER" --config "$WORK/$1.toml" > "$WORK/$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do curl -s -o /dev/null -H 'X-Tenant-ID: bench' "http://127.0.0.1:$2/api/v1/query" && break; sleep 0.05; done
  echo "$pid"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

printf '%-12s %5s %10s %9s %9s %12s %9s\n' variant round req/s p50 p99 "cpu µs/req" "rss MiB"
declare -A total_cpu total_req
for round in $(seq "$ROUNDS"); do
  order="metrics_on metrics_off"; [ $(( round % 2 )) -eq 0 ] && order="metrics_off metrics_on"
  for variant in $order; do
    port=18510; [ "$variant" = metrics_off ] && port=18520
    pid=$(start_router "$variant" "$port")
    # warm-up: connections and pools
    taskset -c 1 wrk -t1 -c64 -d1s -H 'X-Tenant-ID: bench' "http://127.0.0.1:$port/api/v1/query" >/dev/null
    before=$(cpu_ticks "$pid")
    out=$(taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" --latency -H 'X-Tenant-ID: bench' "http://127.0.0.1:$port/api/v1/query")
    after=$(cpu_ticks "$pid")
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
    cpu_us=$(awk -v t=$(( after - before )) -v hz="$TICKS" -v n="$requests" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
    printf '%-12s %5s %10s %9s %9s %12s %9s %s\n' "$variant" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$rss" "$errors"
    total_cpu[$variant]=$(( ${total_cpu[$variant]:-0} + after - before ))
    total_req[$variant]=$(( ${total_req[$variant]:-0} + requests ))
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
on=$(awk -v t="${total_cpu[metrics_on]}" -v hz="$TICKS" -v n="${total_req[metrics_on]}" 'BEGIN {print t / hz * 1e6 / n}')
off=$(awk -v t="${total_cpu[metrics_off]}" -v hz="$TICKS" -v n="${total_req[metrics_off]}" 'BEGIN {print t / hz * 1e6 / n}')
awk -v on="$on" -v off="$off" 'BEGIN {printf "\ncpu µs/request over all rounds: metrics on %.2f, off %.2f, on/off = %.3f\n", on, off, on / off}'
