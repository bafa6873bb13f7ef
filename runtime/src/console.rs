//! Reading the guest console log: kernel panic detection and the last lines
//! to show a user when something went wrong.

use std::path::Path;

/// What the kernel prints when it panics.
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// The panic line, if the console shows a kernel panic.
pub fn find_panic(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| l.contains(PANIC_MARKER))
        .map(|l| clean(l).trim().to_owned())
}

/// What the agent prints when it panics (`cloister-agent: panic: ...`).
pub const AGENT_PANIC_MARKER: &str = "cloister-agent: panic:";

/// The first kernel or agent panic line on the console, if any.
pub fn find_any_panic(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| l.contains(PANIC_MARKER) || l.contains(AGENT_PANIC_MARKER))
        .map(|l| clean(l).trim().to_owned())
}

/// Strips ANSI escape sequences and control characters (the firmware
/// clears the screen on the serial port).
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(0x40..=0x7e); other escapes: one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// The `n` non-empty lines that end with the kernel panic line (what led to
/// it), or the last `n` lines if there is no panic.
pub fn panic_context(console: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = console
        .lines()
        .map(clean)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let end = lines
        .iter()
        .position(|l| l.contains(PANIC_MARKER))
        .map_or(lines.len(), |i| i + 1);
    lines[end.saturating_sub(n)..end].to_vec()
}

/// The last `n` non-empty lines of the console, cleaned.
pub fn last_lines(console: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = console
        .lines()
        .map(clean)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Reads the console log (lossily; missing file = empty).
pub fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PANIC: &str = "\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS\r\n[    2.1] Run /nope as init process\r\n\
        [    2.2] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.\r\n\
        [    2.3] CPU: 0 UID: 0 PID: 1 Comm: swapper/0\r\n";

    #[test]
    fn finds_a_panic_and_cleans_lines() {
        let p = find_panic(PANIC).unwrap();
        assert!(
            p.starts_with("[    2.2] Kernel panic - not syncing: No working init"),
            "{p}"
        );
        assert_eq!(find_panic("[ 1.0] Run /init as init process\n"), None);
        let ctx = panic_context(PANIC, 2);
        assert!(
            ctx[0].contains("Run /nope") && ctx[1].contains("Kernel panic"),
            "{ctx:?}"
        );
        let last = last_lines(PANIC, 2);
        assert_eq!(last.len(), 2);
        assert!(last[1].contains("Comm: swapper/0"));
        assert_eq!(clean("\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS\r"), "SeaBIOS");
    }

    #[test]
    fn last_lines_of_short_logs() {
        assert!(last_lines("", 5).is_empty());
        assert_eq!(last_lines("a\n\nb\n", 5), ["a", "b"]);
    }
}
