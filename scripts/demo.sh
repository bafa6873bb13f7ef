#!/usr/bin/env bash
# Sets Cloister up on a fresh Debian 12 machine and runs the demo:
#   1. installs system packages, builds the agent, the CLI and the guest assets;
#   2. `cloister check`;
#   3. runs a command in a plain sandbox and in a sim-TEE sandbox;
#   4. asks a sim guest for evidence, predicts its measurements and verifies it;
#   5. starts a key broker on 127.0.0.1 and fetches a secret through attestation.
#
# Usage: scripts/demo.sh [STEP...]   (default: every step, in order)
# Steps: check, run, sim, evidence, kbs. CLOISTER_DEMO_SETUP=0 skips the
# package install and build (tests run single steps that way).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

if [ "${CLOISTER_DEMO_SETUP:-1}" != 0 ]; then
    bash scripts/install-deps.sh
    build_all
fi
# A function, so never background it: `cloister ... &` would background a
# subshell whose PID is not the server's. Servers are started from the binary.
cloister() { "$CLOISTER_BIN" "$@"; }

work=$(mktemp -d)
kbs_pid=""
cleanup() {
    if [ -n "$kbs_pid" ]; then
        kill "$kbs_pid" 2>/dev/null || true
        wait "$kbs_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

demo_check() {
    step "cloister check"
    cloister check
}

busybox_rootfs() {
    if [ -d "$work/rootfs" ]; then return; fi
    step "A busybox root filesystem"
    mkdir -p "$work/rootfs/bin"
    cp /bin/busybox "$work/rootfs/bin/"
    for applet in sh echo cat uname wc sleep; do ln -s busybox "$work/rootfs/bin/$applet"; done
    echo "$work/rootfs"
}

demo_run() {
    busybox_rootfs
    step "cloister run: a command in a micro-VM"
    cloister run --rootfs "$work/rootfs" -- sh -c 'echo "hello from $(uname -r) inside the sandbox"'
    echo "greetings over stdin" | cloister run --rootfs "$work/rootfs" -- cat
    set +e
    cloister run --rootfs "$work/rootfs" -- sh -c 'exit 7'
    echo "exit code propagated: $?"
    set -e
}

demo_sim() {
    busybox_rootfs
    step "cloister run --tee sim: the same in a simulated CCA realm"
    cloister run --tee sim --rootfs "$work/rootfs" -- echo "hello from a sim realm"
}

demo_evidence() {
    step "Evidence from a sim guest, predicted and verified"
    nonce=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    cloister evidence --tee sim --report-data "$nonce" -o "$work/evidence.cbor"
    cloister sim trust-anchor -o "$work/sim-ta.json"
    cloister measure --tee sim > "$work/rv.json"
    cat "$work/rv.json"
    # Simulated evidence is never rated as hardware: at best "warning" (exit 1).
    rc=0
    cloister verify --tee sim --evidence "$work/evidence.cbor" --nonce "$nonce" \
        --trust-anchors "$work/sim-ta.json" --reference-values "$work/rv.json" \
        --allow-simulated > "$work/ear.json" || rc=$?
    [ "$rc" -le 1 ] || { echo "verify failed (exit $rc)" >&2; exit 1; }
    grep -q '"warning"' "$work/ear.json" || { echo "sim evidence was not appraised warning" >&2; exit 1; }
    echo "verdict: $(grep -o '"ear.status": *"[a-z]*"' "$work/ear.json" | head -1)"
}

demo_kbs() {
    step "Key broker: a secret released only after attestation"
    [ -f "$work/sim-ta.json" ] || cloister sim trust-anchor -o "$work/sim-ta.json"
    mkdir -m 700 -p "$work/kbs"
    (cd "$work" && cloister kbs admin keygen --out "$work/admin" >/dev/null)
    cp "$work/admin.pub.pem" "$work/kbs/admin.pub.pem"
    "$CLOISTER_BIN" kbs serve --listen 127.0.0.1:0 --data-dir "$work/kbs" --insecure-http --allow-simulated \
        > "$work/kbs.log" 2>&1 &
    kbs_pid=$!
    # The server logs the address it bound (port 0: the kernel picks a free one).
    url=""
    for _ in $(seq 1 100); do
        url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/kbs.log" | head -1 || true)
        [ -n "$url" ] && curl -sf "$url/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "the KBS did not start:" >&2; cat "$work/kbs.log" >&2; exit 1; }
    echo "the demo secret" > "$work/secret.txt"
    cloister kbs admin --kbs "$url" --key "$work/admin.key.pem" set-trust-anchors "$work/sim-ta.json"
    cloister kbs admin --kbs "$url" --key "$work/admin.key.pem" set-resource default/demo/secret "$work/secret.txt"
    printf 'released: '
    cloister attest --kbs "$url" --allow-http --tee sim --resource default/demo/secret
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(check run sim evidence kbs)
for s in "${steps[@]}"; do
    case "$s" in
        check|run|sim|evidence|kbs) "demo_$s" ;;
        *) echo "demo.sh: unknown step $s: expected check, run, sim, evidence or kbs" >&2; exit 2 ;;
    esac
done

step "Done"
