#!/usr/bin/env bash
# A throwaway Mosquitto broker for tests and benchmarks.
#
#   scripts/mosquitto.sh ensure            # install when missing; print the broker's path
#   scripts/mosquitto.sh path NAME         # path of mosquitto, mosquitto_sub or mosquitto_pub
#   scripts/mosquitto.sh start DIR PORT
#   scripts/mosquitto.sh stop DIR
#   scripts/mosquitto.sh url PORT
#
# Installs Debian's mosquitto and mosquitto-clients packages when their
# binaries are missing (Debian puts the broker in /usr/sbin, which a normal
# user's PATH often lacks). The broker lives in DIR (created: its config in
# DIR/mosquitto.conf, its log in DIR/mosquitto.log, its pid in DIR/pid),
# listens on 127.0.0.1:PORT only (MQTT 3.1, 3.1.1 and 5), lets anonymous
# clients in and keeps nothing on disk. Run as root (as CI is), it stays root
# (`user root`) instead of dropping to the `mosquitto` user; as anyone else
# the `user` setting has no effect. It runs in the background, not as a
# daemon: `stop` ends it.
set -euo pipefail

# Prints the path of NAME (mosquitto, mosquitto_sub, ...), or nothing.
find_bin() {
  local name=$1 path
  path=$(command -v "$name" 2>/dev/null || true)
  if [ -z "$path" ]; then
    for candidate in "/usr/sbin/$name" "/usr/bin/$name" "/usr/local/sbin/$name"; do
      if [ -x "$candidate" ]; then path=$candidate; break; fi
    done
  fi
  echo "$path"
}

ensure() {
  if [ -z "$(find_bin mosquitto)" ] || [ -z "$(find_bin mosquitto_sub)" ]; then
    echo "mosquitto.sh: installing Mosquitto from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q mosquitto mosquitto-clients >/dev/null
  fi
  local bin
  bin=$(find_bin mosquitto)
  if [ -z "$bin" ] || [ -z "$(find_bin mosquitto_sub)" ]; then
    echo "mosquitto.sh: mosquitto or mosquitto_sub still missing after the install" >&2
    exit 1
  fi
  echo "$bin"
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd=${1:-}
case "$cmd" in
  ensure)
    ensure
    ;;
  path)
    bin=$(find_bin "$2")
    if [ -z "$bin" ]; then
      echo "mosquitto.sh: $2 not found (run scripts/mosquitto.sh ensure)" >&2
      exit 1
    fi
    echo "$bin"
    ;;
  start)
    dir=$2; port=$3
    bin=$(ensure)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if port_open "$port"; then
      echo "mosquitto.sh: port $port is already in use" >&2
      exit 1
    fi
    cat >"$dir/mosquitto.conf" <<EOF
# Written by scripts/mosquitto.sh: a throwaway test broker.
listener $port 127.0.0.1
allow_anonymous true
persistence false
user root
# Forward small messages (command status) at once, not after a delayed ACK.
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
    "$bin" -c "$dir/mosquitto.conf" </dev/null >>"$dir/mosquitto.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"
    for _ in $(seq 1 100); do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "mosquitto.sh: the broker exited at start-up; its log:" >&2
        cat "$dir/mosquitto.log" >&2
        rm -f "$dir/pid"
        exit 1
      fi
      if port_open "$port"; then exit 0; fi
      sleep 0.1
    done
    echo "mosquitto.sh: port $port not open after 10 s; the log:" >&2
    cat "$dir/mosquitto.log" >&2
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    exit 1
    ;;
  stop)
    dir=$2
    [ -f "$dir/pid" ] || exit 0
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; exit 0; }
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    ;;
  url)
    echo "mqtt://127.0.0.1:$2"
    ;;
  *)
    echo "usage: $0 ensure | path NAME | start DIR PORT | stop DIR | url PORT" >&2
    exit 2
    ;;
esac
