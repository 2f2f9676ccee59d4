#!/usr/bin/env bash
# Command round-trip benchmark: a release hub with its MQTT bridge on a
# private Mosquitto, a release device-sim streaming telemetry from DEVICES
# devices, and the release command_load sending RATE commands/s to random
# online devices, first via HTTP (POST …/commands?wait=10), then via MQTT
# (request with Response Topic + Correlation Data), DURATION s each.
# Prints one machine-readable line per run and way:
#   commands backend=… hubs=1|2 via=http|mqtt devices=… rate=… achieved_rate=… p50_ms=… p90_ms=… p99_ms=… max_ms=… sent=… succeeded=… failed=… expired=… errors=… timeouts=…
#   … stages_p50_ms=accept:…,to_device:…,delivered:…,result:…,notify:… stages_p99_ms=…
# Round trip = request sent -> final status received (see
# device-sim/src/bin/command_load.rs); measured commands only (after WARMUP).
# The stages split it with the hub's timestamps of the command (1 ms
# resolution): accept = sent -> created_at, to_device = created_at -> sent_at,
# delivered = sent_at -> delivered_at, result = delivered_at -> finished_at,
# notify = finished_at -> final status received.
# HUBS=2 measures the round trip ACROSS hubs: two hubs (instance ids hub-a,
# hub-b) share one Postgres and the broker; the devices connect to hub A and
# command_load sends to hub B (HTTP), or to the broker, where either hub may
# take the request (MQTT shared subscription). Lines then carry hubs=2.
# Environment: BACKEND sqlite (default; postgres forced with HUBS=2),
# HUBS (1), DEVICES (1000),
# RATE commands/s (200), DURATION s per way (30), WARMUP s per way (3),
# RUNS (1), VIAS ("http mqtt"), SIM_RATE readings/s per device (10),
# SIM_BATCH readings per frame (10), WAIT s per command (10).
# Each run uses a fresh database and a fresh broker; everything it starts is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BACKEND:-sqlite}
HUBS=${HUBS:-1}
case "$HUBS" in
  1) ;;
  2) BACKEND=postgres ;;
  *) echo "HUBS must be 1 or 2" >&2; exit 2 ;;
esac
DEVICES=${DEVICES:-1000}
RATE=${RATE:-200}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-3}
RUNS=${RUNS:-1}
VIAS=${VIAS:-"http mqtt"}
SIM_RATE=${SIM_RATE:-10}
SIM_BATCH=${SIM_BATCH:-10}
WAIT=${WAIT:-10}
PG_SETTINGS=(shared_buffers=1GB max_wal_size=8GB checkpoint_timeout=15min)

cargo build --release -q -j 2 -p hub -p device-sim
hub=target/release/hub
sim=target/release/device-sim
load=target/release/command_load
scripts/mosquitto.sh ensure >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on $1" >&2; return 1
}
# Waits until the hub's /readyz is 200 (database up, MQTT bridge subscribed).
wait_ready() {
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "hub not ready after 30 s:" >&2; curl -s "http://127.0.0.1:$1/readyz" >&2 || true; return 1
}

# Long enough for provisioning, ramp-up and every way; stopped when done.
n_vias=$(wc -w <<<"$VIAS")
SIM_DURATION=$(( n_vias * (WARMUP + DURATION + WAIT + 10) + 300 ))

