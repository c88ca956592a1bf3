#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind (issue 27, goal 4), run on
# demand. Wall-clock CPU on this 2-core VM moves by more than goal 4's 3 µs from one round
# to the next; an instruction count does not: the same binary and traffic give the same
# count within about 1%, whatever else the machine does. So this script is the
# noise-free side of `benches/load.sh`'s CPU columns: Pingora's bare proxy, the gateway,
# the gateway with the four limit kinds (local policy), and with PREV_BIN=<an earlier
# release binary> the same two for that build, all behind one static nginx upstream.
#
# Each target runs under callgrind with counting off; after a warm-up (wrk, 3 s) counting
# is switched on for SECS seconds of `wrk -t1 -c4` (the chat completion of load.sh), then
# the counts are dumped and divided by the requests wrk made. Two caveats: callgrind counts
# a `rep movsb` copy as one instruction per byte, so large copies (moving futures into
# boxes: Pingora's 15 KiB per connection is one) weigh far more than their time, and it is
# shown apart ("memcpy"); and valgrind hides the CPU's SHA extensions, so SHA-256 (the API
# key's digest) runs in software here. Neither is a time: compare the same column.
#
# Then the same per relayed stream event: STREAMS (50) streams of EVENTS (40) events,
# INTERVAL_MS (100) apart, through Pingora's bare proxy, the gateway passing them through
# and the gateway translating them (Anthropic upstream, asked through chat completions),
# and the previous build's two with PREV_BIN; `benches/open_streams.rs` plays the clients
# and the upstream. Counted over whole streams, so each stream's setup (request, auth,
# upstream connection) is spread over its events.
#
#   benches/instructions.sh                       # SECS=6
#   PREV_BIN=/tmp/ai-rate-limiter-prev benches/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-6}
PREV_BIN=${PREV_BIN:-}
. benches/common.sh
install_missing wrk:wrk nginx:nginx-light valgrind:valgrind
cargo build --release -q --example bare_proxy --example open_streams
UP=$(port)
static_upstream_conf "$tmp/static.conf" "$UP"
nginx -c "$tmp/static.conf" -g 'daemon off;' & pids+=($!)
chat_lua "$tmp/post.lua"
proxy_gateway_yaml "$tmp/gateway.yaml" 1 "$UP"
four_limits_yaml "$tmp/limits.yaml" 1 "$UP"
wait_ports "$UP"

# Start "${@:3}" under callgrind with counting off (counts to $tmp/$1.<pid>.1, its pid in
# vp) and wait for its port $2: under valgrind a start takes seconds (up to a minute).
callgrind_start() {
  local name=$1 listen=$2; shift 2
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/$name.%p" \
    "$@" >"$tmp/$name.log" 2>&1 &
  vp=$!; pids+=($vp)
  for _ in $(seq 600); do (echo > "/dev/tcp/127.0.0.1/$listen") 2>/dev/null && break; sleep 0.1; done
}

# Stop counting, dump the counts and end the process (no graceful shutdown needed:
# Pingora's waits minutes).
callgrind_stop() {
  callgrind_control -i off "$vp" >/dev/null 2>&1
  callgrind_control -d "$vp" >/dev/null 2>&1
  kill -9 "$vp"; wait "$vp" 2>/dev/null || true
}

targets=(pingora gateway limits)
[ -n "$PREV_BIN" ] && targets+=(previous previous-limits)
for t in "${targets[@]}"; do
  P=$(port); M=$(port)
  case $t in
    pingora) cmd=(target/release/examples/bare_proxy "127.0.0.1:$P" "127.0.0.1:$UP" 1) ;;
    gateway) cmd=("$BIN" run --config "$tmp/gateway.yaml") ;;
    limits) cmd=("$BIN" run --config "$tmp/limits.yaml") ;;
    previous) cmd=("$PREV_BIN" run --config "$tmp/gateway.yaml") ;;
    previous-limits) cmd=("$PREV_BIN" run --config "$tmp/limits.yaml") ;;
  esac
  [ "$t" != pingora ] && cmd+=(--listen "127.0.0.1:$P" --metrics-listen "127.0.0.1:$M")
  callgrind_start "$t" "$P" "${cmd[@]}"
  wrk -t1 -c4 -d3s -s "$tmp/post.lua" "http://127.0.0.1:$P/v1/chat/completions" >/dev/null
  callgrind_control -i on "$vp" >/dev/null 2>&1
  wrk -t1 -c4 -d"${SECS}s" -s "$tmp/post.lua" "http://127.0.0.1:$P/v1/chat/completions" >"$tmp/$t.wrk"
  callgrind_stop
  if grep -q "Non-2xx" "$tmp/$t.wrk"; then
    echo "error: $t answered errors:" >&2; cat "$tmp/$t.wrk" >&2; exit 1
  fi
  callgrind_annotate "$tmp/$t.$vp.1" >"$tmp/$t.annotate" 2>/dev/null
  requests=$(awk '/ requests in /{print $1}' "$tmp/$t.wrk")
  total=$(awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}' "$tmp/$t.annotate")
  memcpy=$(awk '/__memcpy/{gsub(",","",$1); s+=$1} END{print s+0}' "$tmp/$t.annotate")
  echo "$t $requests $total $memcpy" >>"$tmp/results"
