#!/usr/bin/env bash
# Load benchmark, run on demand: one client (wrk), one upstream, five targets side by side
# in one run:
#   (a) the upstream directly: a gateway process serving the built-in mock (default; it eats
#       CPU on the same cores), or with UPSTREAM=static an nginx answering a fixed chat
#       completion (cheap, so the proxies' own costs show)
#   (b) Debian's nginx: proxy_pass to the upstream, limit_req set high enough never to reject
#   (p) Pingora's bare reverse proxy (benches/bare_proxy.rs): the floor of the HTTP stack
#       the gateway is built on, doing what (b) does
#   (c) the gateway (release build): an openai-compatible provider pointing at the upstream
#   (d) the same gateway with limit-req, limit-conn, limit-count and a token limit on
#       (local policy, set high enough never to reject), to measure what limiting costs
#   (e) the same limits with the redis policy (a redis-server on loopback), to measure what
#       sharing them costs: round trips, and Redis's own CPU (the redis-server process's
#       CPU over the measured rounds ÷ the requests served; quota leases, docs/limits.md)
#   (f) with PREV_BIN=<an earlier release binary>: that binary with the redis policy, on a
#       redis-server of its own, for the same figures side by side
# Saturated rounds are interleaved (a b c a b c …), then each target at a fixed RATE for its
# p99; medians of rounds, with ratios. Traffic goes to 127.0.0.1 only, bounded by DURATION.
# Then benches/streams.sh: OPEN_STREAMS (default 9000; 0 skips it) slow streams held open
# at once, pass-through and translated: memory per open stream, delay and CPU per event.
# Then benches/cluster.sh: CLUSTER_CONSUMERS (default 200; 0 skips it) consumers through a
# three-node Redis Cluster and one Redis node side by side (this build, then PREV_BIN).
#
#   benches/load.sh                 # defaults: ROUNDS=3 DURATION=8 CONNS=32 THREADS=1 RATE=2000
#   UPSTREAM=static benches/load.sh
#   PREV_BIN=/tmp/ai-rate-limiter-prev UPSTREAM=static benches/load.sh
#     (an earlier release: git worktree add /tmp/prev <rev> && cargo build --release
#      --manifest-path /tmp/prev/Cargo.toml --target-dir target && cp
#      target/release/ai-rate-limiter /tmp/ai-rate-limiter-prev; then rebuild this one)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}          # worker threads/processes for each proxy (nginx and gateway alike)
RATE=${RATE:-2000}              # the fixed request rate whose latency is reported (p99)
UPSTREAM=${UPSTREAM:-gateway}   # gateway: a gateway process serving the mock (it eats CPU on
                                # the same cores); static: nginx answering a fixed chat completion
PREV_BIN=${PREV_BIN:-}          # an earlier release binary to measure with the redis policy

. benches/common.sh
install_missing wrk:wrk nginx:nginx-light redis-server:redis-server
cargo build --release -q --example bare_proxy
UP=$(port); UPM=$(port); GW=$(port); GWM=$(port); NG=$(port); GL=$(port); GLM=$(port)
GR=$(port); GRM=$(port); RP=$(port); PB=$(port); PR=$(port); PRM=$(port); RP2=$(port)

mock_upstream_yaml "$tmp/upstream.yaml"
static_upstream_conf "$tmp/static.conf" "$UP"
# wrk at a fixed rate: every connection waits a random time between its requests, CONNS/RATE
# on average (exponential: Poisson arrivals, so the connections do not fire in step).
cat > "$tmp/fixed.lua" <<LUA
$(chat_lua /dev/stdout)
function delay() return math.floor(-$(( 1000 * CONNS / RATE )) * math.log(1 - math.random()) + 0.5) end
LUA
proxy_gateway_yaml "$tmp/gateway.yaml" "$THREADS" "$UP"
four_limits_yaml "$tmp/gateway-limits.yaml" "$THREADS" "$UP"
sed -e "s/^reload:/limits: {policy: redis, redis: {url: \"redis:\/\/127.0.0.1:$RP\/0\"}}\nreload:/" \
  "$tmp/gateway-limits.yaml" > "$tmp/gateway-redis.yaml"
sed -e "s/^reload:/limits: {policy: redis, redis: {url: \"redis:\/\/127.0.0.1:$RP2\/0\"}}\nreload:/" \
  "$tmp/gateway-limits.yaml" > "$tmp/previous-redis.yaml"
