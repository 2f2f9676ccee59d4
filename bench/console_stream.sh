#!/usr/bin/env bash
# Browser-stream benchmark: does the operator console's live stream slow
# ingest? A release hub (SQLite) takes the telemetry load of bench/telemetry.sh
# (DEVICES devices streaming RATE readings/s each) for DURATION seconds,
# once WITHOUT and once WITH `device-sim watch`: CLIENTS browser-stream
# clients on /api/v1/stream, each subscribed to PER_CLIENT devices (100 x 10
# = every one of the 1,000 devices watched by one client), parsing every
# message. RUNS pairs, interleaved (the order alternates pair by pair, so a
# drift of the shared machine does not favour one side), each run on a fresh
# hub and database.
#
# Prints one machine-readable line per run:
#   console_stream run=… mode=without|with readings_per_s=… ack_p99_ms=… hub_cpu_s=… … watch_readings_per_s=… resyncs=… load1=…
# and one summary line with the medians:
#   console_stream_summary … without_readings_per_s=… with_readings_per_s=… ratio=… pair_ratio_median=… target=0.90 result=met|MISSED
# (met when both the ratio of the medians and the median of the pairs'
# ratios reach TARGET).
# Fails (non-zero) when a watched run received no telemetry, when the
# watchers failed, or when a run lost readings, so it cannot pass vacuously.
# STRICT=1 also fails when the ratio misses the target.
#
# Environment: DEVICES (1000), RATE readings/s per device (320), BATCH (50),
# DURATION seconds (20), RUNS pairs (3), CLIENTS (100), PER_CLIENT (10),
# TARGET lowest acceptable with/without ratio (0.90), STRICT (0), BUILD (1;
# 0 uses the release binaries already in target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000}
RATE=${RATE:-320}
BATCH=${BATCH:-50}
DURATION=${DURATION:-20}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-100}
PER_CLIENT=${PER_CLIENT:-10}
TARGET=${TARGET:-0.90}
STRICT=${STRICT:-0}
BUILD=${BUILD:-1}

