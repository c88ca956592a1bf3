#!/usr/bin/env bash
# What tracing costs, run on demand: three gateways side by side in one run, in front of
# one static upstream (nginx answering a fixed chat completion): traces off, traces at 1%
# sampling, traces at 100%, exporting over OTLP/HTTP to a sink on loopback that takes
# every export (benches/otlp_sink.py: reads the body, answers 200). Interleaved rounds,
# medians, throughput and CPU per request (the gateway's whole process, its export thread
# included) as ratios to "off"; then what each exported and dropped.
# Traffic goes to 127.0.0.1 only, bounded by DURATION.
#
#   benches/traces.sh          # defaults: ROUNDS=3 DURATION=8 CONNS=32
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
. benches/common.sh
install_missing wrk:wrk nginx:nginx-light
UP=$(port); SINK=$(port)
static_upstream_conf "$tmp/static.conf" "$UP"
proxy_gateway_yaml "$tmp/off.yaml" 1 "$UP"
for ratio in 0.01 1; do
  { cat "$tmp/off.yaml"
    echo "traces: {endpoint: \"http://127.0.0.1:$SINK/v1/traces\", sampling_ratio: $ratio}"
  } > "$tmp/on-$ratio.yaml"
done
nginx -c "$tmp/static.conf" -g 'daemon off;' & pids+=($!)
python3 benches/otlp_sink.py "$SINK" & pids+=($!)
declare -A port proc metrics
for cfg in off on-0.01 on-1; do
  p=$(port); m=$(port)
  "$BIN" run --config "$tmp/$cfg.yaml" --listen 127.0.0.1:$p --metrics-listen 127.0.0.1:$m >"$tmp/$cfg.log" 2>&1 & pids+=($!)
  port[$cfg]=$p; proc[$cfg]=$!; metrics[$cfg]=$m
done
wait_ports "$UP" "$SINK" "${port[@]}"
chat_lua "$tmp/post.lua"
for cfg in off on-0.01 on-1; do
  wrk -t1 -c"$CONNS" -d2s -s "$tmp/post.lua" "http://127.0.0.1:${port[$cfg]}/v1/chat/completions" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  for cfg in off on-0.01 on-1; do
    measured_wrk "${proc[$cfg]}" "$tmp/post.lua" \
      "http://127.0.0.1:${port[$cfg]}/v1/chat/completions" "$tmp/wrk-$cfg-$r.txt"
  done
done
sleep 2 # the last exports
for cfg in on-0.01 on-1; do
  curl -s "http://127.0.0.1:${metrics[$cfg]}/metrics" | grep '^gateway_trace_spans_total' > "$tmp/spans-$cfg.txt"
done
python3 - "$tmp" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import re, statistics, sys
tmp, rounds, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {}
print("\n| traces | req/s | CPU µs/request | throughput vs off | CPU vs off |\n|---|---:|---:|---:|---:|")
for cfg in ("off", "on-0.01", "on-1"):
    rps, cpu = [], []
    for r in range(1, rounds + 1):
        t = open(f"{tmp}/wrk-{cfg}-{r}.txt").read()
        if "Non-2xx" in t:
            sys.exit(f"errors from {cfg}:\n{t}")
        n = int(re.search(r"(\d+) requests in", t).group(1))
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
        cpu.append(int(re.search(r"cpu_ticks: (\d+)", t).group(1)) / tck / n * 1e6)
    res[cfg] = (statistics.median(rps), statistics.median(cpu))
    off = res["off"]
    name = {"off": "off", "on-0.01": "1% sampled", "on-1": "100% sampled"}[cfg]
    print(f"| {name} | {res[cfg][0]:,.0f} | {res[cfg][1]:.1f} | {res[cfg][0]/off[0]:.3f}x | {res[cfg][1]/off[1]:.3f}x |")
for cfg in ("on-0.01", "on-1"):
    spans = dict(re.findall(r'outcome="(\w+)"} (\d+)', open(f"{tmp}/spans-{cfg}.txt").read()))
    print(f"{cfg}: spans exported {spans.get('exported')}, dropped {spans.get('dropped')}, failed {spans.get('failed')}")
PY
