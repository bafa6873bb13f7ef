//! Logging to the console. As PID 1 the kernel gives the agent
//! `/dev/console` (console=ttyS0) as stdin/stdout/stderr, so a line on stderr
//! lands in the host's console log.

/// Logs one line to the console with the agent's prefix.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("cloister-agent: {}", format_args!($($arg)*))
    };
}