[ "$BUILD" = 0 ] || cargo build --release -q -p hub -p device-sim
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
# CPU seconds (user + system) a live process has used.
cpu_s() { python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"; }

results=$(mktemp /tmp/console-stream-results.XXXXXX)
failed=0
hub_pid=""
watch_pid=""
dir=""
cleanup() {
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null || true
  [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null || true
  [ -n "$dir" ] && rm -rf "$dir"
  return 0
}
trap 'cleanup; rm -f "$results"' EXIT

# One run: $1 = pair number, $2 = without|with. Appends a JSON line to $results.
run_one() {
  local pair=$1 mode=$2
  dir=$(mktemp -d /tmp/hub-bench.XXXXXX)
  chmod 755 "$dir"
  local db="sqlite://$dir/hub.db"
  local key viewer_key port load1
  key=$("$hub" apikey add bench --json --database-url "$db" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  viewer_key=$("$hub" apikey add console-bench --role viewer --json --database-url "$db" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  port=$(free_port)
  load1=$(cut -d' ' -f1 /proc/loadavg)
  RUST_LOG=warn "$hub" serve --listen "127.0.0.1:$port" --database-url "$db" 2>"$dir/hub.log" &
  hub_pid=$!
  wait_port "$port"
  echo '{}' >"$dir/watch.json"
  if [ "$mode" = with ]; then
    # Subscribes as soon as the load generator has created every device
    # (before its devices connect and stream), watches until SIGINT.
    "$sim" watch --hub "http://127.0.0.1:$port" --key "$viewer_key" --clients "$CLIENTS" \
      --subscribe-per-client "$PER_CLIENT" --wait-devices "$DEVICES" --duration 0 --json \
      >"$dir/watch.json" 2>"$dir/watch.log" &
    watch_pid=$!
  fi
  local sim_rc=0
  "$sim" --hub "ws://127.0.0.1:$port/ws/device" --api-key "$key" --devices "$DEVICES" \
    --batch "$BATCH" --rate "$RATE" --duration "$DURATION" --json >"$dir/sim.json" 2>"$dir/sim.log" || sim_rc=$?
  if [ "$sim_rc" != 0 ]; then
    echo "device-sim failed ($mode run of pair $pair):" >&2; tail -5 "$dir/sim.log" >&2
  fi
  local watch_cpu_s=0 watch_rc=0
  if [ -n "$watch_pid" ]; then
    # Stored telemetry reaches the stream after the commit; let the last
    # acked batches arrive before stopping the watchers.
    sleep 1
    watch_cpu_s=$(cpu_s "$watch_pid")
    kill -INT "$watch_pid"
    wait "$watch_pid" || watch_rc=$?
    watch_pid=""
    if [ "$watch_rc" != 0 ]; then
      echo "device-sim watch failed ($mode run of pair $pair):" >&2; tail -5 "$dir/watch.log" >&2
    fi
  fi
  # The hub's CPU time over the run: noise on a shared machine moves it far
  # less than throughput.
  local hub_cpu_s stored
  hub_cpu_s=$(cpu_s "$hub_pid")
  kill -TERM "$hub_pid"; wait "$hub_pid" || true
  hub_pid=""
  stored=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from readings").fetchone()[0])' "$dir/hub.db")
  python3 - "$dir/sim.json" "$dir/watch.json" "$pair" "$mode" "$stored" "$hub_cpu_s" "$watch_cpu_s" \
    "$load1" "$sim_rc" "$watch_rc" "$results" <<'PY'
import json, sys
sim_path, watch_path, pair, mode, stored = sys.argv[1:6]
hub_cpu_s, watch_cpu_s, load1 = float(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
sim_rc, watch_rc, results = int(sys.argv[9]), int(sys.argv[10]), sys.argv[11]
stored = int(stored)
def load(path):
    try:
        return json.load(open(path))
    except ValueError:
        return {}
s, w = load(sim_path), load(watch_path)
lat = s.get("ack_latency_ms", {})
acked = s.get("readings_acked", 0)
delay = w.get("telemetry_delay_ms", {})
r = {
    "run": int(pair), "mode": mode,
    "readings_per_s": s.get("readings_per_s", 0.0),
    "ack_p50_ms": lat.get("p50", 0.0), "ack_p99_ms": lat.get("p99", 0.0),
    "sent": s.get("readings_sent", 0), "acked": acked, "stored": stored,
    "exactly_once": sim_rc == 0 and stored == acked == s.get("readings_sent", -1),
    "hub_cpu_s": hub_cpu_s, "hub_cpu_us_per_reading": hub_cpu_s * 1e6 / max(stored, 1),
    "load1": load1,
    "watch_ok": watch_rc == 0,
    "watch_clients": w.get("clients_connected", 0),
    "watched_devices": w.get("devices_watched", 0),
    "watch_readings": w.get("readings", 0),
    "watch_readings_per_s": w.get("readings_per_s", 0.0),
    "delivered": w.get("readings", 0) / acked if acked else 0.0,
    "watch_msgs_per_s": w.get("messages_per_s", 0.0),
    "watch_mib_per_s": w.get("mib_per_s", 0.0),
    "delay_p50_ms": delay.get("p50", 0.0), "delay_p99_ms": delay.get("p99", 0.0),
    "resyncs": w.get("resyncs", 0), "disconnects": w.get("disconnects", 0),
    "watch_cpu_s": watch_cpu_s,
}
with open(results, "a") as f:
    f.write(json.dumps(r) + "\n")
line = (f"console_stream run={r['run']} mode={mode} readings_per_s={r['readings_per_s']:.0f} "
        f"ack_p50_ms={r['ack_p50_ms']:.1f} ack_p99_ms={r['ack_p99_ms']:.1f} stored={stored} "
        f"exactly_once={'yes' if r['exactly_once'] else 'NO'} hub_cpu_s={hub_cpu_s:.1f} "
        f"hub_cpu_us_per_reading={r['hub_cpu_us_per_reading']:.2f}")
if mode == "with":
    line += (f" watch_clients={r['watch_clients']} watched_devices={r['watched_devices']} "
             f"watch_readings={r['watch_readings']} watch_readings_per_s={r['watch_readings_per_s']:.0f} "
             f"delivered={r['delivered']:.3f} watch_msgs_per_s={r['watch_msgs_per_s']:.0f} "
             f"watch_mib_per_s={r['watch_mib_per_s']:.1f} delay_p50_ms={r['delay_p50_ms']:.0f} "
             f"delay_p99_ms={r['delay_p99_ms']:.0f} resyncs={r['resyncs']} "
             f"disconnects={r['disconnects']} watch_cpu_s={watch_cpu_s:.1f}")
print(line + f" load1={load1:.2f}", flush=True)
PY
  rm -rf "$dir"
  dir=""
}

for pair in $(seq 1 "$RUNS"); do
  if [ $((pair % 2)) = 1 ]; then order="without with"; else order="with without"; fi
  for mode in $order; do
    run_one "$pair" "$mode"
  done
done

python3 - "$results" "$TARGET" "$STRICT" "$DEVICES" "$RATE" "$CLIENTS" "$PER_CLIENT" "$DURATION" <<'PY' || failed=1
import json, statistics, sys
path, target, strict = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
devices, rate, clients, per_client, duration = sys.argv[4:9]
runs = [json.loads(l) for l in open(path) if l.strip()]
without = [r for r in runs if r["mode"] == "without"]
with_ = [r for r in runs if r["mode"] == "with"]
med = lambda rs, k: statistics.median(r[k] for r in rs) if rs else 0.0
wo, wi = med(without, "readings_per_s"), med(with_, "readings_per_s")
ratio = wi / wo if wo else 0.0
pairs = {}
for r in runs:
    pairs.setdefault(r["run"], {})[r["mode"]] = r["readings_per_s"]
pair_ratios = [p["with"] / p["without"] for p in pairs.values() if p.get("without")]
problems = []
if any(r["watch_readings"] == 0 for r in with_):
    problems.append("a watched run received no telemetry")
if any(not r["watch_ok"] for r in with_):
    problems.append("device-sim watch failed")
if any(not r["exactly_once"] for r in runs):
    problems.append("a run did not store every reading exactly once")
# Both readings of the pairs must meet the target: the ratio of the medians,
# and the median of each pair's own ratio (robust to a pair the machine
# stalled in).
pair_median = statistics.median(pair_ratios) if pair_ratios else 0.0
met = min(ratio, pair_median) >= target
print(f"console_stream_summary devices={devices} offered_per_s={int(devices) * float(rate):.0f} "
      f"clients={clients} per_client={per_client} duration_s={duration} runs={len(pairs)} "
      f"without_readings_per_s={wo:.0f} with_readings_per_s={wi:.0f} ratio={ratio:.3f} "
      f"pair_ratio_median={pair_median:.3f} "
      f"without_hub_cpu_us_per_reading={med(without, 'hub_cpu_us_per_reading'):.2f} "
      f"with_hub_cpu_us_per_reading={med(with_, 'hub_cpu_us_per_reading'):.2f} "
      f"watch_readings_per_s={med(with_, 'watch_readings_per_s'):.0f} "
      f"delivered={med(with_, 'delivered'):.3f} resyncs={med(with_, 'resyncs'):.0f} "
      f"disconnects={med(with_, 'disconnects'):.0f} target={target:.2f} result={'met' if met else 'MISSED'}")
for p in problems:
    print(f"console_stream: FAILED: {p}", file=sys.stderr)
sys.exit(1 if problems or (strict and not met) else 0)
PY
exit "$failed"
