#!/usr/bin/env bash
# Two gateway builds side by side in one run, run on demand (for a refactor: no
# throughput loss beyond noise): BASELINE is a release binary of the old code, the other
# is this checkout's release build. Both serve the same configs in front of one mock
# upstream — plain, and with limit-req + limit-count + a token limit on (local policy,
# never rejecting) — under wrk on loopback, interleaved rounds, medians, ratios. Then
# STREAMS translated streams per build and round, both ways: Anthropic Messages clients
# on the chat deployment (the surface translation) and chat clients on an Anthropic
# deployment (the provider translation: the mock upstream speaks Messages on
# /v1/messages); the gateway's CPU per event delivered.
#
#   BASELINE=/path/to/old/ai-rate-limiter benches/compare.sh   # ROUNDS=3 DURATION=8 CONNS=32
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASELINE:?set BASELINE to the release binary to compare with}"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
. benches/common.sh
install_missing wrk:wrk
UP=$(port); UPM=$(port)
mock_upstream_yaml "$tmp/upstream.yaml"
cat > "$tmp/plain.yaml" <<YAML
server: {threads: 1}
logging: {access_log: false, level: warn}
consumers: [{name: bench, keys: [sk-bench]}]
providers:
  - {name: up, kind: openai-compatible, base_url: "http://127.0.0.1:$UP/v1", api_key: sk-upstream-0123456789}
  - {name: claude, kind: anthropic, base_url: "http://127.0.0.1:$UP/v1", api_key: sk-upstream-0123456789}
models:
  - {name: bench, deployments: [{provider: up}]}
  - {name: bench-claude, deployments: [{provider: claude, model: bench}]}
reload: {watch: false}
YAML
sed 's/keys: \[sk-bench\]}\]/keys: [sk-bench], limits: [{name: rpm, count: {count: 100000000, time_window: 60s}}, {name: rps, req: {rate: 1000000, burst: 1000000, nodelay: true}}, {name: tpm, tokens: {limit: 100000000000, time_window: 60s}}]}]/' \
  "$tmp/plain.yaml" > "$tmp/limits.yaml"
"$BIN" run --config "$tmp/upstream.yaml" --listen 127.0.0.1:$UP --metrics-listen 127.0.0.1:$UPM >"$tmp/up.log" 2>&1 & pids+=($!)
declare -A port proc
for build in baseline current; do
  exe=$BIN; [ $build = baseline ] && exe=$BASELINE
  for cfg in plain limits; do
    p=$(port); m=$(port)
    "$exe" run --config "$tmp/$cfg.yaml" --listen 127.0.0.1:$p --metrics-listen 127.0.0.1:$m >"$tmp/$build-$cfg.log" 2>&1 & pids+=($!)
    port[$build-$cfg]=$p; proc[$build-$cfg]=$!
  done
done
wait_ports $UP "${port[@]}"
chat_lua "$tmp/post.lua"
for t in "${!port[@]}"; do
  wrk -t1 -c"$CONNS" -d2s -s "$tmp/post.lua" "http://127.0.0.1:${port[$t]}/v1/chat/completions" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  for cfg in plain limits; do
    for build in baseline current; do
      t=$build-$cfg
      measured_wrk "${proc[$t]}" "$tmp/post.lua" \
        "http://127.0.0.1:${port[$t]}/v1/chat/completions" "$tmp/wrk-$t-$r.txt"
    done
  done
done
STREAMS=${STREAMS:-600}
for r in $(seq "$ROUNDS"); do
  for build in baseline current; do
    t=$build-plain
    before=$(ticks "${proc[$t]}")
    python3 benches/stream_client.py 127.0.0.1 "${port[$t]}" "$STREAMS" 2 messages > "$tmp/stream-$build-$r.json"
    echo $(( $(ticks "${proc[$t]}") - before )) > "$tmp/stream-ticks-$build-$r"
    before=$(ticks "${proc[$t]}")
    python3 benches/stream_client.py 127.0.0.1 "${port[$t]}" "$STREAMS" 2 chat bench-claude > "$tmp/claude-$build-$r.json"
    echo $(( $(ticks "${proc[$t]}") - before )) > "$tmp/claude-ticks-$build-$r"
  done
done
python3 - "$tmp" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import json, re, statistics, sys
tmp, rounds, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {}
print("\n| config | build | req/s | CPU µs/request |\n|---|---|---:|---:|")
for cfg in ("plain", "limits"):
    for build in ("baseline", "current"):
        rps, cpu = [], []
        for r in range(1, rounds + 1):
            t = open(f"{tmp}/wrk-{build}-{cfg}-{r}.txt").read()
            if "Non-2xx" in t:
                sys.exit(f"errors from {build}/{cfg}:\n{t}")
            n = int(re.search(r"(\d+) requests in", t).group(1))
            rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
            cpu.append(int(re.search(r"cpu_ticks: (\d+)", t).group(1)) / tck / n * 1e6)
        res[cfg, build] = (statistics.median(rps), statistics.median(cpu))
        print(f"| {cfg} | {build} | {res[cfg, build][0]:,.0f} | {res[cfg, build][1]:.1f} |")
for cfg in ("plain", "limits"):
    (a, ca), (b, cb) = res[cfg, "current"], res[cfg, "baseline"]
    print(f"{cfg}: current / baseline throughput {a/b:.3f}x, CPU per request {ca/cb:.3f}x")
for kind, label in (("stream", "Messages on chat"), ("claude", "chat on Anthropic")):
    per_event = {}
    for build in ("baseline", "current"):
        us = []
        for r in range(1, rounds + 1):
            streams = json.load(open(f"{tmp}/{kind}-{build}-{r}.json"))
            failed = [s for s in streams if "error" in s]
            if failed:
                sys.exit(f"{len(failed)} translated streams failed on {build}: {failed[0]}")
            events = sum(s["events"] for s in streams)
            ticks = int(open(f"{tmp}/{kind}-ticks-{build}-{r}").read())
            us.append(ticks / tck / events * 1e6)
        per_event[build] = statistics.median(us)
        print(f"translated stream ({label}), {build}: {per_event[build]:.1f} µs CPU per event")
    ratio = per_event["current"] / per_event["baseline"]
    print(f"translated stream ({label}): current / baseline CPU per event {ratio:.3f}x")
PY
