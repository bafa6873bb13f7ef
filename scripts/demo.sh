#!/usr/bin/env bash
# Sets Cloister up on a fresh Debian 12 machine and runs the demo:
#   1. installs system packages, builds the agent, the CLI and the guest assets;
#   2. `cloister check`;
#   3. runs a command in a plain sandbox, and an image (pinned in initdata)
#      that a sim-TEE guest pulls itself from a registry on 127.0.0.1;
#   4. asks a sim guest for evidence, predicts its measurements and verifies it;
#   5. starts a key broker on 127.0.0.1 and fetches a secret through attestation;
#   6. runs an encrypted image whose key the KBS releases only to the guest
#      after it attested.
#
# Usage: scripts/demo.sh [STEP...]   (default: every step, in order)
# Steps: check, run, sim, evidence, kbs, image. CLOISTER_DEMO_SETUP=0 skips the
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
registry_pid=""
cleanup() {
    for pid in $kbs_pid $registry_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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

# A free port on 127.0.0.1 (for servers that cannot report the one they bound).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Debian's docker-registry on 127.0.0.1 (once per demo run).
start_registry() {
    [ -z "$registry_pid" ] || return 0
    registry="127.0.0.1:$(free_port)"
    mkdir -p "$work/registry"
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
        "$work/registry/storage" "$registry" > "$work/registry/config.yml"
    docker-registry serve "$work/registry/config.yml" > "$work/registry/log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 1 100); do curl -sf "http://$registry/v2/" >/dev/null && return 0; sleep 0.1; done
    echo "docker-registry did not start:" >&2; cat "$work/registry/log" >&2; exit 1
}

# A busybox image with /marker, built with umoci into the OCI layout DIR:v1.
busybox_image() {
    local dir=$1 marker=$2
    umoci init --layout "$dir" && umoci new --image "$dir:v1"
    umoci unpack --image "$dir:v1" "$work/bundle" >/dev/null
    cp -a "$work/rootfs/." "$work/bundle/rootfs/"
    echo "$marker" > "$work/bundle/rootfs/marker"
    umoci repack --image "$dir:v1" "$work/bundle" && rm -rf "$work/bundle"
}

# Pushes the layout DIR:v1 as REPO:v1; prints REGISTRY/REPO@DIGEST.
push_pinned() {
    skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$1:v1" "docker://$registry/$2:v1"
    echo "$registry/$2@$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$registry/$2:v1")"
}

demo_sim() {
    busybox_rootfs
    start_registry
    step "cloister run --tee sim: an image the guest pulls itself, pinned by measured initdata"
    busybox_image "$work/plain" "hello from an image pulled inside a sim realm"
    ref=$(push_pinned "$work/plain" demo/plain)
    cloister initdata new -o "$work/initdata-plain.toml" --insecure-registry "$registry" --pin "$ref"
    cloister run --tee sim --initdata "$work/initdata-plain.toml" --image "$ref" -- cat /marker
    echo "(a host rootfs is refused with a TEE:)"
    cloister run --tee sim --rootfs "$work/rootfs" -- true 2>&1 | tail -1 || true
}

demo_evidence() {
    step "Evidence from a sim guest, predicted and verified"
    nonce=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    # A guest signs host-chosen report_data only if its measured initdata
    # says so; the reference values carry that document's digest.
    cloister initdata new --allow-host-evidence -o "$work/initdata-evidence.toml"
    cloister evidence --tee sim --report-data "$nonce" --initdata "$work/initdata-evidence.toml" \
        -o "$work/evidence.cbor"
    cloister sim trust-anchor -o "$work/sim-ta.json"
    cloister measure --tee sim --initdata "$work/initdata-evidence.toml" > "$work/rv.json"
    cat "$work/rv.json"
    # Simulated evidence is never rated as hardware: at best "warning" (exit 1).
    rc=0
    cloister verify --tee sim --evidence "$work/evidence.cbor" --report-data "$nonce" \
        --trust-anchors "$work/sim-ta.json" --reference-values "$work/rv.json" \
        --allow-simulated > "$work/ear.json" || rc=$?
    [ "$rc" -le 1 ] || { echo "verify failed (exit $rc)" >&2; exit 1; }
    grep -q '"warning"' "$work/ear.json" || { echo "sim evidence was not appraised warning" >&2; exit 1; }
    echo "verdict: $(grep -o '"ear.status": *"[a-z]*"' "$work/ear.json" | head -1)"
}

# The demo KBS on 127.0.0.1 (once per demo run): sets $url.
start_kbs() {
    [ -z "$kbs_pid" ] || return 0
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
    kbs_admin set-trust-anchors "$work/sim-ta.json"
}

kbs_admin() { cloister kbs admin --kbs "$url" --key "$work/admin.key.pem" "$@"; }

demo_kbs() {
    step "Key broker: a secret released only after attestation"
    start_kbs
    echo "the demo secret" > "$work/secret.txt"
    kbs_admin set-resource default/demo/secret "$work/secret.txt"
    printf 'released: '
    cloister attest --kbs "$url" --allow-http --attester sim --resource default/demo/secret
}

demo_image() {
    busybox_rootfs
    start_registry
    start_kbs
    step "An encrypted image: its key is released only to the attested guest"
    busybox_image "$work/app" "a secret marker, decrypted inside the guest"
    cloister image encrypt --input "oci:$work/app:v1" --output "oci:$work/app-enc:v1" \
        --kid kbs:///default/image-kek/app --kek-out "$work/kek.bin"
    ref=$(push_pinned "$work/app-enc" demo/app)
    echo "the registry holds only ciphertext: $ref"
    cloister initdata new -o "$work/initdata-app.toml" --kbs "$url" --insecure-http \
        --insecure-registry "$registry" --pin "$ref"
    # The KBS releases keys only to this launch: these reference values.
    cloister measure --tee sim --initdata "$work/initdata-app.toml" > "$work/rv-app.json"
    kbs_admin set-reference-values "$work/rv-app.json"
    kbs_admin set-resource default/image-kek/app "$work/kek.bin"
    cloister run --tee sim --initdata "$work/initdata-app.toml" --image "$ref" -- cat /marker
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(check run sim evidence kbs image)
for s in "${steps[@]}"; do
    case "$s" in
        check|run|sim|evidence|kbs|image) "demo_$s" ;;
        *) echo "demo.sh: unknown step $s: expected check, run, sim, evidence, kbs or image" >&2; exit 2 ;;
    esac
done

step "Done"
