#!/bin/sh
# Installs the reference CCA RIM calculator (the `cca-realm-measurements`
# crate, version 0.1.0, binary `realm-measurements`) that
# tests/cca_reference_tool.rs compares our QEMU and kvmtool layouts against.
# Needs libssl-dev and pkg-config (the tool links OpenSSL).
# Usage: tee-backends/measure/scripts/install-reference-tool.sh [ROOT]
# ROOT defaults to <workspace>/target/tools; the test looks for
# ROOT/bin/realm-measurements, or $CLOISTER_REALM_MEASUREMENTS.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=${1:-$here/../../../target/tools}
exec nice -n 10 cargo install cca-realm-measurements --version 0.1.0 --locked --root "$root"
