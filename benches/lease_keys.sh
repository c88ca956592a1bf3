#!/usr/bin/env bash
# Quota leases with many keys, run on demand: one gateway on the redis policy, CONSUMERS
# consumers (each a request window, a token window and a nodelay leaky bucket) picked at
# random by wrk, after a 2 s warm-up; prints the requests, the redis-server process CPU
# ticks, the script calls and the lease metrics. Loopback only, bounded by DURATION.
#
#   benches/lease_keys.sh        # defaults: CONSUMERS=200 DURATION=8
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=32; DURATION=${DURATION:-8}; CONSUMERS=${CONSUMERS:-200}
. benches/common.sh
UP=$(port); GR=$(port); GRM=$(port); RP=$(port)
static_upstream_conf "$tmp/static.conf" "$UP"
nginx -c "$tmp/static.conf" -g 'daemon off;' & pids+=($!)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & pids+=($!); rpid=$!
consumers=$(many_consumers_yaml "$CONSUMERS")
cat > "$tmp/g.yaml" <<YAML
server: {threads: 1}
logging: {access_log: false, level: warn}
limits: {policy: redis, redis: {url: "redis://127.0.0.1:$RP/0"}}
consumers:
$consumers
providers: [{name: up, kind: openai-compatible, base_url: "http://127.0.0.1:$UP/v1", api_key: sk-upstream}]
models: [{name: bench, deployments: [{provider: up}]}]
reload: {watch: false}
YAML
random_consumer_lua "$tmp/post.lua" "$CONSUMERS"
wait_ports $RP $UP
"$BIN" run --config "$tmp/g.yaml" --listen 127.0.0.1:$GR --metrics-listen 127.0.0.1:$GRM >"$tmp/gr.log" 2>&1 & pids+=($!); gpid=$!
wait_ports $GR
wrk -t1 -c$CONNS -d2s -s "$tmp/post.lua" "http://127.0.0.1:$GR/v1/chat/completions" >/dev/null
redis-cli -p $RP CONFIG RESETSTAT >/dev/null
curl -s "http://127.0.0.1:$GRM/metrics" > "$tmp/m0"
rb=$(ticks $rpid)
n=$(wrk -t1 -c$CONNS -d${DURATION}s -s "$tmp/post.lua" "http://127.0.0.1:$GR/v1/chat/completions" \
  | awk '/requests in/ {print $1}')
rt=$(( $(ticks $rpid) - rb ))
python3 -c "import sys; n, t, hz = map(int, sys.argv[1:]); print(f'{n} requests in ${DURATION} s; redis-server CPU {t / hz / n * 1e6:.2f} µs per request')" "$n" "$rt" "$(getconf CLK_TCK)"
curl -s "http://127.0.0.1:$GRM/metrics" > "$tmp/m1"
redis-cli -p $RP INFO commandstats | grep -E 'evalsha' | cut -d, -f1-3
for f in m0 m1; do grep -E '^gateway_redis_duration_seconds_count|^gateway_limiter_leased_total|^gateway_limiter_lease_misses' "$tmp/$f" | sed "s/^/$f /"; done
