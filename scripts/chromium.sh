#!/usr/bin/env bash
# Headless Chromium and chromedriver for the console's browser tests
# (hub/tests/console_browser.rs).
#
#   scripts/chromium.sh ensure            # install when missing; print chromium's path
#   scripts/chromium.sh path chromium     # path of the browser
#   scripts/chromium.sh path chromedriver # path of the WebDriver server
#
# Installs Debian's chromium and chromium-driver packages when
# /usr/bin/chromium or /usr/bin/chromedriver is missing. The tests start
# their own chromedriver (one per test, on a free loopback port, with a fresh
# profile); nothing runs in the background here.
set -euo pipefail

# Prints the path of NAME (chromium or chromedriver), or nothing.
find_bin() {
  local name=$1
  if [ -x "/usr/bin/$name" ]; then
    echo "/usr/bin/$name"
  else
    command -v "$name" 2>/dev/null || true
  fi
}

ensure() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "chromium.sh: installing Chromium and chromedriver from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q chromium chromium-driver >/dev/null
  fi
  local bin
  bin=$(find_bin chromium)
  if [ -z "$bin" ] || [ -z "$(find_bin chromedriver)" ]; then
    echo "chromium.sh: chromium or chromedriver still missing after the install" >&2
    exit 1
  fi
  echo "$bin"
}

cmd=${1:-}
case "$cmd" in
  ensure)
    ensure
    ;;
  path)
    case "${2:-}" in
      chromium|chromedriver) ;;
      *) echo "usage: $0 path chromium|chromedriver" >&2; exit 2 ;;
    esac
    bin=$(find_bin "$2")
    if [ -z "$bin" ]; then
      echo "chromium.sh: $2 not found (run scripts/chromium.sh ensure)" >&2
      exit 1
    fi
    echo "$bin"
    ;;
  *)
    echo "usage: $0 ensure | path chromium|chromedriver" >&2
    exit 2
    ;;
esac
