#!/usr/bin/env bash
# Batch benchmark, run on demand, against one release gateway serving the built-in mock:
#   (a) a 10,000-request batch on a model whose provider key is limited to 200 req/s, once
#       with a limit-req bucket (rate 200, burst 20) and once with a limit-count window
#       (200 per 1 s): the achieved rate as a share of the limit (target: >= 95%)
#   (b) a 50,000-request batch on an unlimited model: the RSS it adds to the gateway,
#       sampled until it completes and its output is downloaded (target: < 100 MiB; input
#       and output are streamed, not held in memory)
# Both with the default SQLite store, then again with batches in Redis (a redis-server on
# loopback, limits policy redis), for comparison.
# Traffic goes to 127.0.0.1 only; every run is bounded by the batch sizes.
#
#   benches/batch.sh            # defaults: RATE_N=10000 RSS_N=50000
set -euo pipefail
cd "$(dirname "$0")/.."
RATE_N=${RATE_N:-10000}
RSS_N=${RSS_N:-50000}
. benches/common.sh
GW=$(port); GWM=$(port); RGW=$(port); RGWM=$(port); RP=$(port)
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)"; exit 1; }

cat > "$tmp/gateway.yaml" <<YAML
server: {threads: 2}
logging: {access_log: false, level: warn}
consumers: [{name: bench, keys: [sk-bench]}]
providers: [{name: mock, kind: mock}]
models:
  - name: bucket
    deployments: [{provider: mock, limits: [{name: key-rps, req: {rate: 200, burst: 20, nodelay: true}}]}]
  - name: window
    deployments: [{provider: mock, limits: [{name: key-rps, count: {count: 200, time_window: 1s}}]}]
  - name: free
    deployments: [{provider: mock}]
batch: {data_dir: "$tmp/data", concurrency: 32}
reload: {watch: false}
YAML
sed -e "s|^reload:|limits: {policy: redis, redis: {url: \"redis://127.0.0.1:$RP\"}}\nreload:|" \
  "$tmp/gateway.yaml" > "$tmp/gateway-redis.yaml"
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$tmp/redis.log" 2>&1 & pids+=($!)

run() { # config listen metrics log → pid
  "$BIN" run --config "$1" --listen 127.0.0.1:$2 --metrics-listen 127.0.0.1:$3 >"$4" 2>&1 & pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$3/ready" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$3/ready" >/dev/null || { cat "$4"; exit 1; }
}
for store in sqlite redis; do
  if [ $store = sqlite ]; then run "$tmp/gateway.yaml" $GW $GWM "$tmp/gw.log"; port=$GW
  else run "$tmp/gateway-redis.yaml" $RGW $RGWM "$tmp/rgw.log"; port=$RGW; fi
  pid=${pids[-1]}
  echo "== batch store: $store"
  drive() { python3 benches/batch.py "http://127.0.0.1:$port" "$@"; }
  drive rss "$RSS_N" "$pid"
  drive rate "$RATE_N" bucket 200
  drive rate "$RATE_N" window 200
  echo "gateway RSS at the end: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)"
  kill "$pid"
done
