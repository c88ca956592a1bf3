#!/usr/bin/env bash
# Open streams benchmark, run on demand (issue 27, goals 3 and 4): STREAMS slow chat
# streams held open at once through one gateway (one worker thread), each an event every
# INTERVAL_MS for EVENTS events, opened over SPREAD seconds, first passed through (an
# openai-compatible upstream) and then translated (an Anthropic upstream, asked through
# chat completions). Prints, per kind: events delivered of those sent, failed streams,
# added delay per event (p50, p99, max; upstream write to client read, loopback), the
# gateway's RSS per open stream (peak over the RSS before), the RSS after the streams end,
# and the gateway's user and kernel CPU per relayed event: over the whole run (each
# stream's setup included), and while every stream is open (the relay alone). Then the
# same pass-through streams through the floors, one worker each: Pingora's bare reverse
# proxy (benches/bare_proxy.rs) and nginx (`proxy_buffering off`); FLOORS=0 skips them.
# Loopback only; `ulimit -n` is raised for the run (as root; otherwise STREAMS must fit
# the hard limit).
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
# One measured round against the process $1 listening on $2 (upstream on $3): $4 is the
# dialect, $5 the output's name.
measure() {
  wait_ports $2
  target/release/examples/open_streams 127.0.0.1:$2 127.0.0.1:$3 $1 \
    "$STREAMS" "$EVENTS" "$INTERVAL_MS" "$SPREAD" $4 > "$tmp/$5.json"
}
for dialect in openai anthropic; do
  UP=$(port); GW=$(port); GWM=$(port)
  proxy_gateway_yaml "$tmp/gw-$dialect.yaml" 1 "$UP" "$dialect"
  "$BIN" run --config "$tmp/gw-$dialect.yaml" --listen 127.0.0.1:$GW --metrics-listen 127.0.0.1:$GWM >"$tmp/gw-$dialect.log" 2>&1 &
  gw_pid=$!; pids+=($gw_pid)
  measure $gw_pid $GW $UP $dialect $dialect
  kill $gw_pid; wait $gw_pid 2>/dev/null || true
done

# The floors, passing the same streams through: Pingora's bare reverse proxy (the HTTP
# stack the gateway is built on) and nginx (proxy_buffering off), one worker each.
if [ "${FLOORS:-1}" = 1 ]; then
  install_missing nginx:nginx-light
  cargo build --release -q --example bare_proxy
  UP=$(port); PB=$(port)
  target/release/examples/bare_proxy 127.0.0.1:$PB 127.0.0.1:$UP 1 >"$tmp/pb.log" 2>&1 &
  pb_pid=$!; pids+=($pb_pid)
  measure $pb_pid $PB $UP openai pingora
  kill -9 $pb_pid; wait $pb_pid 2>/dev/null || true  # its graceful shutdown waits minutes

  UP=$(port); NG=$(port)
  mkdir -p "$tmp/ng"
  cat > "$tmp/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile $want;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections $(( want * 2 )); }  # above the fd limit (nginx warns): at the limit it closed streams
http {
  access_log off;
  client_body_temp_path $tmp/ng/body;
  proxy_temp_path $tmp/ng/proxy;
  upstream up { server 127.0.0.1:$UP; keepalive 256; }
  server {
    listen 127.0.0.1:$NG backlog=4096;
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-upstream";
      proxy_buffering off;
      proxy_read_timeout 600s;
      proxy_pass http://up;
    }
  }
}
NGINX
  nginx -c "$tmp/nginx.conf" -g 'daemon off;' & ng_pid=$!; pids+=($ng_pid)
  wait_ports $NG
  # The worker serves the streams: its RSS and CPU are what is measured.
  ng_worker=$(pgrep -P $ng_pid | head -1)
  measure $ng_worker $NG $UP openai nginx
  kill $ng_pid; wait $ng_pid 2>/dev/null || true
fi
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
print("| stream | events delivered | failed | delay p50 / p99 / max (ms) | KiB per open stream | RSS before / peak / after (MiB) | user / kernel CPU µs per event | the same, every stream open |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
import os
for name, label in (("openai", "gateway, pass-through"), ("anthropic", "gateway, translated (Anthropic → chat)"),
                    ("pingora", "Pingora's bare proxy, pass-through"), ("nginx", "nginx, pass-through")):
    if not os.path.exists(f"{tmp}/{name}.json"):
        continue
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
