#!/usr/bin/env bash
# The one test command: installs what is missing on a fresh Debian machine (cmake for
# Pingora, redis-server, promtool, openssl, curl, chromium, Node.js and npm, a Python venv
# with the pinned OpenAI and Anthropic SDKs, the pinned Node SDKs and agent CLIs), then
# runs every test:
# the dependency check, fmt, clippy, Rust unit + integration tests (real binary, fake
# upstreams), and the Python and Node SDK suites against the real gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in cmake redis-server promtool openssl python3 curl chromium node npm; do
  command -v "$tool" >/dev/null || die "$tool is still missing after the install step"
done

if [ ! -x .venv/bin/python ]; then
  say "creating the Python venv"
  if ! python3 -m venv .venv 2>/dev/null; then
    rm -rf .venv
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv || die "cannot create a Python venv"
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt \
  || die "cannot install the pinned Python test requirements"
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
  || die "Node.js >= 20 is needed by the pinned Node SDKs (found $(node --version))"
# The pinned Node SDKs, exactly as package-lock.json records them. openai 7.x declares
# Node >= 22; it runs on Node 20 (the suite proves it), so the engine check only warns.
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error) \
  || die "cannot install the pinned Node test packages"
# The coding-agent CLIs (Codex, Claude Code) that tests/agents_cli.rs drives, pinned.
(cd tests/agents && npm ci --no-audit --no-fund --loglevel=error) \
  || die "cannot install the pinned agent CLIs"

say "module dependencies (no cycle between modules or files, layering kept)"
python3 scripts/deps.py
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --locked --all-targets -q -- -D warnings
say "Rust tests (unit + integration)"
cargo test --locked
say "Python SDK tests (openai, anthropic)"
GATEWAY_BIN="$PWD/target/debug/ai-rate-limiter" .venv/bin/python -m pytest -q tests/sdk
say "Node SDK tests (openai, @anthropic-ai/sdk)"
(cd tests/node && GATEWAY_BIN="$PWD/../../target/debug/ai-rate-limiter" npm test --silent)
