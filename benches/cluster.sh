#!/usr/bin/env bash
# Redis Cluster scale-out benchmark, run on demand: what one admission costs the busiest
# Redis node, with one node and with a three-node cluster, measured side by side in one
# run. Many consumers (CONSUMERS, each with a request window, a token window and a leaky
# bucket of its own) call one model through two gateways: one on the `redis` policy (one
# redis-server), one on `redis-cluster` (three nodes, no replicas). wrk picks a consumer
# key at random for every request; rounds are interleaved. Redis's own CPU comes from
# INFO (commandstats for the scripts, and used_cpu_user + used_cpu_sys for the whole
# process, network and cluster bus included), per node, counted over the rounds that load
# that node only (a cluster node's CPU while the single node is measured is not its
# requests'). Each node's idle CPU (its cron and, in a cluster, the bus) is measured
# first, over IDLE seconds with no traffic. The fleet's ceiling is when its busiest node is
# saturated: 1 s / (that node's CPU per request at this load), and — the idle part being a
# cost per second, not per request — (1 s − idle CPU per s) / (the rest per request).
# Each round is preceded by WARM seconds of the same traffic, not measured: while the other
# gateway's round ran, this one's keys went quiet, and a key leases only after a second
# of steady traffic (WARM=0 measures the warm-up too: every key's first second in Redis).
# Traffic goes to 127.0.0.1 only, bounded by DURATION.
#
#   benches/cluster.sh   # defaults: ROUNDS=3 DURATION=8 WARM=2 CONNS=32 CONSUMERS=200 IDLE=5
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
CONSUMERS=${CONSUMERS:-200}
IDLE=${IDLE:-5}
WARM=${WARM:-2}

. benches/common.sh
install_missing wrk:wrk nginx:nginx-light redis-server:redis-server redis-cli:redis-tools
UP=$(port); GS=$(port); GSM=$(port); GC=$(port); GCM=$(port); RP=$(port)
# A cluster node's bus listens on its port + 10000, which must exist.
node_port() { local p; while p=$(port); [ "$p" -ge 55536 ]; do :; done; echo "$p"; }
NODES=("$(node_port)" "$(node_port)" "$(node_port)")

static_upstream_conf "$tmp/static.conf" "$UP"

consumers=$(many_consumers_yaml "$CONSUMERS")
gateway_yaml() { # $1: the limits line
  cat <<YAML
server: {threads: 1}
logging: {access_log: false, level: warn}
$1
consumers:
$consumers
providers: [{name: up, kind: openai-compatible, base_url: "http://127.0.0.1:$UP/v1", api_key: sk-upstream}]
models: [{name: bench, deployments: [{provider: up}]}]
reload: {watch: false}
YAML
}
seeds=$(printf '"redis://127.0.0.1:%s", ' "${NODES[@]}")
gateway_yaml "limits: {policy: redis, redis: {url: \"redis://127.0.0.1:$RP/0\"}}" > "$tmp/single.yaml"
gateway_yaml "limits: {policy: redis-cluster, redis: {nodes: [${seeds%, }]}}" > "$tmp/cluster.yaml"

random_consumer_lua "$tmp/post.lua" "$CONSUMERS"

nginx -c "$tmp/static.conf" -g 'daemon off;' & pids+=($!)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >/dev/null & pids+=($!)
for n in "${NODES[@]}"; do
  mkdir -p "$tmp/node-$n"
  redis-server --port "$n" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp/node-$n" \
    --cluster-enabled yes --cluster-config-file nodes.conf >/dev/null & pids+=($!)
