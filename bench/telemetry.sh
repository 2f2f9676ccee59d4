#!/usr/bin/env bash
# Telemetry benchmark: a release hub on its embedded SQLite default and a
# release device-sim on the same machine. Prints one machine-readable line:
#   telemetry devices=… batch=… offered_per_s=… readings_per_s=… ack_p50_ms=… ack_p99_ms=… sent=… acked=… stored=…
# Environment: DEVICES (1000), BATCH (50), RATE readings/s per device (320),
# DURATION seconds (20), RUNS (1). Each run uses a fresh database.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000}
BATCH=${BATCH:-50}
RATE=${RATE:-320}
DURATION=${DURATION:-20}
RUNS=${RUNS:-1}

cargo build --release -q -p hub -p device-sim
hub=target/release/hub
sim=target/release/device-sim

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "hub did not start listening on $1" >&2; return 1
}

for run in $(seq 1 "$RUNS"); do
  dir=$(mktemp -d)
  db="sqlite://$dir/hub.db"
  key=$("$hub" apikey add bench --json --database-url "$db" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  port=$(free_port)
  RUST_LOG=warn "$hub" serve --listen "127.0.0.1:$port" --database-url "$db" 2>"$dir/hub.log" &
  hub_pid=$!
  trap 'kill $hub_pid 2>/dev/null || true' EXIT
  wait_port "$port"
  "$sim" --hub "ws://127.0.0.1:$port/ws/device" --api-key "$key" --devices "$DEVICES" \
    --batch "$BATCH" --rate "$RATE" --duration "$DURATION" --json >"$dir/sim.json" 2>"$dir/sim.log" || {
      echo "device-sim failed; see $dir/sim.log" >&2; tail -5 "$dir/sim.log" >&2; }
  kill -TERM "$hub_pid"; wait "$hub_pid" || true
  trap - EXIT
  python3 - "$dir" "$DEVICES" "$BATCH" "$RATE" <<'PY'
import json, sqlite3, sys
d, devices, batch, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = json.load(open(f"{d}/sim.json"))
stored = sqlite3.connect(f"{d}/hub.db").execute("select count(*) from readings").fetchone()[0]
lat = s["ack_latency_ms"]
print(f"telemetry devices={devices} batch={batch} offered_per_s={devices*rate:.0f} "
      f"readings_per_s={s['readings_per_s']:.0f} ack_p50_ms={lat['p50']:.1f} ack_p99_ms={lat['p99']:.1f} "
      f"ack_max_ms={lat['max']:.1f} sent={s['readings_sent']} acked={s['readings_acked']} stored={stored} "
      f"exactly_once={'yes' if stored == s['readings_acked'] == s['readings_sent'] else 'NO'}")
PY
  rm -rf "$dir"
done
