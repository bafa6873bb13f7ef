//! `cloister kbs serve` as its own process on 127.0.0.1 for tests of the
//! attested guest: started on port 0, its address read from the log line
//! "listening on URL", killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::{cloister_bin, cloister_with_config as cloister, stdout_of_success as ok};

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

/// A fresh KBS for a sim guest: admin key, the sim trust anchor; then
/// reference values for the launch and resources as the test needs.
#[derive(Debug)]
pub struct TestKbs {
    /// The server.
    pub server: KbsServer,
    /// `$CLOISTER_CONFIG_DIR` of its tools.
    pub cfg: PathBuf,
    admin_key: String,
}

// A test fixture: a failed setup step is the test's failure.
#[allow(clippy::unwrap_used)]
impl TestKbs {
    /// Starts it with its files under `root`.
    pub fn start(root: &Path) -> TestKbs {
        let cfg = root.join("config");
        let data = root.join("kbs");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        // The KBS refuses a data dir other users can read.
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let prefix = root.join("admin");
        ok(
            &cloister(
                &cfg,
                &["kbs", "admin", "keygen", "--out", prefix.to_str().unwrap()],
            ),
            "kbs admin keygen",
        );
        std::fs::copy(root.join("admin.pub.pem"), data.join("admin.pub.pem")).unwrap();
        let server = KbsServer::start(
            &cfg,
            &[
                "--insecure-http",
                "--allow-simulated",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
            ],
        );
        let kbs = TestKbs {
            server,
            cfg,
            admin_key: root.join("admin.key.pem").to_str().unwrap().to_owned(),
        };
        let anchors = root.join("anchors.json");
        std::fs::write(
            &anchors,
            ok(&cloister(&kbs.cfg, &["sim", "trust-anchor"]), "ta"),
        )
        .unwrap();
        kbs.admin(&["set-trust-anchors", anchors.to_str().unwrap()]);
        kbs
    }

    /// `cloister kbs admin ARGS` against it; panics on failure.
    pub fn admin(&self, args: &[&str]) {
        let mut a = vec![
            "kbs",
            "admin",
            "--kbs",
            &self.server.url,
            "--key",
            &self.admin_key,
        ];
        a.extend_from_slice(args);
        ok(&cloister(&self.cfg, &a), &format!("kbs admin {args:?}"));
    }

    /// Its `127.0.0.1` port.
    pub fn port(&self) -> u16 {
        self.server
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the KBS URL ends in :PORT")
    }

    /// Stores `bytes` as the resource `repo/type/tag`.
    pub fn set_resource(&self, path: &str, bytes: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("resource");
        std::fs::write(&f, bytes).unwrap();
        self.admin(&["set-resource", path, f.to_str().unwrap()]);
    }

    /// Makes the launch of a sim guest with `initdata` (a file) the one the
    /// KBS accepts (`cloister measure --tee sim --initdata`).
    pub fn accept_sim_launch(&self, initdata: &Path) {
        let rv = ok(
            &cloister(
                &self.cfg,
                &[
                    "measure",
                    "--tee",
                    "sim",
                    "--initdata",
                    initdata.to_str().unwrap(),
                ],
            ),
            "measure --tee sim --initdata",
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rv.json");
        std::fs::write(&f, rv).unwrap();
        self.admin(&["set-reference-values", f.to_str().unwrap()]);
    }
}
