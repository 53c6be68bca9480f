#!/usr/bin/env bash
# What the usage collector costs: router CPU per deployment read, and the
# requests it sends.
#
#   benches/usage.sh [deployments, default 100] [seconds, default 30]
#
# A real VictoriaMetrics (Debian `victoria-metrics`) is started and given
# 10,000 series; its own `/metrics` answer (~36 KB, ~650 lines) is then
# served by one nginx worker on N ports, one "deployment" per tenant (N
# VictoriaMetrics processes would not fit on 2 CPUs; what the collector reads
# and parses is VictoriaMetrics' own text). Two routers, each with the same N
# tenants, pinned to CPU 0: one with `usage_interval = "1s"`, one with
# `"0s"` (off): the difference in CPU (from /proc/<pid>/task/*/schedstat,
# nanoseconds) over the run, divided by the `/metrics` reads nginx logged,
# is the CPU of one read. Reported: reads, CPU per read, and what that makes
# at the default 60 s interval (requests per minute and CPU share for N).
# The run fails when the collector read nothing or reported no usage.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
SECS=${2:-30}
command -v victoria-metrics >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics >/dev/null
command -v nginx >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
cargo build --release --quiet --bin mirador-router
WORK=$(mktemp -d)
chmod 755 "$WORK"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT

taskset -c 1 victoria-metrics -storageDataPath="$WORK/vm" -httpListenAddr=127.0.0.1:18799 > "$WORK/vm.log" 2>&1 &
VM=$!
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:18799/health && break; sleep 0.1; done
python3 -c 'import sys; sys.stdout.write("".join(f"bench_series{{n=\"{i}\",job=\"j{i % 10}\"}} {i}\n" for i in range(10000)))' \
  | curl -sf -X POST --data-binary @- http://127.0.0.1:18799/api/v1/import/prometheus
curl -sf -o /dev/null http://127.0.0.1:18799/internal/force_flush
sleep 1
curl -sf http://127.0.0.1:18799/metrics > "$WORK/metrics.txt"
grep -q '^vm_data_size_bytes' "$WORK/metrics.txt"
kill "$VM"

{
  echo "worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx-error.log;"
  echo "events { worker_connections 4096; }"
  echo "http { keepalive_requests 10000000; log_format reads \$request_uri; access_log $WORK/reads.log reads; server {"
  for i in $(seq "$N"); do echo "  listen 127.0.0.1:$(( 19000 + i ));"; done
  echo "  location = /metrics { default_type text/plain; alias $WORK/metrics.txt; }"
  echo "  location / { access_log off; return 200 'OK'; }"
  echo "} }"
} > "$WORK/nginx.conf"
chmod 644 "$WORK/metrics.txt"
taskset -c 1 nginx -c "$WORK/nginx.conf" &

config() { # admin port, usage interval
  printf '[server]\nlisten = ["127.0.0.1:%s"]\nthreads = 1\ngrace_period = "0s"\npid_file = "%s/%s.pid"\nupgrade_sock = "%s/%s.sock"\n' \
    "$(( $1 + 1 ))" "$WORK" "$1" "$WORK" "$1"
  printf '[admin]\nlisten = "127.0.0.1:%s"\n[observability]\nusage_interval = "%s"\n' "$1" "$2"
  for i in $(seq "$N"); do printf '[tenants.t%s.metrics]\nendpoints = ["http://127.0.0.1:%s"]\n' "$i" "$(( 19000 + i ))"; done
}
config 18710 0s > "$WORK/off.toml"
config 18720 1s > "$WORK/on.toml"
RUST_LOG=warn taskset -c 0 target/release/mirador-router --config "$WORK/off.toml" > "$WORK/off.log" 2>&1 &
OFF=$!
RUST_LOG=warn taskset -c 0 target/release/mirador-router --config "$WORK/on.toml" > "$WORK/on.log" 2>&1 &
ON=$!
for port in 18710 18720; do
  for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.05; done
done
sleep 3 # the first round, and the health probes' first pass

cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{n += $1} END {printf "%d", n}'; }
reads() { wc -l < "$WORK/reads.log"; }
off0=$(cpu_ns "$OFF"); on0=$(cpu_ns "$ON"); reads0=$(reads)
sleep "$SECS"
off1=$(cpu_ns "$OFF"); on1=$(cpu_ns "$ON"); reads1=$(reads)

usage=$(curl -sf "http://127.0.0.1:18720/api/v1/tenants/t$N/usage")
echo "$usage" | python3 -c 'import json, sys; u = json.load(sys.stdin)["usage"]["metrics"]; assert u["storage_bytes"] > 0 and u["rows"] > 0, u'
python3 - "$N" "$SECS" "$(( on1 - on0 ))" "$(( off1 - off0 ))" "$(( reads1 - reads0 ))" <<'EOF'
import sys
n, secs, on, off, reads = (int(a) for a in sys.argv[1:])
assert reads > 0, "the collector read nothing"
per_read = (on - off) / reads
print(f"{n} deployments, {secs} s at usage_interval 1s: {reads} reads of /metrics ({reads / secs:.0f}/s)")
print(f"router CPU: {on / 1e6:.0f} ms with the collector, {off / 1e6:.0f} ms without (health probes, timers)")
print(f"collector CPU per read: {per_read / 1e3:.0f} us")
print(f"at the default 60s: {n} requests per minute to deployments, {per_read * n / 60 / 1e9 * 100:.4f} % of one CPU")
EOF
