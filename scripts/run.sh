#!/usr/bin/env bash
# The one run command: installs what the build needs and a fresh Debian machine with
# only Rust lacks (cmake, for the zlib-ng that Pingora's compression links), then builds
# the release binary and runs the gateway on gateway.yaml (arguments are passed to
# `run`, e.g. `--listen 0.0.0.0:9080`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || {
  echo "ERROR: cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
}
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v cc >/dev/null || missing+=(gcc libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages the build needs: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec cargo run --release -- run "$@"
