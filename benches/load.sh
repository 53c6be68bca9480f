#!/usr/bin/env bash
# Load benchmark: mirador-router against nginx, HAProxy and a bare Pingora
# floor (examples/floor.rs), side by side in one run.
#
#   benches/load.sh [seconds per run, default 10] [rounds, default 2]
#
# Loopback only. Backends: one nginx worker serving a ~100-byte 200, a 16 KiB
# file, and a 204 sink for POSTs. Every proxy runs with one worker/thread,
# pinned alone on CPU 0; wrk (1 thread, 64 connections) and the backends share
# CPU 1. Three scenarios: small GET, 16 KiB GET, 4 KiB POST (a remote write). Proxies take
# turns, the order flipped every round. Reported per proxy and scenario: req/s,
# p50, p99, the proxy's CPU time per request (from /proc/<pid>/stat over the
# run — on 2 CPUs req/s saturates, so this is the figure to compare), its
# ratio to nginx's, and peak RSS. mirador-router runs with every feature on:
# health checks, metrics, quotas configured, access log off.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-2}

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin mirador-router --example floor --example remote_write_body
WORK=$(mktemp -d)
chmod 755 "$WORK"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT

BACKEND=127.0.0.1:18600
# The backend's second address: vmselect of the shared-cluster variant.
BACKEND_SELECT=127.0.0.1:18601
head -c 16384 /dev/zero | tr '\0' 'v' > "$WORK/big.json"
chmod 644 "$WORK/big.json"
cat > "$WORK/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  server {
    listen $BACKEND;
    listen $BACKEND_SELECT;
    # The same answers at a shared cluster's paths (mirador-shared).
    location = /select/1:0/prometheus/api/v1/query { return 200 '{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched":"0"}}'; }
    location = /select/1:0/prometheus/api/v1/export { default_type application/json; alias $WORK/big.json; }
    location = /insert/1:0/prometheus/api/v1/write { client_body_buffer_size 16k; return 204; }
    location = /api/v1/query { return 200 '{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched":"0"}}'; }
    location = /api/v1/export { default_type application/json; alias $WORK/big.json; }
    location = /api/v1/write { client_body_buffer_size 16k; return 204; }
    location / { return 200 'OK'; }
  }
}
EOF
taskset -c 1 nginx -c "$WORK/backend.conf" &

# The proxies, each on its own port, all pinned to CPU 0.
cat > "$WORK/mirador.toml" <<EOF
[server]
listen = ["127.0.0.1:18611"]
threads = 1
grace_period = "0s"
pid_file = "$WORK/mirador.pid"
upgrade_sock = "$WORK/mirador.sock"
[server.signal_listeners]
metrics = "127.0.0.1:18610"
[admin]
listen = "127.0.0.1:18612"
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
MIRADOR_PID=$!
# The same router with Pingora's work stealing on (the default is off), for the A/B.
sed -e 's/18610/18650/; s/18611/18651/; s/18612/18652/; s/mirador\.pid/mirador-ws.pid/; s/mirador\.sock/mirador-ws.sock/' \
    -e 's/^threads = 1$/threads = 1\nwork_stealing = true/' "$WORK/mirador.toml" > "$WORK/mirador-ws.toml"
RUST_LOG=warn taskset -c 0 target/release/mirador-router --config "$WORK/mirador-ws.toml" > "$WORK/mirador-ws.log" 2>&1 &
MIRADOR_WS_PID=$!
# And with metrics off, for what recording metrics costs.
sed -e 's/18610/18660/; s/18611/18661/; s/18612/18662/; s/mirador\.pid/mirador-nm.pid/; s/mirador\.sock/mirador-nm.sock/' \
    "$WORK/mirador.toml" > "$WORK/mirador-nm.toml"
printf '[observability]\nmetrics = false\n' >> "$WORK/mirador-nm.toml"
RUST_LOG=warn taskset -c 0 target/release/mirador-router --config "$WORK/mirador-nm.toml" > "$WORK/mirador-nm.log" 2>&1 &
MIRADOR_NM_PID=$!
# And with the tenant on a shared cluster (vminsert and vmselect: the
# backend's two addresses), for what the cluster rewrite costs.
sed -e 's/18610/18680/; s/18611/18681/; s/18612/18682/; s/mirador\.pid/mirador-shared.pid/; s/mirador\.sock/mirador-shared.sock/' \
    -e "s|^endpoints = \[\"http://$BACKEND\"\]$|account_id = 1\ninsert_endpoints = [\"http://$BACKEND\"]\nselect_endpoints = [\"http://$BACKEND_SELECT\"]|" \
    "$WORK/mirador.toml" > "$WORK/mirador-shared.toml"
