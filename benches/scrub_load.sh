#!/usr/bin/env bash
# What masking provider keys costs end to end, run on demand: two gateways side by side in
# one run, identical but for their provider key — one long enough to be searched for in
# every upstream byte (scrubbing on), one under the 8-byte minimum (scrubbing off) — in
# front of one mock upstream, with streamed (64 events) and whole chat answers. Rounds are
# interleaved and the median reported, with the throughput and CPU-per-request ratios.
# Traffic goes to 127.0.0.1 only and every run is bounded by DURATION.
#
#   benches/scrub_load.sh           # defaults: ROUNDS=3 DURATION=6 CONNS=16
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
CONNS=${CONNS:-16}
. benches/common.sh
install_missing wrk:wrk
UP=$(port); UPM=$(port); ON=$(port); ONM=$(port); OFF=$(port); OFFM=$(port)

mock_upstream_yaml "$tmp/upstream.yaml" "completion_tokens: 64"
gateway() { # $1: provider key
  cat <<YAML
server: {threads: 1}
logging: {access_log: false, level: warn}
consumers: [{name: bench, keys: [sk-bench]}]
providers: [{name: up, kind: openai-compatible, base_url: "http://127.0.0.1:$UP/v1", api_key: "$1"}]
models: [{name: bench, deployments: [{provider: up}]}]
reload: {watch: false}
YAML
}
gateway "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz" > "$tmp/on.yaml"
gateway "sk-up" > "$tmp/off.yaml"
"$BIN" run --config "$tmp/upstream.yaml" --listen 127.0.0.1:$UP --metrics-listen 127.0.0.1:$UPM >"$tmp/up.log" 2>&1 & pids+=($!)
"$BIN" run --config "$tmp/on.yaml" --listen 127.0.0.1:$ON --metrics-listen 127.0.0.1:$ONM >"$tmp/on.log" 2>&1 & pids+=($!)
"$BIN" run --config "$tmp/off.yaml" --listen 127.0.0.1:$OFF --metrics-listen 127.0.0.1:$OFFM >"$tmp/off.log" 2>&1 & pids+=($!)
declare -A proc=([on]=${pids[1]} [off]=${pids[2]})
wait_ports $UP $ON $OFF
for kind in stream whole; do
  stream=false; [ $kind = stream ] && stream=true
  chat_lua "$tmp/$kind.lua" $stream 64
done
for name in on off; do   # warm-up
  port=$ON; [ $name = off ] && port=$OFF
  wrk -t1 -c"$CONNS" -d2s -s "$tmp/stream.lua" "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  for kind in stream whole; do
    for name in on off; do
      port=$ON; [ $name = off ] && port=$OFF
      measured_wrk "${proc[$name]}" "$tmp/$kind.lua" \
        "http://127.0.0.1:$port/v1/chat/completions" "$tmp/wrk-$kind-$name-$r.txt"
    done
  done
done
python3 - "$tmp" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import re, statistics, sys
tmp, rounds, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print("\n| answers | scrubbing | req/s | CPU µs/request |\n|---|---|---:|---:|")
res = {}
for kind in ("stream", "whole"):
    for name in ("on", "off"):
        rps, cpu = [], []
        for r in range(1, rounds + 1):
            t = open(f"{tmp}/wrk-{kind}-{name}-{r}.txt").read()
            n = int(re.search(r"(\d+) requests in", t).group(1))
            rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
            cpu.append(int(re.search(r"cpu_ticks: (\d+)", t).group(1)) / tck / n * 1e6)
            if "Non-2xx" in t:
                sys.exit(f"errors in {kind}/{name}: {t}")
        res[kind, name] = (statistics.median(rps), statistics.median(cpu))
        print(f"| {kind} | {name} | {res[kind, name][0]:,.0f} | {res[kind, name][1]:.1f} |")
for kind in ("stream", "whole"):
    (a, ca), (b, cb) = res[kind, "on"], res[kind, "off"]
    print(f"{kind}: scrubbing on / off: throughput {a/b:.3f}x, CPU per request {ca/cb:.3f}x")
PY
