#!/usr/bin/env bash
# Connection benchmark: one release hub (or HUBS of them on one database)
# holding many idle authenticated device connections with its heartbeat, then
# a reconnect storm.
# Prints one machine-readable line per run:
#   connections backend=… tls=no|yes devices_requested=… devices_held=… fd_limited=no|yes procs=… hubs=…
#     connected=… failed=… connect_rate_per_s=… connect_p50_ms=… connect_p99_ms=…
#     rss_base_mib=… rss_held_mib=… rss_per_conn_kib=… heartbeat_cpu_pct=… hold_s=… ping_s=…
#     pings=… dropped=… storm_cut=… storm_reconnected=… storm_failed=… storm_failed_attempts=… storm_s=…
#     storm_rate_per_s=… storm_p50_ms=… storm_p99_ms=…
#     storm_hub_user_us=… storm_hub_sys_us=… storm_sim_user_us=… storm_sim_sys_us=…
#     rss_after_storm_mib=… sim_rss_per_conn_kib=… sim_cpu_us_per_connect=… ok=yes|NO
# What is measured:
# - rss_per_conn_kib: (hub VmRSS while holding, the largest sample, minus
#   VmRSS after provisioning and before any device connected) / connected.
# - connect_rate_per_s: Welcomes of all device-sim processes / wall time from
#   the first attempt of any to the last Welcome of any (likewise storm_rate
#   from the cut to the last Welcome; a device whose reconnect fails retries
#   up to 5 times, storm_failed counts those that never made it and
#   storm_failed_attempts every failed attempt). Latency percentiles are the worst
#   process's (per-process histograms cannot be merged from their summaries).
# - heartbeat_cpu_pct: hub CPU time (user + system) during the hold / hold
#   time: what pinging and ponging the idle connections costs.
# - storm_{hub,sim}_{user,sys}_us: CPU time (user, kernel) of the hub and of
#   all device-sim processes from the storm's start to its last Welcome,
#   divided by the reconnects: what one disconnect plus one authenticated
#   reconnect costs each side. On one machine both sides share its cores, so
#   the storm rate cannot exceed cores / (sum of the four) per second.
# - sim_rss_per_conn_kib: the device-sim processes' summed VmRSS while
#   holding (largest sample) / connected, and sim_cpu_us_per_connect their
#   CPU time from start to the end of the ramp / connected (kernel loopback
#   work included): the load generator's own cost.
# The devices are split over ceil(DEVICES_HELD / PER_PROC) `device-sim
# connections` processes (with HUBS > 1: that rounded up to a multiple of
# HUBS), each with its own slice of one tokens file (--offset) and its own
# ADDRS_PER_PROC source addresses in 127.P.0.0/24, so no process exceeds its
# open-file limit and no source address runs out of ephemeral ports. They
# are lined up with SIGUSR1: hold starts when every process has finished its
# ramp, the storm starts in all at once.
# File descriptors: the hub holds one per connection, and its hard
# RLIMIT_NOFILE (`ulimit -Hn`) cannot be raised without privileges; when
# DEVICES + 400 exceeds it, the run holds (hard limit - 400) connections and
# says fd_limited=yes.
# Several hubs (HUBS=N, N > 1; needs BACKEND=postgres, since SQLite is one
# hub's file): N hubs (`--instance-id hub-0` … `hub-N-1`, each on its own
# port) share one PostgreSQL database, the devices are provisioned through
# hub-0's API, and the device-sim processes (a multiple of N, at least N,
# the devices split evenly over them) connect to hub p mod N, so every hub
# holds about DEVICES / N. It exists to show 100,000 devices connected at
# once on a machine whose per-process descriptor limit is 20,000: the cap is
# then (hard limit - 400) per hub × N hubs. The hub-side figures are summed
# over the hubs: rss_{base,held,after_storm}_mib (rss_held: the largest
# sample of the sum), rss_per_conn_kib (summed growth / connected),
# heartbeat_cpu_pct (summed CPU / hold time, so above 100 means more than one
# core), storm_hub_{user,sys}_us, hub_gauge and the refusals; a stderr line
# gives each hub's gauge while holding.
# Environment: HUBS hubs (1), BACKEND sqlite (default) or postgres, DEVICES
# (100000), PER_PROC devices per device-sim process (19000), HOLD seconds
# (60), PING hub ping interval in seconds (20, the hub's default),
# CONCURRENCY attempts in flight per process (1024), ADDRS_PER_PROC (8),
# THREADS runtime threads per device-sim process (1; 0: one per core), TLS=1
# for wss:// (a `hub dev-certs` CA), RUNS (1), BUILD=0 to use the release
# binaries as they are instead of building them first. Each run uses a fresh database.
set -euo pipefail
cd "$(dirname "$0")/.."