cat > "$tmp/nginx.conf" <<NGINX
worker_processes $THREADS;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/body;
  proxy_temp_path $tmp/proxy;
  limit_req_zone \$binary_remote_addr zone=bench:10m rate=1000000r/s;
  upstream mock { server 127.0.0.1:$UP; keepalive 256; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      limit_req zone=bench burst=1000000 nodelay;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-upstream";
      proxy_pass http://mock;
    }
  }
}
NGINX
chat_lua "$tmp/post.lua"


if [ "$UPSTREAM" = static ]; then
  nginx -c "$tmp/static.conf" -g 'daemon off;' & pids+=($!)
else
  "$BIN" run --config "$tmp/upstream.yaml" --listen 127.0.0.1:$UP --metrics-listen 127.0.0.1:$UPM >"$tmp/up.log" 2>&1 & pids+=($!)
fi
"$BIN" run --config "$tmp/gateway.yaml" --listen 127.0.0.1:$GW --metrics-listen 127.0.0.1:$GWM >"$tmp/gw.log" 2>&1 & pids+=($!)
nginx -c "$tmp/nginx.conf" -g 'daemon off;' & pids+=($!)
"$BIN" run --config "$tmp/gateway-limits.yaml" --listen 127.0.0.1:$GL --metrics-listen 127.0.0.1:$GLM >"$tmp/gl.log" 2>&1 & pids+=($!)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$tmp/redis.log" 2>&1 & pids+=($!)
wait_ports $RP
"$BIN" run --config "$tmp/gateway-redis.yaml" --listen 127.0.0.1:$GR --metrics-listen 127.0.0.1:$GRM >"$tmp/gr.log" 2>&1 & pids+=($!)
target/release/examples/bare_proxy 127.0.0.1:$PB 127.0.0.1:$UP "$THREADS" >"$tmp/pb.log" 2>&1 & pids+=($!)
declare -A proc=([upstream]=${pids[0]} [gateway]=${pids[1]} [nginx]=${pids[2]} [gateway-limits]=${pids[3]} [gateway-redis]=${pids[5]} [pingora]=${pids[6]})
declare -A redis_of=([gateway-redis]=${pids[4]})
wait_ports $UP $GW $NG $GL $GR $PB
TARGETS=("upstream:$UP" "nginx:$NG" "pingora:$PB" "gateway:$GW" "gateway-limits:$GL" "gateway-redis:$GR")
if [ -n "$PREV_BIN" ]; then
  redis-server --port "$RP2" --bind 127.0.0.1 --save "" --appendonly no >"$tmp/redis2.log" 2>&1 & pids+=($!)
  redis_of[previous-redis]=$!
  wait_ports $RP2
  "$PREV_BIN" run --config "$tmp/previous-redis.yaml" --listen 127.0.0.1:$PR --metrics-listen 127.0.0.1:$PRM >"$tmp/pr.log" 2>&1 & pids+=($!)
  proc[previous-redis]=$!
  wait_ports $PR
  TARGETS+=("previous-redis:$PR")
fi
for target in "${TARGETS[@]}"; do   # sanity check + warm-up
  out=$(curl -s -m 5 "http://127.0.0.1:${target#*:}/v1/chat/completions" -H 'content-type: application/json' \
        -H 'authorization: Bearer sk-bench' -d '{"model":"bench","messages":[{"role":"user","content":"hi"}]}')
  echo "$out" | grep -q '"chat.completion"' || { echo "${target%%:*} did not answer: $out"; exit 1; }
  wrk -t1 -c"$CONNS" -d2s -s "$tmp/post.lua" "http://127.0.0.1:${target#*:}/v1/chat/completions" >/dev/null
done