done
wait_ports "$UP" "$RP" "${NODES[@]}"
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${NODES[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 100); do
  redis-cli -p "${NODES[0]}" CLUSTER INFO | grep -q cluster_state:ok && break; sleep 0.1
done
"$BIN" run --config "$tmp/single.yaml" --listen 127.0.0.1:$GS --metrics-listen 127.0.0.1:$GSM >"$tmp/gs.log" 2>&1 & pids+=($!)
"$BIN" run --config "$tmp/cluster.yaml" --listen 127.0.0.1:$GC --metrics-listen 127.0.0.1:$GCM >"$tmp/gc.log" 2>&1 & pids+=($!)
wait_ports "$GS" "$GC"
sleep 1

# Warm-up (every consumer's counters exist), then Redis's statistics from zero.
for p in "$GS" "$GC"; do wrk -t1 -c"$CONNS" -d2s -s "$tmp/post.lua" "http://127.0.0.1:$p/v1/chat/completions" >/dev/null; done
for n in "$RP" "${NODES[@]}"; do redis-cli -p "$n" CONFIG RESETSTAT >/dev/null; done
cpu() { redis-cli -p "$1" INFO cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.6f", s}'; }
now() { date +%s.%N; }
# Script calls and their µs so far (commandstats' evalsha and eval).
scripts() {
  redis-cli -p "$1" INFO commandstats |
    awk -F'[:=,]' '/^cmdstat_eval(sha)?:/ {c += $3; u += $5} END {printf "%d %d", c, u}'
}
# Each node's "port cpu-seconds script-calls script-µs".
snap() { for n in "$@"; do echo "$n $(cpu "$n") $(scripts "$n")"; done; }
t0=$(now); snap "$RP" "${NODES[@]}" > "$tmp/idle-before.txt"
sleep "$IDLE"
t1=$(now); snap "$RP" "${NODES[@]}" > "$tmp/idle-after.txt"
python3 -c "print($t1 - $t0)" > "$tmp/idle-seconds.txt"
# Per round, what the nodes that round loads spent:
# "target port cpu-seconds wall-seconds script-calls script-µs".
for r in $(seq "$ROUNDS"); do
  for target in single:$GS cluster:$GC; do
    name=${target%%:*}
    if [ "$name" = single ]; then ports=("$RP"); else ports=("${NODES[@]}"); fi
    if [ "$WARM" != 0 ]; then
      wrk -t1 -c"$CONNS" -d"${WARM}s" -s "$tmp/post.lua" \
        "http://127.0.0.1:${target#*:}/v1/chat/completions" > /dev/null
    fi
    snap "${ports[@]}" > "$tmp/round-before.txt"; a=$(now)
    wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$tmp/post.lua" \
      "http://127.0.0.1:${target#*:}/v1/chat/completions" > "$tmp/wrk-$name-$r.txt"
    b=$(now); snap "${ports[@]}" > "$tmp/round-after.txt"
    paste "$tmp/round-before.txt" "$tmp/round-after.txt" |
      awk -v t="$name" -v w="$(python3 -c "print($b - $a)")" \
        '{print t, $1, $6 - $2, w, $7 - $3, $8 - $4}' >> "$tmp/rounds.txt"
  done
done
curl -s "http://127.0.0.1:$GSM/metrics" > "$tmp/metrics-single.txt"
curl -s "http://127.0.0.1:$GCM/metrics" > "$tmp/metrics-cluster.txt"
for n in "$RP" "${NODES[@]}"; do
  redis-cli -p "$n" INFO commandstats > "$tmp/stats-$n.txt"
  redis-cli -p "$n" DBSIZE > "$tmp/dbsize-$n.txt"
done
mkdir -p bench-results && cp "$tmp"/wrk-*.txt "$tmp"/stats-*.txt "$tmp"/metrics-*.txt bench-results/ 2>/dev/null || true

python3 - "$tmp" "$ROUNDS" "$WARM" "$RP" "${NODES[@]}" <<'PY'
import re, statistics, sys
tmp, rounds, warm, single, nodes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
def wrk(name):
    rps, total = [], 0
    for r in range(1, rounds + 1):
        txt = open(f"{tmp}/wrk-{name}-{r}.txt").read()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1)))
        total += int(re.search(r"(\d+) requests in", txt).group(1))
        if "Non-2xx" in txt:
            sys.exit(f"{name}: non-2xx answers:\n{txt}")
    return statistics.median(rps), total
