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
    /// The CA (PEM file) of its HTTPS certificate, when it serves HTTPS.
    pub ca: Option<PathBuf>,
}

// A test fixture: a failed setup step is the test's failure.
#[allow(clippy::unwrap_used)]
impl TestKbs {
    /// Starts it over plain HTTP with its files under `root`.
    pub fn start(root: &Path) -> TestKbs {
        Self::start_with(root, false)
    }

    /// Starts it over HTTPS, with a certificate for `127.0.0.1` and
    /// `localhost` from a fresh test CA ([`TestKbs::ca`]).
    pub fn start_tls(root: &Path) -> TestKbs {
        Self::start_with(root, true)
    }

    fn start_with(root: &Path, tls: bool) -> TestKbs {
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
        let mut args: Vec<String> = [
            "--allow-simulated",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        let mut ca = None;
        if tls {
            let tls_dir = root.join("tls");
            std::fs::create_dir_all(&tls_dir).unwrap();
            make_certs(&tls_dir);
            let config = root.join("kbs.toml");
            std::fs::write(
                &config,
                format!(
                    "tls_cert = {:?}\ntls_key = {:?}\n",
                    tls_dir.join("server.pem"),
                    tls_dir.join("server.key")
                ),
            )
            .unwrap();
            args.extend(["--config".to_owned(), config.to_str().unwrap().to_owned()]);
            ca = Some(tls_dir.join("ca.pem"));
        } else {
            args.push("--insecure-http".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = KbsServer::start(&cfg, &args);
        let kbs = TestKbs {
            server,
            cfg,
            admin_key: root.join("admin.key.pem").to_str().unwrap().to_owned(),
            ca,
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
        let ca = self.ca.as_ref().map(|p| p.to_str().unwrap());
        if let Some(ca) = ca {
            a.extend(["--cacert", ca]);
        }
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

    /// How many resources it has released (`200` answers on the resource
    /// route, from its `/metrics`; plain HTTP only).
    pub fn releases(&self) -> u64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port())).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("kbs_requests_total{route=\"/kbs/v0/resource")
                    && l.contains("status=\"200\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
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

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running openssl failed ({e}): install it (scripts/install-deps.sh)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`ca.pem`, `ca.key`) and a server certificate (`server.pem`,
/// `server.key`) for `127.0.0.1` and `localhost`, signed by it, in `dir`.
#[allow(clippy::unwrap_used)] // a test fixture
pub fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cloister test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}