# Redis's own cost per admission: command statistics of the measured rounds only.
redis-cli -p "$RP" CONFIG RESETSTAT >/dev/null
for r in $(seq "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    name=${target%%:*}
    rb=$([ -n "${redis_of[$name]:-}" ] && ticks "${redis_of[$name]}" || echo 0)
    measured_wrk "${proc[$name]}" "$tmp/post.lua" \
      "http://127.0.0.1:${target#*:}/v1/chat/completions" "$tmp/wrk-$name-$r.txt"
    if [ -n "${redis_of[$name]:-}" ]; then
      echo "redis_ticks: $(( $(ticks "${redis_of[$name]}") - rb ))" >> "$tmp/wrk-$name-$r.txt"
    fi
  done
done
redis-cli -p "$RP" INFO commandstats > "$tmp/redis-stats.txt"
# Latency at a fixed rate (not the saturated latency above), every target in turn.
for r in $(seq "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$tmp/fixed.lua" \
      "http://127.0.0.1:${target#*:}/v1/chat/completions" > "$tmp/fixed-${target%%:*}-$r.txt"
  done
done
rss=$(ps -o rss= -p "${pids[1]}" | tr -d ' ')
# Redis calls per request of the redis-policy gateway (warm-up included on both sides).
curl -s "http://127.0.0.1:$GRM/metrics" > "$tmp/gr-metrics.txt"
[ -n "$PREV_BIN" ] && curl -s "http://127.0.0.1:$PRM/metrics" > "$tmp/pr-metrics.txt"
mkdir -p bench-results && cp "$tmp"/wrk-*.txt "$tmp"/fixed-*.txt "$tmp/redis-stats.txt" bench-results/

python3 - "$tmp" "$ROUNDS" "$CONNS" "$DURATION" "$THREADS" "$rss" "$(getconf CLK_TCK)" "$RATE" "$UPSTREAM" <<'PY'
import re, statistics, sys
def metric(text, name, label=""):
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith(name) and label in l and not l.startswith("#"))
tmp, rounds, conns, dur, threads, rss = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
tck, rate, upstream_kind = int(sys.argv[7]), int(sys.argv[8]), sys.argv[9]
def ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        sys.exit(f"cannot read wrk latency {v!r}")
    n, u = m.groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]
res, fixed_p99 = {}, {}
names = ["upstream", "nginx", "pingora", "gateway", "gateway-limits", "gateway-redis"]
import os
if os.path.exists(f"{tmp}/wrk-previous-redis-1.txt"):
    names.append("previous-redis")
redis_cpu = {}
for t in names:
    rps, p50, p99, errs, cpu = [], [], [], 0, []
    for r in range(1, rounds + 1):
        txt = open(f"{tmp}/wrk-{t}-{r}.txt").read()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1)))
        p50.append(ms(re.search(r"^\s+50%\s+(\S+)", txt, re.M).group(1)))
        p99.append(ms(re.search(r"^\s+99%\s+(\S+)", txt, re.M).group(1)))
        n = int(re.search(r"(\d+) requests in", txt).group(1))
        cpu.append(int(re.search(r"cpu_ticks: (\d+)", txt).group(1)) / tck / n * 1e6)
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
        errs += int(m.group(1)) if m else 0
        m = re.search(r"redis_ticks: (\d+)", txt)
        if m:
            redis_cpu.setdefault(t, []).append(int(m.group(1)) / tck / n * 1e6)
    fixed = []
    for r in range(1, rounds + 1):
        txt = open(f"{tmp}/fixed-{t}-{r}.txt").read()
        fixed.append((ms(re.search(r"^\s+99%\s+(\S+)", txt, re.M).group(1)),
                      float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1))))
    fixed_p99[t] = (statistics.median(f[0] for f in fixed), statistics.median(f[1] for f in fixed))
    res[t] = (statistics.median(rps), statistics.median(p50), statistics.median(p99), errs, statistics.median(cpu))
print(f"\nLoad benchmark: wrk -t1 -c{conns}, {rounds} interleaved rounds of {dur}s, median of rounds;"
      f" {threads} worker thread(s) for nginx and the gateway; chat completion, non-stream.\n")