HUBS=${HUBS:-1}
BACKEND=${BACKEND:-sqlite}
DEVICES=${DEVICES:-100000}
PER_PROC=${PER_PROC:-19000}
HOLD=${HOLD:-60}
PING=${PING:-20}
CONCURRENCY=${CONCURRENCY:-1024}
THREADS=${THREADS:-1}
ADDRS_PER_PROC=${ADDRS_PER_PROC:-8}
TLS=${TLS:-0}
RUNS=${RUNS:-1}
BUILD=${BUILD:-1}
PG_SETTINGS=(shared_buffers=1GB max_wal_size=8GB checkpoint_timeout=15min)

if ! [[ "$HUBS" =~ ^[1-9][0-9]*$ ]]; then echo "HUBS must be a positive integer" >&2; exit 2; fi
if [ "$HUBS" -gt 1 ]; then
  if [ "$BACKEND" != postgres ]; then
    echo "connections.sh: HUBS=$HUBS needs BACKEND=postgres: several hubs share one database," \
         "and a SQLite database is one hub's file" >&2
    exit 2
  fi
  # Each hub keeps a pool of about 11 database connections.
  PG_SETTINGS+=(max_connections=300)
fi

if [ "$BUILD" != 0 ]; then cargo build --release -q -p hub -p device-sim; fi
hub=target/release/hub
sim=target/release/device-sim

# One hub process cannot hold more connections than its open-file limit.
hard=$(ulimit -Hn)
held=$DEVICES
fd_limited=no
# The hub keeps 256 descriptors for itself (hub/src/fd_limit.rs) and caps
# connections there; 144 more stay free for the API and metrics scrapes.
if [ "$hard" != unlimited ] && [ "$DEVICES" -gt $((HUBS * (hard - 400))) ]; then
  held=$((HUBS * (hard - 400)))
  fd_limited=yes
  if [ "$HUBS" -eq 1 ]; then
    echo "connections.sh: the open-file hard limit is $hard (ulimit -Hn) and cannot be raised" \
         "without CAP_SYS_RESOURCE; one hub holds one descriptor per connection, so this run" \
         "holds $held of the $DEVICES devices asked for (fd_limited=yes)." >&2
  else
    echo "connections.sh: the open-file hard limit is $hard (ulimit -Hn) and cannot be raised" \
         "without CAP_SYS_RESOURCE; one hub holds one descriptor per connection, so each hub" \
         "holds at most $((hard - 400)), and $HUBS hubs × $((hard - 400)) = $held of the" \
         "$DEVICES devices asked for (fd_limited=yes)." >&2
  fi
fi
ulimit -Sn "$hard"
procs=$(((held + PER_PROC - 1) / PER_PROC))
if [ "$HUBS" -gt 1 ]; then
  # Every hub gets the same number of processes (at least one), and the
  # devices are split evenly over them, so no hub gets more than
  # ceil(held / HUBS) <= hard - 400 and no process more than PER_PROC.
  [ "$procs" -lt "$HUBS" ] && procs=$HUBS
  procs=$(((procs + HUBS - 1) / HUBS * HUBS))