grep -q '^account_id = 1$' "$WORK/mirador-shared.toml"
RUST_LOG=warn taskset -c 0 target/release/mirador-router --config "$WORK/mirador-shared.toml" > "$WORK/mirador-shared.log" 2>&1 &
MIRADOR_SHARED_PID=$!
# And with the tenant's metrics migrating (phase mirror): every POST is also
# copied, off the request path, to the backend's second address; its CPU is
# in the same process, so the figure includes the copy.
sed -e 's/18610/18690/; s/18611/18691/; s/18612/18692/; s/mirador\.pid/mirador-mirror.pid/; s/mirador\.sock/mirador-mirror.sock/' \
    "$WORK/mirador.toml" > "$WORK/mirador-mirror.toml"
printf '[tenants.bench.metrics.migration]\nto = { endpoints = ["http://%s"] }\nphase = "mirror"\n' "$BACKEND_SELECT" >> "$WORK/mirador-mirror.toml"
RUST_LOG=warn taskset -c 0 target/release/mirador-router --config "$WORK/mirador-mirror.toml" > "$WORK/mirador-mirror.log" 2>&1 &
MIRADOR_MIRROR_PID=$!
# A baseline build (say, of the commit before a change), for a before/after
# A/B in the same run:
#   BASELINE_BIN=/tmp/mirador-before PROXIES="mirador mirador-base floor" benches/load.sh 10 2
MIRADOR_BASE_PID=0
if [ -n "${BASELINE_BIN:-}" ]; then
  sed -e 's/18610/18670/; s/18611/18671/; s/18612/18672/; s/mirador\.pid/mirador-base.pid/; s/mirador\.sock/mirador-base.sock/' \
      "$WORK/mirador.toml" > "$WORK/mirador-base.toml"
  RUST_LOG=warn taskset -c 0 "$BASELINE_BIN" --config "$WORK/mirador-base.toml" > "$WORK/mirador-base.log" 2>&1 &
  MIRADOR_BASE_PID=$!
