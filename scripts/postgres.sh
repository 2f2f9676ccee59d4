#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks.
#
#   scripts/postgres.sh start DIR PORT [extra postgres -c settings...]
#   scripts/postgres.sh stop DIR
#   scripts/postgres.sh url PORT
#
# Installs Debian's postgresql package when its binaries are missing. The
# cluster lives in DIR (created; its data in DIR/data, its socket in DIR),
# listens on 127.0.0.1:PORT only, trusts local connections (user postgres)
# and runs as the unprivileged user `postgres` when called as root (CI runs as
# root, which PostgreSQL refuses).
set -euo pipefail

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    echo "postgres.sh: installing PostgreSQL from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q postgresql >/dev/null
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$dir"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-}
case "$cmd" in
  start)
    dir=$2; port=$3; shift 3
    bin=$(pg_bin)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    opts="-p $port -k $dir -c listen_addresses=127.0.0.1"
    for setting in "$@"; do opts="$opts -c $setting"; done
    as_owner "$bin/pg_ctl" -D "$dir/data" -o "$opts" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
      || { tail -n 20 "$dir/postgres.log" >&2; exit 1; }
    ;;
  stop)
    dir=$2
    bin=$(pg_bin)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    ;;
  url)
    echo "postgres://postgres@127.0.0.1:$2/postgres"
    ;;
  *)
    echo "usage: $0 start DIR PORT [setting=value...] | stop DIR | url PORT" >&2
    exit 2
    ;;
esac
