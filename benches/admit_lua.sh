#!/usr/bin/env bash
# Redis's CPU per admission, run on demand: redis-benchmark replays one admission of
# lua-compat/admit.lua (the four limit kinds of benches/load.sh: a consumer's request
# window, token window and leaky bucket, and a deployment's concurrency limit, never
# rejecting) against a redis-server on loopback, then reads INFO commandstats. BATCH
# admissions ride in one call, as the gateway's group commit sends them under load.
#
#   benches/admit_lua.sh            # defaults: N=200000 BATCH=1 (also try BATCH=8)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
BATCH=${BATCH:-1}
SCRIPT=${SCRIPT:-lua-compat/admit.lua}   # a variant of the script to compare
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing (package redis-tools)"; exit 1; }
RP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$RP" PING >/dev/null 2>&1 && break; sleep 0.1; done
# The gateway loads every limit script with common.lua in front.
sha=$(redis-cli -p "$RP" SCRIPT LOAD "$(cat lua-compat/common.lua "$SCRIPT")")
args=() keys=()
for b in $(seq "$BATCH"); do
  # lease, lease_ttl_ms, estimate, 2 groups of 3 and 1 checks; count, tokens, req | conn.
  args+=("lease$b" 15000 100 2 3 1
         3 100000000 60000 0 -1 0
         4 100000000000 60000 0 -1 0
         1 1000000 1000000 1 -1 0
         2 100000 0 0 -1 0)
  keys+=("c:rpm" "c:rpm" "c:tpm" "c:tpm:r" "m:rate" "m:rate:s" "d:conn" "d:conn")
done
redis-cli -p "$RP" EVALSHA "$sha" "${#keys[@]}" "${keys[@]}" "$BATCH" "${args[@]}" | head -3 >/dev/null
redis-cli -p "$RP" CONFIG RESETSTAT >/dev/null
redis-benchmark -p "$RP" -n "$N" -c 1 -q EVALSHA "$sha" "${#keys[@]}" "${keys[@]}" "$BATCH" "${args[@]}" >/dev/null
redis-cli -p "$RP" INFO commandstats | python3 -c '
import re, sys
batch = int(sys.argv[1])
for l in sys.stdin:
    m = re.match(r"cmdstat_evalsha:calls=(\d+),usec=(\d+)", l.strip())
    if m:
        calls, usec = int(m.group(1)), int(m.group(2))
        print(f"admit.lua: {usec / calls:.2f} µs per call of {batch} admission(s), {usec / calls / batch:.2f} µs per admission ({calls} calls)")
' "$BATCH"
