#!/usr/bin/env bash
# Installs what gatemend's build, tests and demo need on a Debian 12 machine, as root.
# Idempotent: installs only what is missing, and says what it does.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (the testbed boots hosts with systemd-nspawn)" >&2
  exit 1
fi

# Debian packages, by what needs them:
#   systemd-container, debootstrap: the testbed's hosts (TESTBED.md)
#   iproute2, util-linux: their veth links, nsenter, setpriv
#   gcc, libc6-dev: crates that compile C (ring)
packages=(systemd-container debootstrap iproute2 util-linux gcc libc6-dev)
#   postgresql: the audit log's PostgreSQL backend, tested against a real server that the
#   tests (controller/tests/audit_postgres.rs) initdb and start themselves (issue 7)
packages+=(postgresql)
#   chromium, chromium-driver: the review UI's browser test (controller/tests/web_browser.rs)
#   drives a real headless Chromium over WebDriver (issue 7)
packages+=(chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: Debian packages present (${packages[*]})"
fi

# cargo fmt and clippy, when rustup manages the toolchain and they are not there yet.
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || { echo "setup: rustup component add $c"; rustup component add "$c"; }
  done
fi
