#!/usr/bin/env bash
# TLS and HTTP/2 load benchmark: mirador-router against nginx, side by side in
# one run, both terminating TLS with the same certificate (ECDSA P-256, made
# here with openssl) and proxying to the same plain-HTTP nginx backend.
#
#   benches/tls.sh [seconds per run, default 10] [rounds, default 2]
#   MIRADOR_BIN=/path/to/mirador-router benches/tls.sh 10 2   # no cargo build
#
# Loopback only, the same layout as benches/load.sh: each proxy runs with one
# worker/thread, pinned alone on CPU 0; the load generator and the backend (one
# nginx worker serving a ~100-byte 200) share CPU 1. Proxies take turns, the
# order flipped every round. Four scenarios:
#   tls-new     full TLS handshakes, one after another (openssl s_time -new;
#               the client's default, TLS 1.3), no request: conn/s
#   tls12-resume  resumed handshakes (openssl s_time -reuse -tls1_2: s_time
#               sends no request, so with TLS 1.3 it never reads the session
#               ticket and never resumes); every connection is checked to be
#               resumed (the "resumed" note: s_time's 'r' marks)
#   https       HTTPS keep-alive small GETs, wrk -t1 -c64 (HTTP/1.1)
#   h2          HTTP/2 multiplexed small GETs, h2load -c16 -m10 (ALPN h2;
#               p50/p99 from h2load's per-request log)
# Reported per proxy and scenario: handshakes or requests per second, p50, p99,
# the proxy's CPU time per handshake or request (utime+stime from
# /proc/<pid>/stat over the run — on 2 CPUs the rate is bounded by the client
# and the backend, so this is the figure to compare), its ratio to nginx's,
# and peak RSS (VmHWM). A run that failed (a proxy not answering or gone, a
# failed handshake, no resumption, socket errors, non-2xx answers, h2 not
# negotiated) stops the bench with FAILED and exit 1, and no table.
# mirador-router runs as load.sh runs it: health checks, metrics, quotas on,
# access log off.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-2}
# A subset: SCENARIOS="tls-new h2" benches/tls.sh. mirador's RUST_LOG (load.sh's
# warn by default): MIRADOR_RUST_LOG=off shows what its logging costs.
SCENARIOS=${SCENARIOS:-tls-new tls12-resume https h2}
MIRADOR_RUST_LOG=${MIRADOR_RUST_LOG:-warn}
for scenario in $SCENARIOS; do
  case $scenario in tls-new|tls12-resume|https|h2) ;; *) echo "FAILED: unknown scenario $scenario" >&2; exit 1 ;; esac
done

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${MIRADOR_BIN:-}" ]; then
  cargo build --release --quiet --bin mirador-router
  MIRADOR_BIN=target/release/mirador-router
fi
[ -x "$MIRADOR_BIN" ] || { echo "FAILED: no mirador-router binary at $MIRADOR_BIN" >&2; exit 1; }
WORK=$(mktemp -d)
chmod 755 "$WORK"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT

BACKEND=127.0.0.1:18700
MIRADOR_PLAIN=127.0.0.1:18711
MIRADOR_ADMIN=127.0.0.1:18712
MIRADOR_TLS=127.0.0.1:18713
NGINX_TLS=127.0.0.1:18730
for addr in "$BACKEND" "$MIRADOR_PLAIN" "$MIRADOR_ADMIN" "$MIRADOR_TLS" "$NGINX_TLS"; do
  if [ -n "$(ss -Hltn "sport = :${addr##*:}")" ]; then
    echo "FAILED: port ${addr##*:} is already in use (a bench left running?)" >&2
    exit 1
  fi
done

fail() { # reason
  echo "FAILED: $*" >&2
  for log in mirador.log proxy-error.log backend-error.log; do
    if [ -s "$WORK/$log" ]; then echo "--- last lines of $log:" >&2; tail -n 20 "$WORK/$log" >&2; fi
  done
  exit 1
}

# The certificate both proxies serve.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
  -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' 2>/dev/null
chmod 644 "$WORK/key.pem" "$WORK/cert.pem"

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
    location = /api/v1/query { return 200 '{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched":"0"}}'; }
    location / { return 200 'OK'; }
  }
}
EOF
taskset -c 1 nginx -c "$WORK/backend.conf" &

