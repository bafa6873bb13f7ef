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

/// One layer's pull progress, as the agent logs it while it pulls an image
/// (`cloister-agent: pull sha256:HEX DONE/TOTAL bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer blob's digest.
    pub layer: String,
    /// Bytes downloaded.
    pub done: u64,
    /// The layer's size.
    pub total: u64,
}

/// The pull progress a console line reports, if it is such a line.
pub fn pull_progress(line: &str) -> Option<PullProgress> {
    let rest = line.split("cloister-agent: pull ").nth(1)?;
    let mut words = rest.split_whitespace();
    let layer = words
        .next()?
        .strip_prefix("sha256:")
        .map(|h| format!("sha256:{h}"))?;
    let (done, total) = words.next()?.split_once('/')?;
    (words.next()? == "bytes").then_some(())?;
    Some(PullProgress {
        layer,
        done: done.parse().ok()?,
        total: total.parse().ok()?,
    })
}

/// Follows the console log from its current end: the pull progress lines
/// written after this call, as they come.
#[derive(Debug)]
pub struct Follow {
    path: std::path::PathBuf,
    offset: u64,
    partial: String,
}

impl Follow {
    /// Starts at the end of `path` (as it is now).
    pub fn new(path: &Path) -> Follow {
        Follow {
            offset: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            ..Follow::from_start(path)
        }
    }

    /// Starts at the beginning of `path`.
    pub fn from_start(path: &Path) -> Follow {
        Follow {
            path: path.to_owned(),
            offset: 0,
            partial: String::new(),
        }
    }

    /// The pull progress in the lines completed since the last call.
    pub fn progress(&mut self) -> Vec<PullProgress> {
        self.lines()
            .iter()
            .filter_map(|l| pull_progress(l))
            .collect()
    }

    /// The lines completed since the last call (only the new bytes are read).
    pub fn lines(&mut self) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = Vec::new();
        let read = std::fs::File::open(&self.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.offset))?;
            f.read_to_end(&mut buf)
        });
        let Ok(n) = read else { return Vec::new() };
        self.offset += n as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = self.partial.drain(..=end).collect();
        complete.lines().map(str::to_owned).collect()
    }
}

/// Whether a console line says the agent serves on `channel`
/// ([`cloister_protocol::channel::serving_notice`]), and not on a longer
/// port number that merely starts with the same digits.
pub fn says_serving(line: &str, channel: cloister_protocol::Channel) -> bool {
    let notice = cloister_protocol::channel::serving_notice(channel);
    line.match_indices(&notice)
        .any(|(at, _)| !line[at + notice.len()..].starts_with(|c: char| c.is_ascii_digit()))
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

    #[test]
    fn serving_needs_the_whole_line_and_the_exact_port() {
        let ch = cloister_protocol::Channel::Vsock { port: 1024 };
        let line = "[    3.12] cloister-agent: serving on vsock:1024 (API 1.3)";
        assert!(says_serving(line, ch));
        assert!(!says_serving("cloister-agent: serving on vsock:10240", ch));
        assert!(!says_serving("cloister-agent: starting", ch));
        // A line is whole only once its newline is there.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "SeaBIOS\r\ncloister-agent: serving on vsock:1024").unwrap();
        let mut f = Follow::from_start(&log);
        assert!(!f.lines().iter().any(|l| says_serving(l, ch)));
        let mut o = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut o, b" (API 1.3)\r\n").unwrap();
        assert!(f.lines().iter().any(|l| says_serving(l, ch)));
        assert!(!says_serving(line, cloister_protocol::Channel::Serial));
    }

    const PANIC: &str = "\u{1b}c\u{1b}[?7l\u{1b}[2JSeaBIOS\r\n[    2.1] Run /nope as init process\r\n\
        [    2.2] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.\r\n\
        [    2.3] CPU: 0 UID: 0 PID: 1 Comm: swapper/0\r\n";

    #[test]
    fn pull_progress_lines_are_read_from_the_growing_console() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let line = format!("[   3.5] cloister-agent: pull {d} 1048576/4194304 bytes");
        assert_eq!(
            pull_progress(&line),
            Some(PullProgress {
                layer: d.clone(),
                done: 1 << 20,
                total: 4 << 20
            })
        );
        assert_eq!(
            pull_progress("cloister-agent: pulled x (sha256:…, 1 layers)"),
            None
        );
        assert_eq!(
            pull_progress("cloister-agent: pull sha256:x 1/x bytes"),
            None
        );

        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, format!("{line}\n")).unwrap();
        // Only what comes after the start counts, and only whole lines.
        let mut f = Follow::new(&log);
        assert!(f.progress().is_empty());
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        use std::io::Write;
        write!(file, "noise\n[ 4.0] cloister-agent: pull {d} 4194304/4194").unwrap();
        assert!(f.progress().is_empty());
        writeln!(file, "304 bytes").unwrap();
        let p = f.progress();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].done, p[0].total), (4 << 20, 4 << 20));
    }

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