fi
taskset -c 0 target/release/examples/floor 127.0.0.1:18620 "$BACKEND" > "$WORK/floor.log" 2>&1 &
FLOOR_PID=$!
cat > "$WORK/proxy.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/proxy.pid;
error_log $WORK/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream backend { server $BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:18630;
    client_body_buffer_size 16k;
    location / {
      if (\$http_x_tenant_id = "") { return 401; }
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
taskset -c 0 nginx -c "$WORK/proxy.conf" &
# nginx with its `mirror` directive (a fire-and-forget subrequest of every
# request, to the backend's second address): the peer of mirador-mirror, for
# what one copy of each POST costs a proxy. GETs are answered by the mirror
# location itself (a subrequest, no upstream), so only its POST is a copy.
sed -e "s|$WORK/proxy.pid|$WORK/proxy-mirror.pid|; s|127.0.0.1:18630|127.0.0.1:18635|" \
    -e "s|^  upstream backend .*|&\n  upstream mirror_target { server $BACKEND_SELECT; keepalive 128; }|" \
    -e 's|^      proxy_pass http://backend;|      mirror /mirror;\n&|' \
    -e "s|^  server {|&\n    location = /mirror {\n      internal;\n      if (\$request_method != POST) { return 204; }\n      proxy_pass http://mirror_target\$request_uri;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }|" \
    "$WORK/proxy.conf" > "$WORK/proxy-mirror.conf"
grep -q 'mirror /mirror;' "$WORK/proxy-mirror.conf"
taskset -c 0 nginx -c "$WORK/proxy-mirror.conf" &
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:18640
  http-request deny deny_status 401 unless { req.hdr(x-tenant-id) -m found }
  default_backend be
backend be
  server b1 $BACKEND
EOF
taskset -c 0 haproxy -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!

wait_up() { for _ in $(seq 200); do curl -s -o /dev/null -H 'X-Tenant-ID: bench' "http://$1/api/v1/query" && return; sleep 0.05; done; echo "no $1" >&2; exit 1; }
for addr in "$BACKEND" 127.0.0.1:18610 127.0.0.1:18650 127.0.0.1:18660 127.0.0.1:18680 127.0.0.1:18690 127.0.0.1:18620 127.0.0.1:18630 127.0.0.1:18635 127.0.0.1:18640; do wait_up "$addr"; done
if [ "$MIRADOR_BASE_PID" != 0 ]; then wait_up 127.0.0.1:18670; fi
NGINX_PROXY_PID=$(pgrep -P "$(cat "$WORK/proxy.pid")" | head -1)
NGINX_MIRROR_PID=$(pgrep -P "$(cat "$WORK/proxy-mirror.pid")" | head -1)

declare -A PORT=([mirador]=18610 [mirador-ws]=18650 [mirador-nometrics]=18660 [mirador-base]=18670 [mirador-shared]=18680 [mirador-mirror]=18690 [floor]=18620 [nginx]=18630 [nginx-mirror]=18635 [haproxy]=18640)
declare -A PID=([mirador]=$MIRADOR_PID [mirador-ws]=$MIRADOR_WS_PID [mirador-nometrics]=$MIRADOR_NM_PID [mirador-base]=$MIRADOR_BASE_PID [mirador-shared]=$MIRADOR_SHARED_PID [mirador-mirror]=$MIRADOR_MIRROR_PID [floor]=$FLOOR_PID [nginx]=$NGINX_PROXY_PID [nginx-mirror]=$NGINX_MIRROR_PID [haproxy]=$HAPROXY_PID)
# The POST: a Prometheus remote write of ~4 KiB (317 series of a node
# exporter's shape, snappy-compressed), as vmagent sends it.
target/release/examples/remote_write_body 4096 > "$WORK/post.bin" 2>/dev/null
cat > "$WORK/post.lua" <<EOF
wrk.method = "POST"
local f = assert(io.open("$WORK/post.bin", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["X-Tenant-ID"] = "bench"
wrk.headers["Content-Type"] = "application/x-protobuf"
wrk.headers["Content-Encoding"] = "snappy"
wrk.headers["X-Prometheus-Remote-Write-Version"] = "0.1.0"
EOF
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
RESULTS="$WORK/results"
: > "$RESULTS"

run() { # proxy scenario round
  local port=${PORT[$1]} pid=${PID[$1]} args=()
  case $2 in
    small) args=(-H 'X-Tenant-ID: bench' "http://127.0.0.1:$port/api/v1/query") ;;
    big) args=(-H 'X-Tenant-ID: bench' "http://127.0.0.1:$port/api/v1/export") ;;
    post) args=(-s "$WORK/post.lua" "http://127.0.0.1:$port/api/v1/write") ;;
  esac
  taskset -c 1 wrk -t1 -c64 -d1s "${args[@]}" > /dev/null
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" --latency "${args[@]}")
  after=$(cpu_ticks "$pid")
  local requests rps p50 p99 errors
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {printf "%s ", $0}')
  echo "$1 $2 $3 $requests $(( after - before )) $rps $p50 $p99 ${errors:-ok}" >> "$RESULTS"
}

# PROXIES="mirador nginx" benches/load.sh runs a subset (nginx and floor are the
# references). Variants for A/Bs: mirador-ws (Pingora's work stealing on),
# mirador-nometrics (`[observability] metrics = false`), mirador-shared (the
# tenant on a shared cluster: every path rewritten to its cluster form),
# mirador-mirror (the tenant's metrics in migration phase mirror; its peer:
# nginx-mirror, nginx with `mirror`):
#   PROXIES="mirador mirador-nometrics" benches/load.sh 10 4
# SCENARIOS="post" runs a subset of the scenarios (default: small big post).
read -r -a ORDER <<< "${PROXIES:-mirador floor nginx haproxy}"
read -r -a SCENARIO_LIST <<< "${SCENARIOS:-small big post}"
for round in $(seq "$ROUNDS"); do
  for scenario in "${SCENARIO_LIST[@]}"; do
    order=("${ORDER[@]}")
    if [ $(( round % 2 )) -eq 0 ]; then
      order=(); for (( i=${#ORDER[@]}-1; i>=0; i-- )); do order+=("${ORDER[$i]}"); done
    fi
    for proxy in "${order[@]}"; do run "$proxy" "$scenario" "$round"; done
  done
done

rss() { [ "$1" != 0 ] && awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" || echo -; }
echo "machine: $(nproc) CPUs, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs); ${SECONDS_PER_RUN}s x ${ROUNDS} rounds per cell"
echo
awk -v hz="$TICKS" -v rss_mirador="$(rss "$MIRADOR_PID")" -v rss_ws="$(rss "$MIRADOR_WS_PID")" -v rss_nm="$(rss "$MIRADOR_NM_PID")" -v rss_base="$(rss "$MIRADOR_BASE_PID")" -v rss_shared="$(rss "$MIRADOR_SHARED_PID")" -v rss_mirror="$(rss "$MIRADOR_MIRROR_PID")" -v rss_floor="$(rss "$FLOOR_PID")" \
    -v rss_nginx="$(rss "$NGINX_PROXY_PID")" -v rss_nginx_mirror="$(rss "$NGINX_MIRROR_PID")" -v rss_haproxy="$(rss "$HAPROXY_PID")" -v proxies="${ORDER[*]}" -v scenario_list="${SCENARIO_LIST[*]}" '
  { req[$2" "$1] += $4; ticks[$2" "$1] += $5; rps[$2" "$1] = rps[$2" "$1] " " $6; p50[$2" "$1] = p50[$2" "$1] " " $7; p99[$2" "$1] = p99[$2" "$1] " " $8; if ($9 != "ok") err[$2" "$1] = err[$2" "$1] " " $9 }
  END {
    rssof["mirador"] = rss_mirador; rssof["mirador-ws"] = rss_ws; rssof["mirador-nometrics"] = rss_nm; rssof["mirador-base"] = rss_base; rssof["mirador-shared"] = rss_shared; rssof["mirador-mirror"] = rss_mirror; rssof["floor"] = rss_floor; rssof["nginx"] = rss_nginx; rssof["nginx-mirror"] = rss_nginx_mirror; rssof["haproxy"] = rss_haproxy
    ns = split(scenario_list, scenarios, " "); n = split(proxies, list, " ")
    printf "%-8s %-17s %-24s %-20s %-20s %10s %9s %9s %8s\n", "scenario", "proxy", "req/s (rounds)", "p50 (rounds)", "p99 (rounds)", "cpu us/req", "x nginx", "x floor", "rss MiB"
    for (s = 1; s <= ns; s++) {
      nginx_cpu = req[scenarios[s]" nginx"] ? ticks[scenarios[s]" nginx"] / hz * 1e6 / req[scenarios[s]" nginx"] : 0
      floor_cpu = req[scenarios[s]" floor"] ? ticks[scenarios[s]" floor"] / hz * 1e6 / req[scenarios[s]" floor"] : 0
      for (p = 1; p <= n; p++) {
        k = scenarios[s]" "list[p]
        cpu = ticks[k] / hz * 1e6 / req[k]
        x_nginx = nginx_cpu ? sprintf("%.2f", cpu / nginx_cpu) : "-"
        x_floor = floor_cpu ? sprintf("%.2f", cpu / floor_cpu) : "-"
        printf "%-8s %-17s %-24s %-20s %-20s %10.2f %9s %9s %8s%s\n", scenarios[s], list[p], rps[k], p50[k], p99[k], cpu, x_nginx, x_floor, rssof[list[p]], err[k]
      }
    }
  }' "$RESULTS"
# The mirror's own throughput: copies delivered and dropped over the POST runs.
if [[ " ${ORDER[*]} " == *" mirador-mirror "* ]]; then
  sleep 2
  posts=$(awk '$1=="mirador-mirror" && $2=="post" {n += $4} END {print n+0}' "$RESULTS")
  curl -s http://127.0.0.1:18692/api/v1/tenants/bench/migration | python3 -c '
import json, sys
m = json.load(sys.stdin)["migrations"]["metrics"]["mirror"]
posts, seconds = int(sys.argv[1]), float(sys.argv[2])
ok, full, failed, queued, sent = m["ok"], m["dropped_queue_full"], m["failed"], m["queued"], m["sent"]
print(f"mirror: {posts} POSTs answered, {ok} copies delivered ({ok / seconds:.0f}/s over the POST runs) "
      f"in {sent} requests ({ok / max(sent, 1):.1f} copies each), "
      f"{full} dropped (queue full), {failed} failed, {queued} still queued")
' "$posts" "$(( SECONDS_PER_RUN * ROUNDS ))"
fi