# The proxies, each on its own port, both pinned to CPU 0.
cat > "$WORK/mirador.toml" <<EOF
[server]
listen = ["$MIRADOR_PLAIN"]
threads = 1
grace_period = "0s"
pid_file = "$WORK/mirador.pid"
upgrade_sock = "$WORK/mirador.sock"
[[server.tls]]
listen = "$MIRADOR_TLS"
certificates = [{ cert_file = "$WORK/cert.pem", key_file = "$WORK/key.pem" }]
[admin]
listen = "$MIRADOR_ADMIN"
[health_check]
interval = "5s"
[tenants.bench.metrics]
endpoints = ["http://$BACKEND"]
[tenants.bench.quotas]
requests_per_second = 10000000
max_concurrent_requests = 100000
max_body_bytes = 1048576
EOF
"$MIRADOR_BIN" --config "$WORK/mirador.toml" --check > "$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; fail "mirador-router --check refused the bench config"; }
RUST_LOG=$MIRADOR_RUST_LOG taskset -c 0 "$MIRADOR_BIN" --config "$WORK/mirador.toml" > "$WORK/mirador.log" 2>&1 &
MIRADOR_PID=$!

# nginx as the TLS peer. Before 1.25.1 HTTP/2 is a listen parameter.
nginx_version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if [ "$(printf '%s\n1.25.1\n' "$nginx_version" | sort -V | head -1)" = 1.25.1 ]; then
  listen_h2="listen $NGINX_TLS ssl; http2 on;"
else
  listen_h2="listen $NGINX_TLS ssl http2;"
fi
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
    $listen_h2
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
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

wait_up() { # name url pid-to-watch
  local code
  for _ in $(seq 200); do
    code=$(curl -s --cacert "$WORK/cert.pem" -o /dev/null -w '%{http_code}' -H 'X-Tenant-ID: bench' "$2" || true)
    [ "$code" = 200 ] && return
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then fail "$1 exited at start"; fi
    sleep 0.05
  done
  fail "$1 did not answer 200 at $2 (last status: ${code:-none})"
}
wait_up backend "http://$BACKEND/api/v1/query"
wait_up mirador "https://$MIRADOR_TLS/api/v1/query" "$MIRADOR_PID"
wait_up nginx "https://$NGINX_TLS/api/v1/query"
NGINX_PROXY_PID=$(pgrep -P "$(cat "$WORK/proxy.pid")" | head -1)

