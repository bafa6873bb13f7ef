# Shared settings for Cloister's scripts: the target dir and the asset cache
# live outside the clone so that clean clones on one machine build once.
: "${CLOISTER_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/cloister}"
: "${CARGO_TARGET_DIR:=$CLOISTER_CACHE_DIR/target}"
export CLOISTER_CACHE_DIR CARGO_TARGET_DIR
: "${CLOISTER_BIN:=$CARGO_TARGET_DIR/debug/cloister}"
AGENT_BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/cloister-agent"

# Builds the static guest agent, the CLI, and the guest assets (a no-op when
# up to date).
# Stops at the first failure: assets built by a stale CLI would hide it.
build_all() {
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release -p cloister-agent --target x86_64-unknown-linux-gnu &&
        cargo build -p cloister-cli &&
        "$CLOISTER_BIN" assets build --agent "$AGENT_BIN"
}
