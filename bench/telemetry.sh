#!/usr/bin/env bash
# Telemetry benchmark: a release hub and a release device-sim on this machine.
# Prints one machine-readable line per run:
#   telemetry backend=… devices=… batch=… offered_per_s=… readings_per_s=… ack_p50_ms=… ack_p99_ms=… … hub_cpu_s=… hub_cpu_us_per_reading=… exactly_once=yes|NO
# Environment: BACKEND sqlite (default) or postgres, DEVICES (1000), BATCH (50),
# RATE readings/s per device (320), DURATION seconds (20), RUNS (1).
# Each run uses a fresh database (Postgres: a throwaway cluster started by
# scripts/postgres.sh with the settings below, fsync and synchronous_commit on).
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BACKEND:-sqlite}
DEVICES=${DEVICES:-1000}
BATCH=${BATCH:-50}
RATE=${RATE:-320}
DURATION=${DURATION:-20}
RUNS=${RUNS:-1}
PG_SETTINGS=(shared_buffers=1GB max_wal_size=8GB checkpoint_timeout=15min)

[ "${BUILD:-1}" = 0 ] || cargo build --release -q -p hub -p device-sim
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
  dir=$(mktemp -d /tmp/hub-bench.XXXXXX)
  chmod 755 "$dir"
  pg_dir=""
  case "$BACKEND" in
    sqlite) db="sqlite://$dir/hub.db" ;;
    postgres)
      pg_dir="$dir/pg"; pg_port=$(free_port)
      scripts/postgres.sh start "$pg_dir" "$pg_port" "${PG_SETTINGS[@]}"
      db=$(scripts/postgres.sh url "$pg_port")
      ;;
    *) echo "BACKEND must be sqlite or postgres" >&2; exit 2 ;;
  esac
  cleanup() {
    [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null || true
    [ -n "$pg_dir" ] && scripts/postgres.sh stop "$pg_dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
  }
  trap cleanup EXIT
  key=$("$hub" apikey add bench --json --database-url "$db" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  port=$(free_port)
  RUST_LOG=warn "$hub" serve --listen "127.0.0.1:$port" --database-url "$db" 2>"$dir/hub.log" &
  hub_pid=$!
  wait_port "$port"
  "$sim" --hub "ws://127.0.0.1:$port/ws/device" --api-key "$key" --devices "$DEVICES" \
    --batch "$BATCH" --rate "$RATE" --duration "$DURATION" --json >"$dir/sim.json" 2>"$dir/sim.log" || {
      echo "device-sim failed:" >&2; tail -5 "$dir/sim.log" >&2; }
  # The hub's CPU time (user + system) over the run: a figure that noise on
  # a shared machine moves far less than throughput.
  hub_cpu_s=$(python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$hub_pid")
  kill -TERM "$hub_pid"; wait "$hub_pid" || true
  hub_pid=""
  case "$BACKEND" in
    sqlite) stored=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from readings").fetchone()[0])' "$dir/hub.db") ;;
    postgres) stored=$(psql "$db" -tAc "select count(*) from readings") ;;
  esac
  python3 - "$dir/sim.json" "$BACKEND" "$DEVICES" "$BATCH" "$RATE" "$stored" "$hub_cpu_s" <<'PY'
import json, sys
path, backend, devices, batch, rate, stored = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
hub_cpu_s = float(sys.argv[7])
s = json.load(open(path))
lat = s["ack_latency_ms"]
ok = stored == s["readings_acked"] == s["readings_sent"]
print(f"telemetry backend={backend} devices={devices} batch={batch} offered_per_s={devices*rate:.0f} "
      f"readings_per_s={s['readings_per_s']:.0f} ack_p50_ms={lat['p50']:.1f} ack_p99_ms={lat['p99']:.1f} "
      f"ack_max_ms={lat['max']:.1f} sent={s['readings_sent']} acked={s['readings_acked']} stored={stored} "
      f"hub_cpu_s={hub_cpu_s:.1f} hub_cpu_us_per_reading={hub_cpu_s * 1e6 / max(stored, 1):.2f} "
      f"exactly_once={'yes' if ok else 'NO'}")
PY
  cleanup
  trap - EXIT
done