def snap(f):
    return {l.split()[0]: float(l.split()[1]) for l in open(f"{tmp}/{f}")}
idle_s = float(open(f"{tmp}/idle-seconds.txt").read())
ib, ia = snap("idle-before.txt"), snap("idle-after.txt")
idle = {p: (ia[p] - ib[p]) * 1e6 / idle_s for p in ia}  # µs of CPU per second at rest
busy, wall, calls_of, usec_of = {}, {}, {}, {}
for l in open(f"{tmp}/rounds.txt"):
    _, port, used, w, calls, usec = l.split()
    busy[port] = busy.get(port, 0) + float(used) * 1e6
    wall[port] = wall.get(port, 0) + float(w)
    calls_of[port] = calls_of.get(port, 0) + int(calls)
    usec_of[port] = usec_of.get(port, 0) + int(usec)
def node(port, served):
    calls, usec = calls_of[port], usec_of[port]
    keys = int(open(f"{tmp}/dbsize-{port}.txt").read().strip() or 0)
    per_request = busy[port] / served
    work = max(busy[port] - idle[port] * wall[port], 0) / served
    return {"calls": calls / served, "script": usec / served, "process": per_request,
            "idle": idle[port], "work": work,
            "ceiling": (1e6 - idle[port]) / max(work, 0.001), "keys": keys}
(s_rps, s_n), (c_rps, c_n) = wrk("single"), wrk("cluster")
one = node(single, s_n)
three = {p: node(p, c_n) for p in nodes}
print(f"\nCluster benchmark: {len(nodes)} cluster nodes vs one node, {rounds} interleaved rounds (each after {warm} s of warm-up), median req/s;"
      f" Redis CPU per request served, over the rounds that load the node; idle over {idle_s:.1f} s.\n")
print("| Redis | gateway req/s | node | keys | script calls/1k requests | script CPU µs/request | process CPU µs/request | idle CPU µs/s | beyond idle µs/request |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
print(f"| one node | {s_rps:,.0f} | :{single} | {one['keys']} | {one['calls'] * 1000:.1f} | {one['script']:.1f} | {one['process']:.1f} | {one['idle']:,.0f} | {one['work']:.2f} |")
for i, (p, v) in enumerate(three.items()):
    first = f"| cluster | {c_rps:,.0f}" if i == 0 else "| | "
    print(f"{first} | :{p} | {v['keys']} | {v['calls'] * 1000:.1f} | {v['script']:.1f} | {v['process']:.1f} | {v['idle']:,.0f} | {v['work']:.2f} |")
busiest = max(v["process"] for v in three.values())
total = sum(v["process"] for v in three.values())
print(f"\nfleet ceiling at this load (busiest node, process CPU per request): one node ≈ {1e6/max(one['process'],0.001):,.0f} req/s;"
      f" cluster ≈ {1e6/max(busiest,0.001):,.0f} req/s ({one['process']/max(busiest,0.001):.2f}x);"
      f" cluster CPU summed over nodes: {total:.1f} µs/request ({total/max(one['process'],0.001):.2f}x one node's)")
def leases(name, served):
    leased = misses = 0.0
    for l in open(f"{tmp}/metrics-{name}.txt"):
        if l.startswith("gateway_limiter_leased_total"):
            leased += float(l.split()[-1])
        elif l.startswith("gateway_limiter_lease_misses_total"):
            misses += float(l.split()[-1])
    return f"{name}: {leased:,.0f} admissions from leases, {misses / served:.3f} lease misses per request"
print(leases("single", s_n) + "; " + leases("cluster", c_n) + " (warm-up included)")
lowest = min(v["ceiling"] for v in three.values())
print(f"fleet ceiling at saturation (idle CPU a cost per second): one node ≈ {one['ceiling']:,.0f} req/s;"
      f" cluster ≈ {lowest:,.0f} req/s ({lowest/max(one['ceiling'],0.001):.2f}x)")
PY