dir="" hub_pid="" hub_b_pid="" sim_pid="" pg_dir=""
stop_pid() {  # SIGTERM, then SIGKILL after 15 s
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$sim_pid"; sim_pid=""
  stop_pid "$hub_pid"; hub_pid=""
  stop_pid "$hub_b_pid"; hub_b_pid=""
  if [ -n "$dir" ]; then
    scripts/mosquitto.sh stop "$dir/mqtt" >/dev/null 2>&1 || true
    [ -n "$pg_dir" ] && { scripts/postgres.sh stop "$pg_dir" >/dev/null 2>&1 || true; }
    if [ -n "${KEEP:-}" ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
  fi
  dir="" pg_dir=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for run in $(seq 1 "$RUNS"); do
  dir=$(mktemp -d /tmp/hub-bench-cmd.XXXXXX)
  chmod 755 "$dir"
  case "$BACKEND" in
    sqlite) db="sqlite://$dir/hub.db" ;;
    postgres)
      pg_dir="$dir/pg"; pg_port=$(free_port)
      scripts/postgres.sh start "$pg_dir" "$pg_port" "${PG_SETTINGS[@]}"
      db=$(scripts/postgres.sh url "$pg_port")
      ;;
    *) echo "BACKEND must be sqlite or postgres" >&2; exit 2 ;;
  esac
  mqtt_port=$(free_port)
  scripts/mosquitto.sh start "$dir/mqtt" "$mqtt_port"
  mqtt_url=$(scripts/mosquitto.sh url "$mqtt_port")
  key=$("$hub" apikey add bench --json --database-url "$db" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  port=$(free_port)
  RUST_LOG=${HUB_LOG:-warn} "$hub" serve --listen "127.0.0.1:$port" --database-url "$db" \
    --mqtt-url "$mqtt_url" --mqtt-prefix hub --instance-id hub-a 2>"$dir/hub.log" &
  hub_pid=$!
  wait_port "$port"
  wait_ready "$port"
  # Where commands are sent: the devices' hub, or the second one.
  api_port=$port
  if [ "$HUBS" = 2 ]; then
    api_port=$(free_port)
    RUST_LOG=${HUB_LOG:-warn} "$hub" serve --listen "127.0.0.1:$api_port" --database-url "$db" \
      --mqtt-url "$mqtt_url" --mqtt-prefix hub --instance-id hub-b 2>"$dir/hub-b.log" &
    hub_b_pid=$!
    wait_port "$api_port"
    wait_ready "$api_port"
  fi
  "$sim" --hub "ws://127.0.0.1:$port/ws/device" --api-key "$key" --devices "$DEVICES" \
    --batch "$SIM_BATCH" --rate "$SIM_RATE" --duration "$SIM_DURATION" --json \
    >"$dir/sim.json" 2>"$dir/sim.log" &
  sim_pid=$!
  for via in $VIAS; do
    if ! kill -0 "$sim_pid" 2>/dev/null; then
      echo "device-sim exited early:" >&2; tail -5 "$dir/sim.log" >&2; exit 1
    fi
    "$load" --api "http://127.0.0.1:$api_port" --api-key "$key" --via "$via" \
      --mqtt-url "$mqtt_url" --mqtt-prefix hub --rate "$RATE" --duration "$DURATION" \
      --warmup "$WARMUP" --wait "$WAIT" --min-devices "$DEVICES" --online-timeout 300 --json \
      >"$dir/load-$via.json" 2>"$dir/load-$via.log" || {
        echo "command_load via $via failed:" >&2; tail -5 "$dir/load-$via.log" >&2; }
    python3 - "$dir/load-$via.json" "$BACKEND" "$DEVICES" "$SIM_RATE" "$SIM_BATCH" "$HUBS" <<'PY'
import json, sys
path, backend, devices, sim_rate, sim_batch, hubs = sys.argv[1:7]
try:
    s = json.load(open(path))
except (OSError, ValueError):
    print(f"commands backend={backend} hubs={hubs} result=missing"); sys.exit(0)
print(f"commands backend={backend} hubs={hubs} via={s['via']} devices={s['devices']} telemetry_per_s={int(devices)*float(sim_rate):.0f} "
      f"sim_batch={sim_batch} rate={s['rate']:g} achieved_rate={s['achieved_rate']:.1f} "
      f"p50_ms={s['p50_ms']:.2f} p90_ms={s['p90_ms']:.2f} p99_ms={s['p99_ms']:.2f} max_ms={s['max_ms']:.2f} "
      f"sched_p99_ms={s['sched_p99_ms']:.2f} sent={s['sent']} succeeded={s['succeeded']} "
      f"failed={s['failed_or_rejected']} expired={s['expired']} errors={s['errors']} timeouts={s['timeouts']} "
      + " ".join(f"stages_{q}_ms=" + ",".join(f"{x['stage']}:{x[q + '_ms']:.1f}" for x in s["stages"]) for q in ("p50", "p99")))
PY
  done
  cleanup
done
