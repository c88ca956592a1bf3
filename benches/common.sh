# Shared by the benchmark scripts (sourced from the repository root): builds the release
# binary, makes a scratch dir, kills every process listed in `pids` on exit, and `port`
# prints a free loopback port.
cargo build --release -q
BIN=${BIN:-target/release/ai-rate-limiter}
tmp=$(mktemp -d)
pids=()
# Processes get SIGTERM, then SIGKILL after 10 s (a graceful shutdown that waits on a
# client must not hang the benchmark).
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0 p
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The mock upstream every load benchmark proxies to (auth and access log off).
mock_upstream_yaml() { # $1: file, $2: extra mock settings (e.g. "completion_tokens: 64")
  cat > "$1" <<YAML
server: {threads: 1}
logging: {access_log: false, level: warn}
auth: {enabled: false}
providers: [{name: mock, kind: mock, mock: {${2:-}}}]
models: [{name: bench, deployments: [{provider: mock}]}]
reload: {watch: false}
YAML
}

# CPU ticks (user + system) used so far by a process and its children.
ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$total"
}

# One measured wrk run: $1 pid of the target, $2 wrk script, $3 URL, $4 output file
# (wrk's report plus `cpu_ticks: N` of the target during the run).
measured_wrk() {
  local before
  before=$(ticks "$1")
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$2" "$3" > "$4"
  echo "cpu_ticks: $(( $(ticks "$1") - before ))" >> "$4"
}

# Install the Debian packages whose command is missing: `install_missing wrk:wrk nginx:nginx-light`.
install_missing() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Wait (up to 10 s each) until every loopback port given accepts connections.
wait_ports() {
  local p
  for p in "$@"; do
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
  done
}

# A wrk script posting one chat completion: $1 file, $2 stream (true/false), $3 max_tokens.
chat_lua() {
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"bench","stream":${2:-false},"messages":[{"role":"user","content":"Hello, how are you today?"}],"max_tokens":${3:-16}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
LUA
}

# A static upstream: nginx answering every request with one fixed chat completion (cheap,
# so the proxies' own costs show). $1: conf file to write, $2: port. Run it with
# `nginx -c FILE -g 'daemon off;'`.
static_upstream_conf() {
  local answer='{"id":"chatcmpl-static","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! I am a static upstream answering every request the same way."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":14,"total_tokens":23}}'
  cat > "$1" <<NGINX
worker_processes 1;
pid $1.pid;
error_log $1.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1.body;
  server {
    listen 127.0.0.1:$2;
    keepalive_requests 1000000;
    location / { default_type application/json; return 200 '$answer'; }
  }
}
NGINX
}

# A gateway in front of the upstream on port $3 (consumer key sk-bench, no limits).
# $1: file, $2: worker threads, $4: the upstream's dialect as the streams benchmarks name
# it: openai (the default: an openai-compatible provider) or anthropic (translated).
proxy_gateway_yaml() {
  local kind=openai-compatible
  [ "${4:-}" = anthropic ] && kind=anthropic
  cat > "$1" <<YAML
server: {threads: $2}
logging: {access_log: false, level: warn}
consumers: [{name: bench, keys: [sk-bench]}]
providers: [{name: up, kind: $kind, base_url: "http://127.0.0.1:$3/v1", api_key: sk-upstream}]
models: [{name: bench, deployments: [{provider: up}]}]
reload: {watch: false}
YAML
}

# The same gateway with the four limit kinds on, never reached (issue 27's setup): a
# consumer request count and token window, a model leaky bucket, a deployment conn limit.
# $1: file, $2: worker threads, $3: upstream port.
four_limits_yaml() {
  cat > "$1" <<YAML
server: {threads: $2}
logging: {access_log: false, level: warn}
consumers:
  - name: bench
    keys: [sk-bench]
    limits:
      - {name: rpm, count: {count: 100000000, time_window: 60s}}
      - {name: tpm, tokens: {limit: 100000000000, time_window: 60s}}
providers: [{name: up, kind: openai-compatible, base_url: "http://127.0.0.1:$3/v1", api_key: sk-upstream}]
models:
  - name: bench
    limits: [{name: rate, req: {rate: 1000000, burst: 1000000, nodelay: true}}]
    deployments:
      - provider: up
        limits: [{name: conn, conn: {conn: 100000}}]
reload: {watch: false}
YAML
}

# `$1` consumers c1..cN (keys sk-c1..), each with a request window, a token window and a
# nodelay leaky bucket of its own, never reached: the `consumers:` entries of a config.
many_consumers_yaml() {
  local i
  for i in $(seq "$1"); do
    echo "  - {name: c$i, keys: [sk-c$i], limits: [{name: rpm, count: {count: 100000000, time_window: 60s}}, {name: tpm, tokens: {limit: 100000000000, time_window: 60s}}, {name: rate, req: {rate: 1000000, burst: 1000000, nodelay: true}}]}"
  done
}

# A wrk script ($1) sending a small chat completion as one of `$2` consumers at random.
random_consumer_lua() {
  cat > "$1" <<LUA
local body = '{"model":"bench","messages":[{"role":"user","content":"Hello, how are you today?"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
request = function()
  wrk.headers["Authorization"] = "Bearer sk-c" .. math.random($2)
  return wrk.format("POST", "/v1/chat/completions", wrk.headers, body)
end
LUA
}
