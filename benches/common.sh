# Shared by the benchmark scripts (sourced from the repository root): builds the release
# binary, makes a scratch dir, kills every process listed in `pids` on exit, and `port`
# prints a free loopback port.
cargo build --release -q
BIN=target/release/ai-rate-limiter
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
