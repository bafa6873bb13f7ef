//! Logging to the console. As PID 1 the kernel gives the agent
//! `/dev/console` (console=ttyS0) as stdin/stdout/stderr, so a line on stderr
//! lands in the host's console log. Lines carry the guest uptime, like the
//! kernel's own, so boot phases can be timed from the console log.

/// The guest uptime as `[  1.234]`, or empty before /proc is mounted.
pub fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(|u| format!("[{u:>8}] ")))
        .unwrap_or_default()
}

/// Logs one line to the console with the agent's prefix.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("{}cloister-agent: {}", $crate::log::uptime(), format_args!($($arg)*))
    };
}