fi
if [ "$procs" -gt 254 ]; then echo "too many processes: raise PER_PROC" >&2; exit 2; fi
idle_timeout=$((PING * 3 > 60 ? PING * 3 : 60))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "hub did not start listening on $1" >&2; return 1
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# User and system CPU seconds of a process: "user sys".
cpu_split() { python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); t=os.sysconf("SC_CLK_TCK"); print(int(f[11])/t, int(f[12])/t)' "$1"; }
# Sums "user sys" pairs given as arguments.
sum_split() { python3 -c 'import sys; p=[a.split() for a in sys.argv[1:]]; print(sum(float(u) for u, _ in p), sum(float(s) for _, s in p))' "$@"; }
# Sums "user sys" of every device-sim process (one that ended counts 0).
sims_cpu_split() {
  local pairs=() pid
  for pid in "${sim_pids[@]}"; do pairs+=("$(cpu_split "$pid" 2>/dev/null || echo "0 0")"); done
  sum_split "${pairs[@]}"
}
# Sums "user sys" of every hub (a hub that ended fails the run).
hubs_cpu_split() {
  local pairs=() pid
  for pid in "${hub_pids[@]}"; do pairs+=("$(cpu_split "$pid")") || return 1; done
  sum_split "${pairs[@]}"
}
cpu_s() { python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"; }
# CPU seconds (user + system) of every hub, summed.
hubs_cpu_s() {
  local split
  split=$(hubs_cpu_split) || return 1
  python3 -c 'import sys; print(sum(map(float, sys.argv[1].split())))' "$split"
}
# VmRSS of every hub, summed (KiB).
hubs_rss_kib() {
  local sum=0 pid r
  for pid in "${hub_pids[@]}"; do
    r=$(rss_kib "$pid") && [ -n "$r" ] || return 1
    sum=$((sum + r))
  done
  echo "$sum"
}
# Waits until every device-sim log shows MARKER (or its process ended).
wait_marker() {
  local marker=$1 limit=$2 start=$SECONDS
  while :; do
    local missing=0
    for p in $(seq 0 $((procs - 1))); do
      if ! grep -q "$marker" "$dir/sim$p.log" 2>/dev/null && kill -0 "${sim_pids[$p]}" 2>/dev/null; then
        missing=$((missing + 1))
      fi
    done
    [ "$missing" -eq 0 ] && return 0
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "connections.sh: $missing processes did not reach '$marker' in $limit s" >&2; return 1
    fi
    sleep 0.2
  done
}

for run in $(seq 1 "$RUNS"); do
  dir=$(mktemp -d /tmp/hub-conn-bench.XXXXXX)
  chmod 755 "$dir"
  pg_dir=""
  sim_pids=()
  hub_pids=()
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
    for pid in "${sim_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${hub_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${hub_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "$pg_dir" ] && scripts/postgres.sh stop "$pg_dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
  }
  trap cleanup EXIT
  key=$("$hub" apikey add bench --json --database-url "$db" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  tls_flags=()
  sim_tls=()
  if [ "$TLS" = 1 ]; then
    "$hub" dev-certs "$dir/certs" >/dev/null
    tls_flags=(--tls-cert "$dir/certs/server.pem" --tls-key "$dir/certs/server-key.pem")
    sim_tls=(--ca "$dir/certs/ca.pem")
    scheme=https; ws_scheme=wss
    curl_tls=(--cacert "$dir/certs/ca.pem")
  else
    scheme=http; ws_scheme=ws
    curl_tls=()
  fi
  # The hubs, one port and one instance id each, all on the same database.
  hub_ports=(); hub_bases=(); hub_wss=()
  for i in $(seq 0 $((HUBS - 1))); do
    port=$(free_port)
    hub_ports+=("$port")
    hub_bases+=("$scheme://127.0.0.1:$port")
    hub_wss+=("$ws_scheme://127.0.0.1:$port/ws/device")
    RUST_LOG=warn "$hub" serve --listen "127.0.0.1:$port" --database-url "$db" --instance-id "hub-$i" \
      --max-connections $((held + 1000)) --ping-interval-secs "$PING" \
      --idle-timeout-secs "$idle_timeout" "${tls_flags[@]}" 2>"$dir/hub$i.log" &
    hub_pids+=($!)
  done
  for port in "${hub_ports[@]}"; do wait_port "$port"; done
  base=${hub_bases[0]}
  # hub_devices_connected of each hub, one per line.
  hub_gauges() {
    local b
    for b in "${hub_bases[@]}"; do
      curl -s "${curl_tls[@]}" "$b/metrics" | awk '$1 == "hub_devices_connected" { v = $2 } END { print (v == "" ? "?" : v) }'
    done
  }
  connected_gauge() { hub_gauges | awk '{ n += $1 } END { print n + 0 }'; }

  # Devices (through the first hub's API), then the hubs' memory before any
  # of them connects.
  provision_start=$SECONDS
  "$sim" connections --hub "$base" --api-key "$key" --devices "$held" "${sim_tls[@]}" \
    --tokens-out "$dir/tokens.txt" --provision-only --provision-concurrency 64 2>"$dir/provision.log" || {
      echo "provisioning failed:" >&2; tail -5 "$dir/provision.log" >&2; exit 1; }
  echo "connections.sh: provisioned $held devices in $((SECONDS - provision_start)) s" >&2
  sleep 2
  rss_base=$(hubs_rss_kib)

  # The ramp: every process connects its slice, then waits for SIGUSR1.
  # One hub: PER_PROC devices per process, the rest in the last. Several:
  # contiguous slices as even as possible, process p on hub p mod HUBS.
  for p in $(seq 0 $((procs - 1))); do
    if [ "$HUBS" -eq 1 ]; then
      offset=$((p * PER_PROC))
      count=$((held - offset < PER_PROC ? held - offset : PER_PROC))
    else
      share=$((held / procs)); rest=$((held % procs))
      offset=$((p * share + (p < rest ? p : rest)))
      count=$((share + (p < rest ? 1 : 0)))
    fi
    net=$((p + 1))
    addrs="127.$net.0.2-127.$net.0.$((ADDRS_PER_PROC + 1))"
    "$sim" connections --hub "${hub_wss[$((p % HUBS))]}" --tokens "$dir/tokens.txt" --offset "$offset" --devices "$count" \
      --source-addrs "$addrs" --connect-concurrency "$CONCURRENCY" --connect-timeout 60 --threads "$THREADS" \
      --wait-signal --storm --json "${sim_tls[@]}" >"$dir/sim$p.json" 2>"$dir/sim$p.log" &
    sim_pids+=($!)
  done
  wait_marker "ramp done" 600
  sim_cpu=0
  for pid in "${sim_pids[@]}"; do
    sim_cpu=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))' "$sim_cpu" "$(cpu_s "$pid" 2>/dev/null || echo 0)")
  done
  # The hub's gauge settles right after the last Welcome.
  for _ in $(seq 1 50); do
    gauge=$(connected_gauge); [ "${gauge:-0}" -ge "$held" ] && break; sleep 0.2
  done

  # The hold: the hubs' memory and CPU with every device connected and pinged.
  cpu0=$(hubs_cpu_s)
  rss_held=0
  sim_rss=0
  hold_start=$SECONDS
  while [ $((SECONDS - hold_start)) -lt "$HOLD" ]; do
    r=$(hubs_rss_kib); [ "$r" -gt "$rss_held" ] && rss_held=$r
    s=0; for pid in "${sim_pids[@]}"; do s=$((s + $(rss_kib "$pid" 2>/dev/null || echo 0))); done
    [ "$s" -gt "$sim_rss" ] && sim_rss=$s
    sleep 1
  done
  cpu1=$(hubs_cpu_s)
  hold_s=$((SECONDS - hold_start))
  gauges_held=$(hub_gauges)
  gauge_held=$(echo "$gauges_held" | awk '{ n += $1 } END { print n + 0 }')
  if [ "$HUBS" -gt 1 ]; then
    echo "connections.sh: devices per hub while holding (hub_devices_connected):" \
         "$(echo "$gauges_held" | awk '{ printf "%shub-%d:%s", (NR > 1 ? " " : ""), NR - 1, $1 }')" >&2
  fi

  # The storm, in every process at once; then they close and report.
  storm_hub0=$(hubs_cpu_split); storm_sim0=$(sims_cpu_split)
  for pid in "${sim_pids[@]}"; do kill -USR1 "$pid" 2>/dev/null || true; done
  wait_marker "storm done" 600
  storm_hub1=$(hubs_cpu_split); storm_sim1=$(sims_cpu_split)
  # The hubs' own account of what they refused (a storm's 503s: the
  # connection cap while cut connections are still being closed, or the
  # database), summed over the hubs.
  refusals=$(for b in "${hub_bases[@]}"; do curl -s "${curl_tls[@]}" "$b/metrics"; echo; done | awk '
    function add(k, v) { if (!(k in n)) order[++keys] = k; n[k] += v }
    /^hub_limit_rejections_total\{/ && $2 > 0 { match($0, /limit="[a-z_]+"/); add(substr($0, RSTART + 7, RLENGTH - 8), $2) }
    /^hub_handshakes_total\{/ && /outcome="unavailable"/ && $2 > 0 { add("db_unavailable", $2) }
    END { for (i = 1; i <= keys; i++) r = r order[i] ":" n[order[i]] " "; print r }')
  [ -n "$refusals" ] && echo "connections.sh: hub refusals (its metrics): $refusals" >&2
  sleep 1
  rss_after=$(hubs_rss_kib)
  for pid in "${sim_pids[@]}"; do kill -USR1 "$pid" 2>/dev/null || true; done
  for pid in "${sim_pids[@]}"; do wait "$pid" || true; done
  sim_pids=()
  for p in $(seq 0 $((procs - 1))); do
    if [ ! -s "$dir/sim$p.json" ]; then echo "device-sim $p:" >&2; tail -5 "$dir/sim$p.log" >&2; fi
  done

  python3 - "$dir" "$procs" "$HUBS" "$BACKEND" "$TLS" "$DEVICES" "$held" "$fd_limited" \
    "$rss_base" "$rss_held" "$rss_after" "$cpu0" "$cpu1" "$hold_s" "$PING" "${gauge_held:-0}" "$sim_rss" "$sim_cpu" \
    "$storm_hub0" "$storm_hub1" "$storm_sim0" "$storm_sim1" <<'PY'
import json, os, sys
(d, procs, hubs, backend, tls, requested, held, fd_limited, rss_base, rss_held, rss_after,
 cpu0, cpu1, hold_s, ping, gauge, sim_rss, sim_cpu,
 storm_hub0, storm_hub1, storm_sim0, storm_sim1) = sys.argv[1:]
procs, held, hold_s = int(procs), int(held), int(hold_s)
runs = []
for p in range(procs):
    try:
        runs.append(json.load(open(os.path.join(d, f"sim{p}.json"))))
    except (OSError, ValueError):
        pass
def total(key, of=lambda s: s):
    return sum(of(s)[key] for s in runs)
def worst(path):
    vals = [path(s) for s in runs]
    return max(vals) if vals else 0.0
connected = total("connected")
failed = total("failed")
failures = {}
for s in runs:
    for k, v in s["failures"].items():
        failures[k] = failures.get(k, 0) + v
ramp_wall = (max((s["ramp"]["ended_unix_ms"] for s in runs), default=0)
             - min((s["ramp"]["started_unix_ms"] for s in runs), default=0)) / 1000
storms = [s["storm"] for s in runs if s.get("storm")]
storm_cut = sum(s["cut"] for s in storms)
storm_rec = sum(s["reconnected"] for s in storms)
storm_failed = sum(s["failed"] for s in storms)
storm_failed_attempts = sum(s["failed_attempts"] for s in storms)
storm_wall = (max((s["phase"]["ended_unix_ms"] for s in storms), default=0)
              - min((s["phase"]["started_unix_ms"] for s in storms), default=0)) / 1000
dropped = total("dropped_during_hold") + sum(s["dropped_after"] for s in storms)
rss_base, rss_held, rss_after = int(rss_base), int(rss_held), int(rss_after)
per_conn = (rss_held - rss_base) / connected if connected else 0.0
cpu = float(cpu1) - float(cpu0)
# CPU per storm reconnect (one disconnect plus one connect), user and
# kernel, of the hub and of the load generator.
def per_reconnect(before, after, i):
    spent = float(after.split()[i]) - float(before.split()[i])
    return spent * 1e6 / storm_rec if storm_rec else 0.0
storm_cpu = (f"storm_hub_user_us={per_reconnect(storm_hub0, storm_hub1, 0):.0f} "
             f"storm_hub_sys_us={per_reconnect(storm_hub0, storm_hub1, 1):.0f} "
             f"storm_sim_user_us={per_reconnect(storm_sim0, storm_sim1, 0):.0f} "
             f"storm_sim_sys_us={per_reconnect(storm_sim0, storm_sim1, 1):.0f} ")
ok = (len(runs) == procs and connected == held and failed == 0 and dropped == 0
      and storm_rec == storm_cut == connected and storm_failed == 0)
line = (f"connections backend={backend} tls={'yes' if tls == '1' else 'no'} "
        f"devices_requested={requested} devices_held={held} fd_limited={fd_limited} procs={procs} hubs={hubs} "
        f"connected={connected} failed={failed} hub_gauge={gauge} "
        f"connect_rate_per_s={connected / ramp_wall if ramp_wall > 0 else 0:.0f} "
        f"connect_p50_ms={worst(lambda s: s['ramp']['latency_ms']['p50']):.1f} "
        f"connect_p99_ms={worst(lambda s: s['ramp']['latency_ms']['p99']):.1f} "
        f"rss_base_mib={rss_base / 1024:.1f} rss_held_mib={rss_held / 1024:.1f} "
        f"rss_per_conn_kib={per_conn:.2f} heartbeat_cpu_pct={cpu / hold_s * 100 if hold_s else 0:.2f} "
        f"hold_s={hold_s} ping_s={ping} pings={total('pings_during_hold')} dropped={dropped} "
        f"storm_cut={storm_cut} storm_reconnected={storm_rec} storm_failed={storm_failed} "
        f"storm_failed_attempts={storm_failed_attempts} "
        f"storm_s={storm_wall:.2f} storm_rate_per_s={storm_rec / storm_wall if storm_wall > 0 else 0:.0f} "
        f"storm_p50_ms={worst(lambda s: s['storm']['phase']['latency_ms']['p50'] if s.get('storm') else 0):.1f} "
        f"storm_p99_ms={worst(lambda s: s['storm']['phase']['latency_ms']['p99'] if s.get('storm') else 0):.1f} "
        f"{storm_cpu}"
        f"rss_after_storm_mib={rss_after / 1024:.1f} "
        f"sim_rss_per_conn_kib={int(sim_rss) / connected if connected else 0:.2f} "
        f"sim_cpu_us_per_connect={float(sim_cpu) * 1e6 / connected if connected else 0:.0f} "
        f"ok={'yes' if ok else 'NO'}")
print(line)
if failures:
    print("connections.sh: ramp failures by reason: " + json.dumps(failures), file=sys.stderr)
storm_failures = {}
for s in storms:
    for k, v in s["phase"]["failures"].items():
        storm_failures[k] = storm_failures.get(k, 0) + v
if storm_failures:
    print("connections.sh: storm failures by reason: " + json.dumps(storm_failures), file=sys.stderr)
for s in runs:
    if s["drops"] or (s.get("storm") and s["storm"]["drops"]):
        print("connections.sh: drops: " + json.dumps([s["drops"], s.get("storm", {}).get("drops")]), file=sys.stderr)
PY
  for pid in "${hub_pids[@]}"; do kill -TERM "$pid"; done
  for pid in "${hub_pids[@]}"; do wait "$pid" || true; done
  hub_pids=()
  cleanup
  trap - EXIT
done