done

python3 - "$tmp/results" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    t, n, total, memcpy = line.split()
    n = int(n)
    rows[t] = (n, int(total) / n, int(memcpy) / n)
label = {"pingora": "Pingora's bare proxy", "gateway": "gateway", "limits": "gateway + 4 limits (local)",
         "previous": "previous build", "previous-limits": "previous build + 4 limits"}
base = rows["pingora"][1] - rows["pingora"][2]
print("Instructions per request (callgrind; static upstream, wrk -c4, one worker):\n")
print("| target | requests counted | instructions / request | of which memcpy | the rest | the rest above Pingora |")
print("|---|---:|---:|---:|---:|---:|")
for t, (n, per, mc) in rows.items():
    print(f"| {label[t]} | {n:,} | {per:,.0f} | {mc:,.0f} | {per - mc:,.0f} | {per - mc - base:+,.0f} |")
g, l = rows["gateway"], rows["limits"]
print(f"\nfour limits add {l[1] - g[1]:,.0f} instructions per request ({(l[1] - g[1]) / g[1]:.1%} of the gateway's);"
      f" the gateway runs {(g[1] - g[2]) / base:.2f}x Pingora's instructions, memcpy aside")
if "previous" in rows:
    p, pl = rows["previous"], rows["previous-limits"]
    print(f"this build / previous: gateway {g[1] / p[1]:.3f}x, with limits {l[1] / pl[1]:.3f}x")
PY

# Per relayed stream event.
STREAMS=${STREAMS:-50}; EVENTS=${EVENTS:-40}; INTERVAL_MS=${INTERVAL_MS:-100}
stargets=(pingora:openai gateway:openai gateway:anthropic)
[ -n "$PREV_BIN" ] && stargets+=(previous:openai previous:anthropic)
for st in "${stargets[@]}"; do
  t=${st%:*}; dialect=${st#*:}
  UP2=$(port); P=$(port); M=$(port)
  proxy_gateway_yaml "$tmp/streams-$dialect.yaml" 1 "$UP2" "$dialect"
  case $t in
    pingora) cmd=(target/release/examples/bare_proxy "127.0.0.1:$P" "127.0.0.1:$UP2" 1) ;;
    gateway) cmd=("$BIN" run --config "$tmp/streams-$dialect.yaml") ;;
    previous) cmd=("$PREV_BIN" run --config "$tmp/streams-$dialect.yaml") ;;
  esac
  [ "$t" != pingora ] && cmd+=(--listen "127.0.0.1:$P" --metrics-listen "127.0.0.1:$M")
  callgrind_start "s-$t-$dialect" "$P" "${cmd[@]}"
  callgrind_control -i on "$vp" >/dev/null 2>&1
  target/release/examples/open_streams "127.0.0.1:$P" "127.0.0.1:$UP2" "$vp" \
    "$STREAMS" "$EVENTS" "$INTERVAL_MS" 1 "$dialect" >"$tmp/s-$t-$dialect.json"
  callgrind_stop
  total=$(callgrind_annotate "$tmp/s-$t-$dialect.$vp.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
  echo "$t $dialect $total $tmp/s-$t-$dialect.json" >>"$tmp/sresults"
done

python3 - "$tmp/sresults" <<'PY'
import json, sys
label = {("pingora", "openai"): "Pingora's bare proxy, pass-through",
         ("gateway", "openai"): "gateway, pass-through", ("gateway", "anthropic"): "gateway, translated (Anthropic → chat)",
         ("previous", "openai"): "previous build, pass-through", ("previous", "anthropic"): "previous build, translated"}
print("\nInstructions per relayed stream event (callgrind; whole streams, one worker):\n")
print("| target | events delivered | failed streams | instructions / event |")
print("|---|---:|---:|---:|")
rows = {}
for line in open(sys.argv[1]):
    t, dialect, total, out = line.split()
    d = json.load(open(out))
    if d["failed"] or d["events_stamped"] != d["events_expected"]:
        sys.exit(f"error: {t} {dialect}: {d['failed']} streams failed, first error: {d['first_error']}")
    rows[(t, dialect)] = int(total) / d["events_stamped"]
    print(f"| {label[(t, dialect)]} | {d['events_stamped']:,} | {d['failed']} | {rows[(t, dialect)]:,.0f} |")
g = rows[("gateway", "openai")]
print(f"\nthe gateway passing events through runs {g / rows[('pingora', 'openai')]:.2f}x Pingora's instructions per event")
if ("previous", "openai") in rows:
    print(f"this build / previous: pass-through {g / rows[('previous', 'openai')]:.3f}x, "
          f"translated {rows[('gateway', 'anthropic')] / rows[('previous', 'anthropic')]:.3f}x")
PY
