#!/usr/bin/env bash
# Streaming benchmark, run on demand (issue 16, goal 4): an upstream streaming 64 chat
# chunks 20 ms apart (a gateway process serving the built-in mock), and STREAMS streams
# arriving over SPREAD seconds, sent (a) to the upstream directly and (b) through the
# gateway (an openai-compatible deployment: a pass-through stream, no translation), rounds
# interleaved. Reports the time to first token the gateway adds (median, p99), every
# event delivered, the longest stall, and the gateway's CPU per event. Loopback only,
# bounded by STREAMS.
#
#   benches/stream.sh             # defaults: ROUNDS=3 STREAMS=256 SPREAD=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
STREAMS=${STREAMS:-256}
SPREAD=${SPREAD:-1}
. benches/common.sh
UP=$(port); UPM=$(port); GW=$(port); GWM=$(port)
mock_upstream_yaml "$tmp/upstream.yaml" "tokens_per_second: 50, completion_tokens: 64"
proxy_gateway_yaml "$tmp/gateway.yaml" 1 "$UP"
"$BIN" run --config "$tmp/upstream.yaml" --listen 127.0.0.1:$UP --metrics-listen 127.0.0.1:$UPM >"$tmp/up.log" 2>&1 & pids+=($!)
"$BIN" run --config "$tmp/gateway.yaml" --listen 127.0.0.1:$GW --metrics-listen 127.0.0.1:$GWM >"$tmp/gw.log" 2>&1 & pids+=($!)
gw_pid=${pids[1]}
wait_ports $UP $GW
python3 benches/stream_client.py 127.0.0.1 $GW 16 0.2 > /dev/null   # warm-up
for r in $(seq "$ROUNDS"); do
  python3 benches/stream_client.py 127.0.0.1 $UP "$STREAMS" "$SPREAD" > "$tmp/direct-$r.json"
  before=$(ticks "$gw_pid")
  python3 benches/stream_client.py 127.0.0.1 $GW "$STREAMS" "$SPREAD" > "$tmp/gateway-$r.json"
  echo $(( $(ticks "$gw_pid") - before )) > "$tmp/ticks-$r"
done
python3 - "$tmp" "$ROUNDS" "$STREAMS" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
tmp, rounds, streams, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]
rows = []
for r in range(1, rounds + 1):
    d = json.load(open(f"{tmp}/direct-{r}.json"))
    g = json.load(open(f"{tmp}/gateway-{r}.json"))
    ok = lambda runs: [x for x in runs if "error" not in x and x["ttft"] is not None]
    dd, gg = ok(d), ok(g)
    events = sum(x["events"] for x in gg)
    cpu = int(open(f"{tmp}/ticks-{r}").read()) / tck
    rows.append({
        "ttft_direct_p50": pct([x["ttft"] for x in dd], .5), "ttft_gw_p50": pct([x["ttft"] for x in gg], .5),
        "ttft_direct_p99": pct([x["ttft"] for x in dd], .99), "ttft_gw_p99": pct([x["ttft"] for x in gg], .99),
        "events_direct": sum(x["events"] for x in dd), "events_gw": events,
        "failed": (len(d) - len(dd)) + (len(g) - len(gg)),
        "stall_gw": max(x["gap"] for x in gg), "stall_direct": max(x["gap"] for x in dd),
        "cpu_us_per_event": cpu / max(events, 1) * 1e6,
    })
med = lambda k: statistics.median(r[k] for r in rows)
print(f"\nStreaming benchmark: {streams} streams over the spread, 64 chunks 20 ms apart, {rounds} interleaved rounds, medians\n")
print("| | direct | through the gateway | added |")
print("|---|---:|---:|---:|")
for k, name in (("p50", "time to first token, median (ms)"), ("p99", "time to first token, p99 (ms)")):
    print(f"| {name} | {med('ttft_direct_'+k):.2f} | {med('ttft_gw_'+k):.2f} | {med('ttft_gw_'+k)-med('ttft_direct_'+k):.2f} |")
print(f"| events delivered (per round) | {med('events_direct'):.0f} | {med('events_gw'):.0f} | |")
print(f"| longest gap between two events (ms) | {med('stall_direct'):.1f} | {med('stall_gw'):.1f} | |")
print(f"\ngateway CPU per event: {med('cpu_us_per_event'):.1f} µs (goal <= 3 µs); failed streams: {sum(r['failed'] for r in rows)}")
PY
