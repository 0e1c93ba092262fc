#!/usr/bin/env bash
# The main job: boots the demo fleet (real Debian hosts with systemd, nginx and php-fpm),
# runs gatemend on it and shows what it does. Run as root on Debian 12; installs what it
# needs first. Options go to gatemend-demo (--hosts N, --non-interactive).
set -euo pipefail
cd "$(dirname "$0")"

tests/setup-host.sh
echo "demo: cargo build --workspace --bins --locked"
cargo build --workspace --bins --locked
exec target/debug/gatemend-demo "$@"
