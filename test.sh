#!/usr/bin/env bash
# Runs every gatemend test: unit tests, real gRPC between processes, and the end-to-end tests
# on a fleet of real Debian hosts (systemd-nspawn). Run as root on Debian 12; installs what it
# needs first. The hosts' root filesystem is built once and cached in /var/cache/gatemend-testbed.
set -euo pipefail
cd "$(dirname "$0")"

tests/setup-host.sh
echo "test: cargo build --workspace --bins --locked"
cargo build --workspace --bins --locked
echo "test: cargo test --workspace --locked"
cargo test --workspace --locked
