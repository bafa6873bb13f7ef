#!/usr/bin/env bash
# Times `cloister run --tee sim --image REF` of an image with one 100 MiB
# (incompressible) layer, end to end: from the command's start to the
# container's first output, with the guest pulling, digest-checking and
# unpacking the layer itself. Beside it, the same image pulled and unpacked
# on the host by skopeo + umoci, in the same run.
#
# Usage: scripts/bench-guest-pull.sh [RUNS]   (default 3; needs the assets
# built, as scripts/demo.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
runs=${1:-3}
mib=${CLOISTER_BENCH_PULL_MIB:-100}
work=$(mktemp -d)
reg_pid=""
cleanup() { [ -z "$reg_pid" ] || { kill "$reg_pid"; wait "$reg_pid" 2>/dev/null || true; }; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry="127.0.0.1:$port"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$work/storage" "$registry" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 1 100); do curl -sf "http://$registry/v2/" >/dev/null && break; sleep 0.1; done

umoci init --layout "$work/img" && umoci new --image "$work/img:v1"
umoci unpack --image "$work/img:v1" "$work/bundle" >/dev/null
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/" && ln -s busybox "$work/bundle/rootfs/bin/cat"
head -c "$((mib << 20))" /dev/urandom > "$work/bundle/rootfs/payload"
echo "pulled" > "$work/bundle/rootfs/marker"
umoci repack --image "$work/img:v1" "$work/bundle" && rm -rf "$work/bundle"
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$work/img:v1" "docker://$registry/big:v1"
digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$registry/big:v1")
ref="$registry/big@$digest"
"$CLOISTER_BIN" initdata new -o "$work/initdata.toml" --insecure-registry "$registry" --pin "$ref" 2>/dev/null
echo "image: $ref (layer of ${mib} MiB)"

now() { date +%s.%N; }
printf '%-5s %12s %16s\n' run "guest (s)" "skopeo+umoci (s)"
for i in $(seq 1 "$runs"); do
    t0=$(now)
    out=$("$CLOISTER_BIN" run --tee sim --initdata "$work/initdata.toml" --image "$ref" -- cat /marker 2>/dev/null)
    t1=$(now)
    [ "$out" = pulled ] || { echo "run $i: unexpected output: $out" >&2; exit 1; }
    rm -rf "$work/host" "$work/host-layout"
    t2=$(now)
    skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$ref" "oci:$work/host-layout:v1"
    umoci unpack --image "$work/host-layout:v1" "$work/host" >/dev/null
    t3=$(now)
    awk -v i="$i" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN { printf "%-5s %12.2f %16.2f\n", i, b - a, d - c }' 
done
