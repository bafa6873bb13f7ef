//! `cloister kbs serve` as its own process on 127.0.0.1 for tests of the
//! attested guest: started on port 0, its address read from the log line
//! "listening on URL", killed on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::cloister_bin;

/// A running KBS.
#[derive(Debug)]
pub struct KbsServer {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    log: Arc<Mutex<String>>,
}

impl Drop for KbsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KbsServer {
    /// Starts `cloister kbs serve ARGS` with `$CLOISTER_CONFIG_DIR`.
    pub fn start(config_dir: &Path, args: &[&str]) -> KbsServer {
        let mut child = Command::new(cloister_bin())
            .args(["kbs", "serve"])
            .args(args)
            .env("CLOISTER_CONFIG_DIR", config_dir)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning cloister kbs serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    let url: String = line[i + "listening on ".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                        .collect();
                    let _ = tx.send(url);
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => KbsServer { child, url, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cloister kbs serve did not report a listening address within 30 s:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