print(f"Upstream: {upstream_kind}. Fixed-rate latency: wrk with {conns} connections pacing themselves to about {rate} req/s.\n")
print(f"| target | req/s | p50 ms | p99 ms | non-2xx | CPU µs/request of the target process | p99 ms at ~{rate} req/s (rate reached) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for t, (rps, p50, p99, errs, cpu) in res.items():
    fp, fr = fixed_p99[t]
    print(f"| {t} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errs} | {cpu:.1f} | {fp:.2f} ({fr:,.0f}) |")
g, n, u = res["gateway"][0], res["nginx"][0], res["upstream"][0]
print(f"\ngateway/nginx throughput: {g/n:.2f}x (target >= 0.8x)   gateway/upstream: {g/u:.2f}x   nginx/upstream: {n/u:.2f}x")
print(f"limits on / limits off (gateway): throughput {res['gateway-limits'][0]/g:.2f}x (target >= 0.95x), CPU per request {res['gateway-limits'][4]/res['gateway'][4]:.2f}x")
m = open(f"{tmp}/gr-metrics.txt").read()
reqs = metric(m, "gateway_requests_total")
calls = {op: metric(m, "gateway_redis_duration_seconds_count", f'op="{op}"') for op in ("admit", "release", "refresh", "ping")}
rtt = metric(m, "gateway_redis_duration_seconds_sum", 'op="admit"') / max(calls["admit"], 1) * 1e3
print(f"redis policy / local policy: throughput {res['gateway-redis'][0]/res['gateway-limits'][0]:.2f}x (goal >= 0.9x), CPU per request (gateway process) {res['gateway-redis'][4]/res['gateway-limits'][4]:.2f}x")
print(f"Redis round trips per request: admission {calls['admit']/reqs:.2f} (target 1), all calls {sum(calls.values())/reqs:.2f} "
      f"(releases are batched: {calls['release']/reqs:.2f} per request); mean admission round trip {rtt:.2f} ms")
for t, cpu in redis_cpu.items():
    c = statistics.median(cpu)
    print(f"{t}: Redis process CPU {c:.2f} µs per request (goal <= 5); one Redis node's ceiling"
          f" ≈ {1e6/max(c, 0.001):,.0f} requests/s for the whole fleet (goal >= 200,000)")
leased = metric(m, "gateway_limiter_leased_total")
print(f"admissions decided from quota leases (redis policy): {leased/max(reqs,1):.1%}")
if "previous-redis" in res:
    p = res["previous-redis"]
    print(f"previous release, redis policy: {p[0]:,.0f} req/s, {p[4]:.1f} µs CPU per request;"
          f" this one / previous: throughput {res['gateway-redis'][0]/p[0]:.2f}x,"
          f" Redis CPU per request {statistics.median(redis_cpu['gateway-redis'])/max(statistics.median(redis_cpu['previous-redis']),0.001):.2f}x")
# Redis CPU: every command's usec (scripts include the commands they run), over the
# requests the redis-policy gateway served in the measured rounds.
stats = {}
for l in open(f"{tmp}/redis-stats.txt"):
    m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", l.strip())
    if m:
        stats[m.group(1)] = (int(m.group(2)), int(m.group(3)))
served = sum(int(re.search(r"(\d+) requests in", open(f"{tmp}/wrk-gateway-redis-{r}.txt").read()).group(1))
             for r in range(1, rounds + 1))
# A script's usec includes the commands it runs (they are also listed on their own).
ev_calls, ev_usec = stats.get("evalsha", (0, 0))
per_request = ev_usec / max(served, 1)
print(f"Redis CPU: {ev_usec/max(ev_calls,1):.1f} µs per script call (EVALSHA: admissions and batched releases), "
      f"{per_request:.1f} µs per request; {ev_calls/max(served,1):.2f} script calls per request "
      f"(goals: <= 8 µs per admission, <= 1.05 calls); one Redis node's ceiling ≈ {1e6/max(per_request,0.001):,.0f} requests/s for the whole fleet")
print(f"CPU per request, gateway / nginx: {res['gateway'][4]/res['nginx'][4]:.2f}x")
pb = res["pingora"]
print(f"Pingora's bare proxy / nginx: throughput {pb[0]/n:.2f}x, CPU per request {pb[4]/res['nginx'][4]:.2f}x;"
      f" the gateway's own work above it: {res['gateway'][4]-pb[4]:.1f} µs per request"
      f" (limits on: {res['gateway-limits'][4]-pb[4]:.1f} µs)")
up = fixed_p99["upstream"][0]
print(f"p99 added over the upstream at ~{rate} req/s: nginx {fixed_p99['nginx'][0]-up:.2f} ms, gateway {fixed_p99['gateway'][0]-up:.2f} ms, "
      f"limits local {fixed_p99['gateway-limits'][0]-up:.2f} ms (goal <= 0.5), redis {fixed_p99['gateway-redis'][0]-up:.2f} ms (goal <= 1)")
lim = res["gateway-limits"]
print(f"gateway with limits (local) / nginx: throughput {lim[0]/n:.2f}x (goal >= 1.0x), CPU per request {lim[4]/res['nginx'][4]:.2f}x (goal <= 1.0x)")
print(f"gateway p99 / nginx p99: {res['gateway'][2]/res['nginx'][2]:.2f}x   gateway RSS after the run: {rss/1024:.1f} MiB")
PY
if [ "${OPEN_STREAMS:-9000}" -gt 0 ]; then
  echo
  echo "Open streams (benches/streams.sh, STREAMS=${OPEN_STREAMS:-9000}):"
  STREAMS=${OPEN_STREAMS:-9000} bash benches/streams.sh
fi
if [ "${CLUSTER_CONSUMERS:-200}" -gt 0 ]; then
  for b in "$BIN" ${PREV_BIN:+"$PREV_BIN"}; do
    echo
    echo "Redis Cluster vs one Redis node (benches/cluster.sh, CONSUMERS=${CLUSTER_CONSUMERS:-200}, BIN=$b):"
    CONSUMERS=${CLUSTER_CONSUMERS:-200} BIN=$b bash benches/cluster.sh
  done
fi
