#!/usr/bin/env bash
# The Admin API's keys on the hot path (issue 26, item 9): one binary, two gateways side
# by side — one whose consumer key is in gateway.yaml, one whose key is one of 100,000
# consumers and keys made through the Admin API (written to its admin.db beforehand) —
# under wrk on loopback, interleaved rounds, medians: throughput and CPU per request. Then
# the cost of one admin write with 100,000 keys (the snapshot is rebuilt) and each
# gateway's RSS.
#
#   benches/admin_keys.sh          # ROUNDS=3 DURATION=8 CONNS=32 KEYS=100000
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
KEYS=${KEYS:-100000}
. benches/common.sh
install_missing wrk:wrk
UP=$(port); UPM=$(port)
mock_upstream_yaml "$tmp/upstream.yaml"
"$BIN" run --config "$tmp/upstream.yaml" --listen 127.0.0.1:$UP --metrics-listen 127.0.0.1:$UPM >"$tmp/up.log" 2>&1 & pids+=($!)
for v in file api; do
  mkdir -p "$tmp/$v"
  cat > "$tmp/$v/gateway.yaml" <<YAML
server: {threads: 1}
logging: {access_log: false, level: warn}
admin: {keys: [{id: bench, key: admin-bench-key-0123456789}], store: sqlite, data_dir: data}
consumers: [{name: filed, keys: [sk-bench]}]
providers: [{name: up, kind: openai-compatible, base_url: "http://127.0.0.1:$UP/v1", api_key: sk-upstream-0123456789}]
models: [{name: bench, deployments: [{provider: up}]}]
reload: {watch: false}
YAML
done
# The API gateway's store: made by the gateway (its schema), then filled directly.
p=$(port); m=$(port)
"$BIN" run --config "$tmp/api/gateway.yaml" --listen 127.0.0.1:$p --metrics-listen 127.0.0.1:$m >"$tmp/init.log" 2>&1 & init=$!
wait_ports $m; sleep 0.5; kill $init; wait $init 2>/dev/null || true
python3 - "$tmp/api/data/admin.db" "$KEYS" <<'PY'
import hashlib, json, sqlite3, sys
db, n = sqlite3.connect(sys.argv[1]), int(sys.argv[2])
spec = json.dumps({"limits": [], "metadata": {}, "disabled": False, "expires_at": None, "models": []})
db.executemany("INSERT INTO consumers VALUES (?, ?, 1, 1, 1)", ((f"c{i}", spec) for i in range(n)))
key = lambda i: "sk-bench" if i == n // 2 else f"sk-gw-bench-{i:012d}"
db.executemany("INSERT INTO keys VALUES (?, ?, ?, ?, 1, NULL, NULL)",
    ((f"key_{i:012x}", f"c{i}", hashlib.sha256(key(i).encode()).hexdigest(), key(i)[:10]) for i in range(n)))
db.execute("UPDATE meta SET v = 1 WHERE k = 'version'")
db.commit()
PY
# The file gateway's key is the same string, so both serve the same requests.
sed -i 's/consumers: \[{name: filed, keys: \[sk-bench\]}\]/consumers: []/' "$tmp/api/gateway.yaml"
declare -A port proc admin
for v in file api; do
  p=$(port); m=$(port)
  (cd "$tmp/$v" && exec "$OLDPWD/$BIN" run --config gateway.yaml --listen 127.0.0.1:$p --metrics-listen 127.0.0.1:$m >"$tmp/$v.log" 2>&1) & pids+=($!)
  port[$v]=$p; proc[$v]=$!; admin[$v]=$m
done
wait_ports $UP "${port[@]}" "${admin[@]}"
sleep 2
for v in file api; do
  kill -0 "${proc[$v]}" 2>/dev/null || { echo "the $v gateway exited:"; cat "$tmp/$v.log"; exit 1; }
done
chat_lua "$tmp/post.lua"
for v in file api; do
  wrk -t1 -c"$CONNS" -d2s -s "$tmp/post.lua" "http://127.0.0.1:${port[$v]}/v1/chat/completions" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  for v in file api; do
    measured_wrk "${proc[$v]}" "$tmp/post.lua" \
      "http://127.0.0.1:${port[$v]}/v1/chat/completions" "$tmp/wrk-$v-$r.txt"
  done
done
# One admin write with every key present (the snapshot is rebuilt).
curl -s -o /dev/null -H 'x-api-key: admin-bench-key-0123456789' "http://127.0.0.1:${admin[api]}/admin/consumers" \
  -d '{"name": "warm"}'
write_ms=$( { /usr/bin/time -f %e curl -s -o /dev/null -H 'x-api-key: admin-bench-key-0123456789' \
  "http://127.0.0.1:${admin[api]}/admin/consumers/warm/keys" -X POST; } 2>&1 )
for v in file api; do
  pid=${proc[$v]}
  echo "rss_kib_$v: $(awk '/VmRSS/ {print $2}' /proc/$pid/status)" >> "$tmp/rss.txt"
done
python3 - "$tmp" "$ROUNDS" "$(getconf CLK_TCK)" "$KEYS" "$write_ms" <<'PY'
import re, statistics, sys
tmp, rounds, tck, keys, write_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
res = {}
print(f"\n| consumer key | req/s | CPU µs/request |\n|---|---:|---:|")
for v, label in (("file", "in gateway.yaml"), ("api", f"one of {keys} made by the Admin API")):
    rps, cpu = [], []
    for r in range(1, rounds + 1):
        t = open(f"{tmp}/wrk-{v}-{r}.txt").read()
        if "Non-2xx" in t:
            sys.exit(f"errors from {v}:\n{t}")
        n = int(re.search(r"(\d+) requests in", t).group(1))
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
        cpu.append(int(re.search(r"cpu_ticks: (\d+)", t).group(1)) / tck / n * 1e6)
    res[v] = (statistics.median(rps), statistics.median(cpu))
    print(f"| {label} | {res[v][0]:,.0f} | {res[v][1]:.1f} |")
print(f"api / file: throughput {res['api'][0]/res['file'][0]:.3f}x, CPU per request {res['api'][1]/res['file'][1]:.3f}x")
print(f"one admin write (a key created) with {keys} keys: {float(write_s)*1000:.0f} ms")
print(open(f"{tmp}/rss.txt").read())
PY