declare -A PORT=([mirador]=${MIRADOR_TLS##*:} [nginx]=${NGINX_TLS##*:})
declare -A PID=([mirador]=$MIRADOR_PID [nginx]=$NGINX_PROXY_PID)
read -r -a ORDER <<< "mirador nginx"

# What each proxy negotiates with a default client offering h2 (verified
# against the bench's certificate).
for proxy in "${ORDER[@]}"; do
  hello=$(openssl s_client -connect "127.0.0.1:${PORT[$proxy]}" -alpn h2,http/1.1 -CAfile "$WORK/cert.pem" \
            -verify_return_error -verify_ip 127.0.0.1 < /dev/null 2>&1 | tr -d '\0') || { echo "$hello" >&2; fail "$proxy: TLS handshake failed"; }
  alpn=$(echo "$hello" | awk -F': ' '/^ALPN protocol/ {print $2}')
  [ "$alpn" = h2 ] || fail "$proxy: ALPN did not negotiate h2 (${alpn:-none})"
  echo "$hello" | awk -v p="$proxy" '
    /^New, / {sub(/,$/, "", $2); proto = $2; cipher = $NF}
    /^Server Temp Key/ {sub(/^Server Temp Key: /, ""); key = $0}
    /^ALPN protocol/ {alpn = $3}
    /^Verify return code/ {sub(/^Verify return code: /, ""); verify = $0}
    END {printf "negotiated: %-8s %s %s, key exchange %s, ALPN %s, verify %s\n", p, proto, cipher, key, alpn, verify}' >> "$WORK/negotiated"
done

# (In a command substitution, fail's exit ends the subshell and set -e the bench.)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || fail "proxy process $1 is gone"; }
now_ns() { date +%s%N; }
TICKS=$(getconf CLK_TCK)
RESULTS="$WORK/results"
: > "$RESULTS"
alive() { kill -0 "${PID[$1]}" 2>/dev/null || fail "$1 (pid ${PID[$1]}) is gone after $2"; }

# Handshakes: openssl s_time, one connection after another. s_time prints a
# line of one mark per connection: 'r' resumed, '*' a full handshake. It ends
# every connection with SO_LINGER 0 (a reset) as soon as its side of the
# handshake is done, before reading the server's TLS 1.3 session tickets or
# waiting for the server to read its TLS 1.2 Finished: both proxies see a
# reset, and Pingora logs an ERROR "Downstream handshake error ... Connection
# reset by peer" for each (nginx logs these at info, off here) — counted in
# mirador's CPU; MIRADOR_RUST_LOG=off measured it within the noise.
run_handshakes() { # proxy scenario round
  local port=${PORT[$1]} pid=${PID[$1]} args=()
  case $2 in
    tls-new) args=(-new) ;;
    tls12-resume) args=(-reuse -tls1_2) ;;
  esac
  taskset -c 1 openssl s_time -connect "127.0.0.1:$port" "${args[@]}" -time 1 > /dev/null 2>&1 \
    || fail "$1 $2 round $3: warm-up s_time failed"
  local before after t0 t1 out
  before=$(cpu_ticks "$pid"); t0=$(now_ns)
  out=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$port" "${args[@]}" -time "$SECONDS_PER_RUN" 2>&1) \
    || { echo "$out" | tail -n 5 >&2; fail "$1 $2 round $3: s_time failed (a handshake failed)"; }
  t1=$(now_ns); after=$(cpu_ticks "$pid")
  alive "$1" "$2"
  local conns marks resumed full
  conns=$(echo "$out" | awk '/connections in .* real seconds/ {print $1}')
  marks=$(grep -E '^[rt3*]+$' <<< "$out" || true)
  resumed=$(printf '%s' "$marks" | tr -cd 'r' | wc -c)
  full=$(printf '%s' "$marks" | tr -cd '*t3' | wc -c)
  [ "${conns:-0}" -gt 0 ] || fail "$1 $2 round $3: no connections"
  [ $(( resumed + full )) -eq "$conns" ] || fail "$1 $2 round $3: $conns connections but $(( resumed + full )) marks"
  case $2 in
    tls-new) [ "$resumed" -eq 0 ] || fail "$1 $2 round $3: $resumed of $conns 'new' handshakes were resumed" ;;
    tls12-resume) [ "$full" -eq 0 ] || fail "$1 $2 round $3: resumption did not happen on $full of $conns connections" ;;
  esac
  local rate
  rate=$(awk -v n="$conns" -v ns=$(( t1 - t0 )) 'BEGIN {printf "%.0f", n / (ns / 1e9)}')
  echo "$1 $2 $3 $conns $(( after - before )) $rate - - resumed=$resumed/$conns" >> "$RESULTS"
}

