#!/usr/bin/env bash
# Sets Cloister up on a fresh Debian 12 machine and runs the demo:
#   1. installs system packages, builds the agent, the CLI and the guest assets;
#   2. `cloister check`;
#   3. runs a command in a plain sandbox and in a sim-TEE sandbox;
#   4. asks a sim guest for evidence, predicts its measurements and verifies it;
#   5. starts a key broker on 127.0.0.1 and fetches a secret through attestation.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

bash scripts/install-deps.sh
build_all
cloister() { "$CLOISTER_BIN" "$@"; }

work=$(mktemp -d)
kbs_pid=""
cleanup() {
    [ -n "$kbs_pid" ] && kill "$kbs_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "cloister check"
cloister check

step "A busybox root filesystem"
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
for applet in sh echo cat uname wc sleep; do ln -s busybox "$work/rootfs/bin/$applet"; done
echo "$work/rootfs"

step "cloister run: a command in a micro-VM"
cloister run --rootfs "$work/rootfs" -- sh -c 'echo "hello from $(uname -r) inside the sandbox"'
echo "greetings over stdin" | cloister run --rootfs "$work/rootfs" -- cat
set +e
cloister run --rootfs "$work/rootfs" -- sh -c 'exit 7'
echo "exit code propagated: $?"
set -e

step "cloister run --tee sim: the same in a simulated CCA realm"
cloister run --tee sim --rootfs "$work/rootfs" -- echo "hello from a sim realm"

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

step "Key broker: a secret released only after attestation"
port=$(( 20000 + RANDOM % 20000 ))
mkdir -m 700 -p "$work/kbs"
(cd "$work" && cloister kbs admin keygen --out "$work/admin" >/dev/null)
cp "$work/admin.pub.pem" "$work/kbs/admin.pub.pem"
cloister kbs serve --listen "127.0.0.1:$port" --data-dir "$work/kbs" --insecure-http --allow-simulated \
    > "$work/kbs.log" 2>&1 &
kbs_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -sf "$url/health" >/dev/null 2>&1 && break
    sleep 0.1
done
echo "the demo secret" > "$work/secret.txt"
cloister kbs admin --kbs "$url" --key "$work/admin.key.pem" set-trust-anchors "$work/sim-ta.json"
cloister kbs admin --kbs "$url" --key "$work/admin.key.pem" set-resource default/demo/secret "$work/secret.txt"
printf 'released: '
cloister attest --kbs "$url" --allow-http --tee sim --resource default/demo/secret

step "Done"
