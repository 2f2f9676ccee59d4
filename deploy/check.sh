#!/usr/bin/env bash
# Validates deploy/ with what this machine has (no Docker daemon, no
# Kubernetes cluster, no systemd as PID 1):
#   1. Compose files and Kubernetes manifests against vendored JSON schemas
#   2. nginx -t on the nginx config, TLS server included
#   3. systemd-analyze verify, and a hardening floor, on the systemd unit
#   4. the Mosquitto config, by starting a broker with it
#   5. the Dockerfile against the workspace (Rust version, COPY sources)
# Missing tools are installed from Debian's packages (needs root, as in CI).
# Any error or warning fails the run. docs/DEPLOY.md describes each check.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
broker_pid=
cleanup() {
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

step() { echo "== deploy/check.sh: $*"; }
fail() { echo "deploy/check.sh: FAILED: $*" >&2; exit 1; }

apt_updated=
apt_install() {
  echo "deploy/check.sh: installing $* from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then apt-get update -q >/dev/null; apt_updated=1; fi
  apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# --- tools ---------------------------------------------------------------
# Debian keeps nginx in /usr/sbin, which a non-root PATH may lack.
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$nginx_bin" ]; then
  apt_install nginx
  nginx_bin=/usr/sbin/nginx
  # Where no policy-rc.d holds it back, the package starts a server on port
  # 80; this script only wants the binary.
  if [ -s /run/nginx.pid ]; then "$nginx_bin" -s quit || true; fi
fi
command -v systemd-analyze >/dev/null || apt_install systemd
command -v openssl >/dev/null || apt_install openssl
# Whichever python3 comes first may be a non-Debian one (pyenv); use it if it
# has both modules, else Debian's python3 with Debian's packages.
python=python3
if ! "$python" -c 'import yaml, jsonschema' 2>/dev/null; then
  /usr/bin/python3 -c 'import yaml, jsonschema' 2>/dev/null || apt_install python3-yaml python3-jsonschema
  python=/usr/bin/python3
fi
mosquitto_bin=$(scripts/mosquitto.sh ensure)
mosquitto_sub=$(scripts/mosquitto.sh path mosquitto_sub)

# --- 1. schemas ----------------------------------------------------------
step "schemas (Compose, Kubernetes)"
"$python" deploy/validate_schemas.py

# --- 2. nginx ------------------------------------------------------------
step "nginx -t"
# The config is tested from a scratch folder holding the same files in the
# layout of /etc/nginx in the container, so relative includes and certificate
# paths resolve the same way. Two substitutions, nothing else:
# - hub-a/hub-b exist only on the Compose network, and nginx resolves upstream
#   names at load time, so they become loopback addresses (nginx 1.27's
#   `resolve` would defer that, but Debian's nginx is older);
# - tls.conf needs a certificate: a throwaway self-signed one.
mkdir -p "$scratch/nginx/tls.d" "$scratch/nginx/certs"
cp deploy/nginx/hub-proxy.conf "$scratch/nginx/"
cp deploy/nginx/tls.conf "$scratch/nginx/tls.d/hub.conf"
sed -E -e 's/^([[:space:]]*server[[:space:]]+)hub-a:/\1127.0.0.1:/' \
       -e 's/^([[:space:]]*server[[:space:]]+)hub-b:/\1127.0.0.2:/' \
       deploy/nginx/nginx.conf >"$scratch/nginx/nginx.conf"
replaced=$(grep -cE '^[[:space:]]*server[[:space:]]+127\.0\.0\.[12]:' "$scratch/nginx/nginx.conf" || true)
[ "$replaced" = 2 ] || fail "expected upstream servers hub-a and hub-b in deploy/nginx/nginx.conf (found $replaced)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$scratch/nginx/certs/hub.key" -out "$scratch/nginx/certs/hub.crt" 2>/dev/null
if ! "$nginx_bin" -t -c "$scratch/nginx/nginx.conf" >"$scratch/nginx.out" 2>&1; then
  cat "$scratch/nginx.out"; fail "nginx -t"
fi
cat "$scratch/nginx.out"
# nginx -t succeeds despite warnings (a shadowed location, a duplicate
# listen...); they are mistakes here.
if grep -q '\[warn\]' "$scratch/nginx.out"; then fail "nginx -t printed warnings"; fi

# --- 3. systemd ----------------------------------------------------------
step "systemd-analyze verify"
# verify checks that ExecStart's program exists; /usr/local/bin/hub is only
# there after an install, so a scratch copy runs /bin/true under that name
# (same arguments, the rest of the unit unchanged).
mkdir -p "$scratch/systemd/bin"
install -m 0755 /bin/true "$scratch/systemd/bin/hub"
sed "s#^ExecStart=/usr/local/bin/hub #ExecStart=$scratch/systemd/bin/hub #" \
  deploy/systemd/hub.service >"$scratch/systemd/hub.service"
grep -q "^ExecStart=$scratch/systemd/bin/hub " "$scratch/systemd/hub.service" \
  || fail "deploy/systemd/hub.service: expected ExecStart=/usr/local/bin/hub ..."
# verify exits 0 on unknown keys and unparsable values (it only warns), so
# any output is a failure.
systemd-analyze verify "$scratch/systemd/hub.service" >"$scratch/verify.out" 2>&1 || true
if [ -s "$scratch/verify.out" ]; then cat "$scratch/verify.out"; fail "systemd-analyze verify"; fi
echo "hub.service: verified"
# A floor for the hardening: exposure at most 2.0 of 10 (threshold is in tenths).
if ! systemd-analyze security --offline=true --threshold=20 "$scratch/systemd/hub.service" >"$scratch/security.out" 2>&1; then
  cat "$scratch/security.out"; fail "systemd-analyze security: exposure above 2.0"
fi
tail -n 1 "$scratch/security.out"

# --- 4. mosquitto --------------------------------------------------------
step "mosquitto.conf"
# Mosquitto has no config test mode, but it exits at once on an unknown or
# malformed option: start it on a private loopback port with the Compose
# config, only the listener and data folder changed, and ask it for the
# retained topic the Compose healthcheck reads.
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$scratch/mosquitto"
sed -e "s#^listener 1883 0.0.0.0\$#listener $port 127.0.0.1#" \
    -e "s#^persistence_location .*#persistence_location $scratch/mosquitto/#" \
    deploy/mosquitto/mosquitto.conf >"$scratch/mosquitto.conf"
grep -q "^listener $port 127.0.0.1\$" "$scratch/mosquitto.conf" || fail "mosquitto.conf: expected 'listener 1883 0.0.0.0'"
# As root Mosquitto switches to the `mosquitto` user, which cannot write the
# scratch folder: stay as whoever runs this.
echo "user $(id -un)" >>"$scratch/mosquitto.conf"
"$mosquitto_bin" -c "$scratch/mosquitto.conf" >"$scratch/mosquitto.log" 2>&1 &
broker_pid=$!
for _ in $(seq 50); do
  if ! kill -0 "$broker_pid" 2>/dev/null; then cat "$scratch/mosquitto.log"; fail "mosquitto exited with this config"; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
# shellcheck disable=SC2016 # $SYS is an MQTT topic, not a variable.
"$mosquitto_sub" -h 127.0.0.1 -p "$port" -t '$SYS/broker/version' -C 1 -W 5 \
  || { cat "$scratch/mosquitto.log"; fail "mosquitto did not answer with this config"; }
kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true; broker_pid=

# --- 5. Dockerfile -------------------------------------------------------
step "Dockerfile"
# No Docker daemon here, so no build; check what would break one.
"$python" - <<'EOF'
import re, sys, tomllib
from pathlib import Path

dockerfile = Path("deploy/Dockerfile").read_text()
workspace = tomllib.loads(Path("Cargo.toml").read_text())["workspace"]
problems = []

def version(text):
    return tuple(int(p) for p in text.split("."))

rust = re.search(r"^ARG RUST_VERSION=(\S+)$", dockerfile, re.M)
minimum = workspace["package"]["rust-version"]
if not rust:
    problems.append("no 'ARG RUST_VERSION=' line")
elif version(rust.group(1)) < version(minimum):
    problems.append(f"RUST_VERSION {rust.group(1)} is below the workspace rust-version {minimum}")

copied = set()
for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
    *sources, _destination = line.split()
    for source in sources:
        copied.add(source.rstrip("/"))
        if not Path(source).exists():
            problems.append(f"COPY source {source} does not exist")
# Cargo needs every member to resolve the workspace, and the hub embeds migrations/.
for needed in workspace["members"] + ["Cargo.lock", "migrations"]:
    if needed not in copied:
        problems.append(f"{needed} is not copied into the builder")

for problem in problems:
    print(f"deploy/Dockerfile: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"Dockerfile: rust {rust.group(1)} >= {minimum}; copies {', '.join(sorted(copied))}")
EOF

echo "deploy/check.sh: all deploy checks passed"