run_https() { # proxy scenario round
  local url="https://127.0.0.1:${PORT[$1]}/api/v1/query?query=up" pid=${PID[$1]}
  taskset -c 1 wrk -t1 -c64 -d1s -H 'X-Tenant-ID: bench' "$url" > /dev/null || fail "$1 $2 round $3: warm-up wrk failed"
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" --latency -H 'X-Tenant-ID: bench' "$url") \
    || fail "$1 $2 round $3: wrk failed"
  after=$(cpu_ticks "$pid")
  alive "$1" "$2"
  local requests rps p50 p99 errors
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {printf "%s; ", $0}')
  [ -z "$errors" ] || { echo "$out" >&2; fail "$1 $2 round $3: wrk reported $errors"; }
  [ "${requests:-0}" -gt 0 ] || fail "$1 $2 round $3: no requests"
  echo "$1 $2 $3 $requests $(( after - before )) $rps $p50 $p99 -" >> "$RESULTS"
}

# h2load: the counts line, the status line, ALPN h2, and no connection lost
# mid-run (h2load does not reconnect: a GOAWAY shows as "Process Request
# Failure" and fewer requests).
check_h2() { # proxy round what output
  local out=$4 where="$1 h2 round $2 ($3)"
  grep -q '^Application protocol: h2$' <<< "$out" || { echo "$out" >&2; fail "$where: h2 not negotiated"; }
  if grep -q 'Process Request Failure' <<< "$out"; then
    echo "$out" | grep -v progress >&2; fail "$where: h2load lost connections mid-run"
  fi
  echo "$out" | awk '/^requests:/ {ok = ($8 > 0 && $10 == 0 && $12 == 0 && $14 == 0)} /^status codes:/ {ok2 = ($5 == 0 && $7 == 0 && $9 == 0)} END {exit !(ok && ok2)}' \
    || { echo "$out" | grep -E '^(requests|status codes):' >&2; fail "$where: h2load counted failed, errored, timed-out or non-2xx requests"; }
}
run_h2() { # proxy scenario round
  local url="https://127.0.0.1:${PORT[$1]}/api/v1/query?query=up" pid=${PID[$1]} log="$WORK/h2-$1-$3.log"
  local warm
  warm=$(taskset -c 1 h2load -c 16 -m 10 -D 1 -H 'X-Tenant-ID: bench' "$url" 2>&1) || fail "$1 $2 round $3: warm-up h2load failed"
  check_h2 "$1" "$3" warm-up "$warm"
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 h2load -c 16 -m 10 -D "$SECONDS_PER_RUN" --log-file="$log" -H 'X-Tenant-ID: bench' "$url" 2>&1) \
    || { echo "$out" >&2; fail "$1 $2 round $3: h2load failed"; }
  after=$(cpu_ticks "$pid")
  alive "$1" "$2"
  check_h2 "$1" "$3" run "$out"
  local requests rps pcts
  requests=$(echo "$out" | awk '/^requests:/ {print $8}')
  rps=$(echo "$out" | awk '/^finished in/ {sub(/,$/, "", $4); printf "%.0f", $4}')
  # The log: start time, status, duration in µs, one line per request.
  pcts=$(cut -f3 "$log" | sort -n | awk '
    function fmt(us) { return us < 1000 ? sprintf("%dus", us) : sprintf("%.2fms", us / 1000) }
    { d[NR] = $1 } END { if (NR) printf "%s %s", fmt(d[int(NR * 0.50 + 0.5)]), fmt(d[int(NR * 0.99 + 0.5)]) }')
  rm -f "$log"
  [ -n "$pcts" ] || fail "$1 $2 round $3: h2load wrote no request log"
  echo "$1 $2 $3 $requests $(( after - before )) $rps $pcts -" >> "$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    order=("${ORDER[@]}")
    if [ $(( round % 2 )) -eq 0 ]; then
      order=(); for (( i=${#ORDER[@]}-1; i>=0; i-- )); do order+=("${ORDER[$i]}"); done
    fi
    for proxy in "${order[@]}"; do
      case $scenario in
        tls-new|tls12-resume) run_handshakes "$proxy" "$scenario" "$round" ;;
        https) run_https "$proxy" "$scenario" "$round" ;;
        h2) run_h2 "$proxy" "$scenario" "$round" ;;
      esac
    done
  done
done

for scenario in $SCENARIOS; do
  for proxy in "${ORDER[@]}"; do
    runs=$(awk -v p="$proxy" -v s="$scenario" '$1 == p && $2 == s' "$RESULTS" | wc -l)
    [ "$runs" -eq "$ROUNDS" ] || fail "$proxy $scenario: $runs runs recorded, $ROUNDS expected"
  done
done
rss() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
echo "machine: $(nproc) CPUs, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs); ${SECONDS_PER_RUN}s x ${ROUNDS} rounds per cell; $(nginx -v 2>&1 | sed 's/.*: //'), $(openssl version | awk '{print $1, $2}') clients"
cat "$WORK/negotiated"
echo "tls-new: s_time -new (TLS 1.3, no request); tls12-resume: s_time -reuse -tls1_2; https: wrk -t1 -c64 keep-alive GET; h2: h2load -c16 -m10 GET"
echo "rate: handshakes/s for tls-*, requests/s otherwise; cpu us/op: proxy CPU per handshake or request"
echo
awk -v hz="$TICKS" -v rss_mirador="$(rss "$MIRADOR_PID")" -v rss_nginx="$(rss "$NGINX_PROXY_PID")" -v proxies="${ORDER[*]}" -v scenario_list="$SCENARIOS" '
  { k = $2" "$1; ops[k] += $4; ticks[k] += $5; rate[k] = rate[k] " " $6; p50[k] = p50[k] " " $7; p99[k] = p99[k] " " $8
    if ($9 != "-") { split($9, r, "[=/]"); res[k] += r[2]; tot[k] += r[3] } }
  END {
    rssof["mirador"] = rss_mirador; rssof["nginx"] = rss_nginx
    ns = split(scenario_list, scenarios, " "); np = split(proxies, list, " ")
    printf "%-12s %-8s %-16s %-18s %-18s %10s %8s %8s  %s\n", "scenario", "proxy", "rate (rounds)", "p50 (rounds)", "p99 (rounds)", "cpu us/op", "x nginx", "rss MiB", "note"
    for (s = 1; s <= ns; s++) {
      nk = scenarios[s]" nginx"
      nginx_cpu = ops[nk] ? ticks[nk] / hz * 1e6 / ops[nk] : 0
      for (p = 1; p <= np; p++) {
        k = scenarios[s]" "list[p]
        cpu = ticks[k] / hz * 1e6 / ops[k]
        x_nginx = nginx_cpu ? sprintf("%.2f", cpu / nginx_cpu) : "-"
        note = tot[k] ? sprintf("resumed %d/%d", res[k], tot[k]) : ""
        printf "%-12s %-8s %-16s %-18s %-18s %10.2f %8s %8s  %s\n", scenarios[s], list[p], substr(rate[k], 2), substr(p50[k], 2), substr(p99[k], 2), cpu, x_nginx, rssof[list[p]], note
      }
    }
  }' "$RESULTS"
echo
warnings=$(grep -c -E 'WARN|ERROR' "$WORK/mirador.log" || true)
echo "mirador log: $warnings WARN/ERROR lines"
if [ "$warnings" -gt 0 ]; then
  # The distinct messages, with the timestamps and ids cut.
  grep -E 'WARN|ERROR' "$WORK/mirador.log" | sed -E 's/^[^ ]+ +//; s/[0-9]+(\.[0-9]+){3}:[0-9]+/ADDR/g; s/\(3[0-9a-f]+\)$/(...)/' \
    | cut -c1-300 | sort | uniq -c | sort -rn | head -n 10
fi
echo "nginx proxy error log: $(wc -l < "$WORK/proxy-error.log") lines (level error)"
