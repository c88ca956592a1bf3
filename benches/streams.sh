#!/usr/bin/env bash
# Open streams benchmark, run on demand (issue 27, goals 3 and 4): STREAMS slow chat
# streams held open at once through one gateway (one worker thread), each an event every
# INTERVAL_MS for EVENTS events, opened over SPREAD seconds, first passed through (an
# openai-compatible upstream) and then translated (an Anthropic upstream, asked through
# chat completions). Prints, per kind: events delivered of those sent, failed streams,
# added delay per event (p50, p99, max; upstream write to client read, loopback), the
# gateway's RSS per open stream (peak over the RSS before), the RSS after the streams end,
# and the gateway's user and kernel CPU per relayed event: over the whole run (each
# stream's setup included), and while every stream is open (the relay alone). Loopback only; `ulimit -n` is
# raised for the run (as root; otherwise STREAMS must fit the hard limit).
#
#   benches/streams.sh            # defaults: STREAMS=20000 EVENTS=30 INTERVAL_MS=1000 SPREAD=10
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS=${STREAMS:-20000}
EVENTS=${EVENTS:-30}
INTERVAL_MS=${INTERVAL_MS:-1000}
SPREAD=${SPREAD:-10}
. benches/common.sh
cargo build --release -q --example open_streams
# Each stream holds two sockets in the gateway (client and upstream) and two in the
# benchmark's process: raise the open-files limit, or fit STREAMS to the hard limit when
# it cannot be raised (a container without CAP_SYS_RESOURCE).
want=$(( STREAMS * 2 + 1024 ))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt $want ]; then
  if ! ulimit -Hn $want 2>/dev/null; then
    STREAMS=$(( ($(ulimit -Hn) - 1024) / 2 ))
    want=$(ulimit -Hn)
    echo "note: open files are capped at $want here (hard limit); STREAMS lowered to $STREAMS" >&2
  fi
fi
ulimit -n $want
for dialect in openai anthropic; do
  UP=$(port); GW=$(port); GWM=$(port)
  kind="kind: openai-compatible"; [ $dialect = anthropic ] && kind="kind: anthropic"
  cat > "$tmp/gw-$dialect.yaml" <<YAML
server: {threads: 1}
logging: {access_log: false, level: warn}
consumers: [{name: bench, keys: [sk-bench]}]
providers: [{name: up, $kind, base_url: "http://127.0.0.1:$UP/v1", api_key: sk-upstream}]
models: [{name: bench, deployments: [{provider: up}]}]
reload: {watch: false}
YAML
  "$BIN" run --config "$tmp/gw-$dialect.yaml" --listen 127.0.0.1:$GW --metrics-listen 127.0.0.1:$GWM >"$tmp/gw-$dialect.log" 2>&1 &
  gw_pid=$!; pids+=($gw_pid)
  wait_ports $GW
  target/release/examples/open_streams 127.0.0.1:$GW 127.0.0.1:$UP $gw_pid \
    "$STREAMS" "$EVENTS" "$INTERVAL_MS" "$SPREAD" $dialect > "$tmp/$dialect.json"
  kill $gw_pid; wait $gw_pid 2>/dev/null || true
done
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
print("| stream | events delivered | failed | delay p50 / p99 / max (ms) | KiB per open stream | RSS before / peak / after (MiB) | user / kernel CPU µs per event | the same, every stream open |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, label in (("openai", "pass-through"), ("anthropic", "translated (Anthropic → chat)")):
    r = json.load(open(f"{tmp}/{name}.json"))
    mib = lambda k: r[k] / 1024
    print(f"| {label} | {r['events_stamped']:,} of {r['events_expected']:,} | {r['failed']} | "
          f"{r['delay_p50_ms']:.1f} / {r['delay_p99_ms']:.1f} / {r['delay_max_ms']:.1f} | "
          f"{r['kib_per_stream']:.1f} | {mib('rss_base_kib'):.0f} / {mib('rss_peak_kib'):.0f} / {mib('rss_after_kib'):.0f} | "
          f"{r['user_us_per_event']:.2f} / {r['sys_us_per_event']:.2f} | "
          f"{r['steady_user_us_per_event']:.2f} / {r['steady_sys_us_per_event']:.2f} |")
    if r["failed"]:
        print(f"  first error ({label}): {r['first_error']}")
PY
