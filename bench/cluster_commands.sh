#!/usr/bin/env bash
# Two-hub command round trip: bench/commands.sh with HUBS=2 (two release hubs
# on one Postgres and one Mosquitto; devices on hub A, commands sent to hub B
# over HTTP, or to the broker, where either hub may take them). Same
# environment and output as bench/commands.sh; lines carry hubs=2.
set -euo pipefail
exec env HUBS=2 "$(dirname "$0")/commands.sh" "$@"
