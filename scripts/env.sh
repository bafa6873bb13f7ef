# Shared settings for Cloister's scripts: the target dir and the asset cache
# live outside the clone so that clean clones on one machine build once.
: "${CLOISTER_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/cloister}"
: "${CARGO_TARGET_DIR:=$CLOISTER_CACHE_DIR/target}"
export CLOISTER_CACHE_DIR CARGO_TARGET_DIR
: "${CLOISTER_BIN:=$CARGO_TARGET_DIR/debug/cloister}"
AGENT_BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/cloister-agent"

# The target dir is shared by every clone on the machine, but cargo's
# freshness check does not see a clone at another path with the same
# sources: it would reuse test binaries whose compiled-in paths
# (env!("CARGO_MANIFEST_DIR")) name the other clone, gone or stale. When the
# clone using the target dir changes, the workspace's own files are touched,
# so its crates rebuild (dependencies stay built).
claim_target_dir() {
    local here mark
    here=$(pwd -P)
    mark="$CARGO_TARGET_DIR/.cloister-clone"
    if [ "$(cat "$mark" 2>/dev/null)" != "$here" ]; then
        git ls-files -z 2>/dev/null | xargs -0 -r touch --no-create || true
        mkdir -p "$CARGO_TARGET_DIR"
        printf '%s\n' "$here" >"$mark"
    fi
}

# The arm64 agent is built by Debian's rustc/cargo 1.96 (/usr/bin), the only
# toolchain here with an aarch64 std (libstd-rust-web-dev:arm64); the x86
# workspace stays on rustup's pinned 1.95 (rust-toolchain.toml: it brings
# clippy and rustfmt, and rustup cannot fetch other targets here). Its own
# target dir keeps the two compilers from invalidating each other's builds.
ARM64_TARGET_DIR="$CARGO_TARGET_DIR/arm64"
AGENT_ARM64_BIN="$ARM64_TARGET_DIR/aarch64-unknown-linux-gnu/release/cloister-agent"

# Runs Debian's cargo for aarch64 with the cross linker, static linking, and
# qemu-aarch64-static as the runner of test binaries. Arguments go to cargo.
cargo_arm64() {
    RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$ARM64_TARGET_DIR" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static \
        /usr/bin/cargo "$@" --target aarch64-unknown-linux-gnu
}

# The static arm64 guest agent.
build_arm64_agent() {
    cargo_arm64 build --release -p cloister-agent
}

# Builds the static guest agent, the CLI, and the guest assets (a no-op when
# up to date).
# Stops at the first failure: assets built by a stale CLI would hide it.
build_all() {
    claim_target_dir
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release -p cloister-agent --target x86_64-unknown-linux-gnu &&
        cargo build -p cloister-cli &&
        "$CLOISTER_BIN" assets build --agent "$AGENT_BIN" &&
        build_arm64_agent
}
