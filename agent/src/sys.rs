//! The few system calls the safe wrappers do not cover.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Signals caught by [`record_signal`] and not yet taken, one bit each.
static RECORDED: AtomicU64 = AtomicU64::new(0);

extern "C" fn record_signal(sig: libc::c_int) {
    if (1..64).contains(&sig) {
        RECORDED.fetch_or(1 << sig, Ordering::SeqCst);
    }
}

/// Installs a handler for `sig` that only records its arrival (see
/// [`take_recorded`]). A PID-namespace init only receives signals it has a
/// handler for.
pub fn install_recording_handler(sig: Signal) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(record_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only does an atomic fetch_or on a static, which is
    // async-signal-safe; replacing the previous disposition cannot break Rust
    // invariants (nothing else in this process handles these signals).
    unsafe { sigaction(sig, &action) }.map(|_| ())
}

/// The signals recorded since the last call.
pub fn take_recorded() -> Vec<Signal> {
    let bits = RECORDED.swap(0, Ordering::SeqCst);
    (1..64)
        .filter(|n| bits & (1u64 << n) != 0)
        .filter_map(|n| Signal::try_from(n).ok())
        .collect()
}

/// Registers `file` with the tokio reactor for read and write readiness.
/// Must be called inside a tokio runtime.
pub fn async_file(file: std::fs::File) -> std::io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    use tokio::io::{unix::AsyncFd, Interest};
    // SAFETY: the AsyncFd owns `file`, so its descriptor stays open and
    // refers to the same file description for the AsyncFd's whole life, and
    // `File::as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register_with_interest(file, Interest::READABLE | Interest::WRITABLE) }
        .map_err(|e| e.into())
}
