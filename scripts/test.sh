#!/usr/bin/env bash
# Runs Cloister's whole test suite on a fresh Debian 12 machine:
# installs system packages, builds the agent, CLI and guest assets, checks
# formatting and lints, then runs every test (unit, crate and end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

bash scripts/install-deps.sh
cargo fmt --all -- --check
build_all
# The reference CCA RIM calculator the measurement tests compare against.
tee-backends/measure/scripts/install-reference-tool.sh "$CLOISTER_CACHE_DIR/tools"
export CLOISTER_REALM_MEASUREMENTS="$CLOISTER_CACHE_DIR/tools/bin/realm-measurements"
# The vhost-user vsock backend the vsock end-to-end test boots through (hosts
# like this one have no /dev/vhost-vsock). A no-op once installed.
nice -n 10 cargo install --locked vhost-device-vsock --version 0.3.0 --root "$CLOISTER_CACHE_DIR/tools"
export CLOISTER_VHOST_USER_VSOCK="$CLOISTER_CACHE_DIR/tools/bin/vhost-device-vsock"
cargo clippy --workspace --all-targets -- -D warnings
# The guest side's unit tests for aarch64 too (Debian's rustc 1.96, run under
# qemu-aarch64-static): the agent, the guest TEE code and the protocol.
cargo_arm64 test -p cloister-agent -p cloister-tee -p cloister-protocol --lib --bins --no-fail-fast
cargo test --workspace --no-fail-fast
