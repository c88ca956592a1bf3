#!/usr/bin/env bash
# The one test command: installs what is missing on a fresh Debian machine (cmake for
# Pingora, redis-server, promtool, openssl, curl, chromium, a Python venv with the pinned OpenAI SDK), then
# runs every test: clippy, Rust unit + integration tests (real binary, mock upstreams), and
# the OpenAI Python SDK suite against the real gateway.
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
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in cmake redis-server promtool openssl python3 curl chromium; do
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

say "module dependencies (no file-level cycle, batch does not depend on proxy)"
python3 scripts/deps.py
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --locked --all-targets -q -- -D warnings
say "Rust tests (unit + integration)"
cargo test --locked
say "OpenAI Python SDK tests"
GATEWAY_BIN="$PWD/target/debug/ai-rate-limiter" .venv/bin/python -m pytest -q tests/sdk
