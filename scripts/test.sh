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

echo "== services"
# A throwaway PostgreSQL cluster for the Postgres half of the backend tests
# (installed from Debian's packages when missing, run as an unprivileged user).
pg_dir=$(mktemp -d /tmp/hub-test-pg.XXXXXX)
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  scripts/postgres.sh stop "$pg_dir" >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
scripts/postgres.sh start "$pg_dir" "$pg_port" max_connections=400
HUB_TEST_POSTGRES_URL=$(scripts/postgres.sh url "$pg_port")
export HUB_TEST_POSTGRES_URL
echo "PostgreSQL on port $pg_port"
# Mosquitto for the MQTT tests (installed from Debian's packages when missing).
# Each test starts its own private broker from these binaries, so that it can
# stop and restart it mid-test; there is no shared one.
scripts/mosquitto.sh ensure >/dev/null
HUB_TEST_MOSQUITTO=$(scripts/mosquitto.sh path mosquitto)
HUB_TEST_MOSQUITTO_SUB=$(scripts/mosquitto.sh path mosquitto_sub)
export HUB_TEST_MOSQUITTO HUB_TEST_MOSQUITTO_SUB
echo "Mosquitto at $HUB_TEST_MOSQUITTO"
# Headless Chromium and chromedriver for the console's browser tests
# (installed from Debian's packages when missing); each test starts its own.
scripts/chromium.sh ensure >/dev/null
HUB_TEST_CHROMIUM=$(scripts/chromium.sh path chromium)
HUB_TEST_CHROMEDRIVER=$(scripts/chromium.sh path chromedriver)
export HUB_TEST_CHROMIUM HUB_TEST_CHROMEDRIVER
echo "Chromium at $HUB_TEST_CHROMIUM, chromedriver at $HUB_TEST_CHROMEDRIVER"

echo "== tests"
cargo test --workspace --all-targets

scripts/schemathesis.sh  # the API against its OpenAPI document, on a live hub
