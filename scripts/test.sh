#!/usr/bin/env bash
# Runs the whole test suite from a fresh checkout: the no_std builds (host and
# a real Cortex-M target) and every test of the workspace. Installs what it
# needs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

target=thumbv7em-none-eabihf
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi

echo "== no_std builds"
cargo build -p schema --no-default-features
cargo build -p schema --no-default-features --target "$target"
cargo build -p firmware-client --no-default-features
cargo build -p firmware-client --no-default-features --target "$target"

echo "== tests"
cargo test --workspace --all-targets
