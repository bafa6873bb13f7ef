#!/usr/bin/env bash
# Installs the system packages Cloister needs on Debian 12 (bookworm).
# Enables bookworm-backports by adding the suite to the machine's existing
# apt source, then installs QEMU 10.x from backports and the tools the tests use.
set -euo pipefail

SRC=/etc/apt/sources.list.d/debian.sources
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

if [ -f "$SRC" ] && ! grep -qE '^Suites:.*bookworm-backports' "$SRC"; then
    # Append the suite to the first Suites: line that lists plain "bookworm".
    $SUDO sed -i -E '0,/^Suites:(.*\bbookworm\b.*)$/s//Suites:\1 bookworm-backports/' "$SRC"
fi

# arm64 guests: Debian's arm64 Rust std and busybox come from the arm64
# architecture of the same sources.
added_arm64=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
    added_arm64=1
fi

stamp=/var/lib/apt/periodic/cloister-update-stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360 2>/dev/null)" ] || [ "$added_arm64" = 1 ] \
    || ! apt-cache policy qemu-system-x86 2>/dev/null | grep -q bookworm-backports; then
    $SUDO apt-get update -qq
    $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
fi

PKGS_BPO=(qemu-system-x86 qemu-utils
          qemu-system-arm qemu-user-static)  # arm64 guests (qemu-system-aarch64) and aarch64 unit tests (qemu-aarch64-static)
PKGS=(busybox-static cpio e2fsprogs python3-cryptography python3-jwcrypto protobuf-compiler
      ovmf containerd runc skopeo umoci docker-registry procps iproute2 jq curl
      libssl-dev pkg-config  # libssl-dev, pkg-config: cargo install of the CCA reference tool (tee-backends/measure/scripts)
      pesign sbsigntool openssl  # independent Authenticode digests and signing for tee-backends/measure tests
      swtpm swtpm-tools  # software TPM: OVMF direct-boot measurement check (tee-backends/measure/tests/ovmf_tpm_direct_boot.rs)
      gnupg  # agent/image tests: GPG keys for simple signing (skopeo --sign-by)
      apache2-utils  # htpasswd: the basic-auth docker-registry in agent/image/tests/pull.rs
      # The arm64 agent (scripts/env.sh build_arm64_agent): rustup here has only
      # x86_64, so the aarch64 build uses Debian's rustc/cargo 1.96
      # (bookworm-security, /usr/bin) with Debian's arm64 std, cross gcc and libc.
      rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross)

need=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
bpo_ok=1
for q in qemu-system-x86_64 qemu-system-aarch64 qemu-aarch64-static; do
    "$q" --version 2>/dev/null | grep -qE 'version (1[0-9])\.' || bpo_ok=0
done
if [ "$bpo_ok" = 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports "${PKGS_BPO[@]}"
fi
qemu-system-x86_64 --version | head -1
qemu-system-aarch64 --version | head -1
