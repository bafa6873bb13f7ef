//! Real peers for the image tests: Debian's `docker-registry` on
//! 127.0.0.1, images built with umoci (from a busybox-static rootfs) or
//! written as OCI layouts by hand, and pushed with skopeo.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

fn need(tool: &str, package: &str) {
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: run scripts/install-deps.sh (installs {package})"
    );
}

/// A docker-registry process on 127.0.0.1 with its own storage.
pub struct Registry {
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Arc<Mutex<Option<Child>>>,
    /// The token server of a registry with bearer-token auth.
    token_server: Option<Child>,
    /// Its `127.0.0.1:PORT` (plain HTTP, like the registry).
    pub token_addr: Option<String>,
}

/// How a test registry authenticates clients.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    /// htpasswd basic auth for `user:password`.
    Basic(&'a str, &'a str),
    /// Bearer tokens from a token server that issues them to
    /// `user:password` (docker's token auth).
    Token(&'a str, &'a str),
}

/// Docker's token server, ours: answers `GET /token?service=S&scope=…` to
/// the basic-auth user it was started for with an ES256 JWT whose `x5c`
/// header carries a self-signed certificate, the registry's
/// `rootcertbundle`. Grants the scopes asked for. Prints its port.
const TOKEN_SERVER: &str = r#"
import base64, http.server, json, os, sys, time
from urllib.parse import urlparse, parse_qs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

key_path, cert_path, user, password, service, issuer = sys.argv[1:7]
key = serialization.load_pem_private_key(open(key_path, "rb").read(), None)
cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
der = cert.public_bytes(serialization.Encoding.DER)
want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def token(scopes):
    access = []
    for s in scopes:
        parts = s.split(":")
        if len(parts) >= 3:
            access.append({"type": parts[0], "name": ":".join(parts[1:-1]), "actions": parts[-1].split(",")})
    now = int(time.time())
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
    claims = {"iss": issuer, "sub": user, "aud": service, "exp": now + 300, "nbf": now - 10,
              "iat": now, "jti": b64u(os.urandom(12)), "access": access}
    signing_input = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        u = urlparse(self.path)
        if u.path != "/token" or self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="token"')
            self.end_headers()
            return
        t = token(parse_qs(u.query).get("scope", []))
        body = json.dumps({"token": t, "access_token": t, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        sys.stderr.write("token request " + self.path + "\n")

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// The token server's service and issuer names (the registry checks both).
pub const TOKEN_SERVICE: &str = "cloister-test-registry";
const TOKEN_ISSUER: &str = "cloister-test-token-server";

impl Registry {
    /// A registry without auth.
    pub fn start() -> Registry {
        Self::start_with(Auth::None)
    }

    /// A registry that requires basic auth for `user:password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Self::start_with(Auth::Basic(user, password))
    }

    /// A registry that requires bearer tokens, which its token server on
    /// 127.0.0.1 issues to `user:password` (docker's token auth).
    pub fn start_with_token_auth(user: &str, password: &str) -> Registry {
        Self::start_with(Auth::Token(user, password))
    }

    fn start_with(auth: Auth) -> Registry {
        need("/usr/bin/docker-registry", "docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth_cfg = String::new();
        let mut token_server = None;
        let mut token_addr = None;
        if let Auth::Token(user, password) = auth {
            need("/usr/bin/python3", "python3-cryptography");
            let mut c = Command::new("openssl");
            c.args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "token.key",
                "-out",
                "token.pem",
                "-days",
                "2",
                "-subj",
                "/CN=cloister test token signer",
            ])
            .current_dir(dir.path());
            run(c, "openssl (token signer)");
            let mut child = Command::new("/usr/bin/python3")
                .args(["-c", TOKEN_SERVER])
                .arg(dir.path().join("token.key"))
                .arg(dir.path().join("token.pem"))
                .args([user, password, TOKEN_SERVICE, TOKEN_ISSUER])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(dir.path().join("token.log")).expect("log"))
                .spawn()
                .expect("starting the token server");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
                &mut line,
            )
            .expect("the token server's port");
            let token_port: u16 = line.trim().parse().unwrap_or_else(|_| {
                panic!(
                    "the token server did not start: {}",
                    std::fs::read_to_string(dir.path().join("token.log")).unwrap_or_default()
                )
            });
            token_server = Some(child);
            token_addr = Some(format!("127.0.0.1:{token_port}"));
            auth_cfg = format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                dir.path().join("token.pem").display()
            );
        }
        if let Auth::Basic(user, password) = auth {
            need("/usr/bin/htpasswd", "apache2-utils");
            let file = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(&file, out.stdout).expect("htpasswd file");
            auth_cfg = format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            );
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_cfg}",
                dir.path().join("storage").display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let reg = Registry {
            addr: addr.clone(),
            dir,
            child: Arc::new(Mutex::new(Some(child))),
            token_server,
            token_addr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The registry's log (each request is logged with its URI).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A point in the request log (pushes before it are not counted).
    pub fn mark(&self) -> usize {
        self.log().lines().count()
    }

    /// How many requests whose URI contains `needle` the registry logged
    /// after `mark`.
    pub fn requests_after(&self, mark: usize, needle: &str) -> usize {
        self.log()
            .lines()
            .skip(mark)
            .filter(|l| l.contains("http.request.uri=") && l.contains(needle))
            .count()
    }

    /// The manifest `repo_ref` (`REPO:TAG`) exactly as the registry serves
    /// it (skopeo may have rewritten it on push, e.g. compressing layers).
    pub fn raw_manifest(&self, repo_ref: &str) -> Vec<u8> {
        let mut c = Command::new("skopeo");
        c.args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{repo_ref}", self.addr));
        let out = c.output().expect("skopeo inspect");
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The layer digests of `repo_ref`'s manifest, as served.
    pub fn layer_digests(&self, repo_ref: &str) -> Vec<String> {
        let m: serde_json::Value = serde_json::from_slice(&self.raw_manifest(repo_ref)).unwrap();
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }

    /// Kills the registry (a host pulling the plug mid-pull).
    pub fn killer(&self) -> impl Fn() + Send + Sync + 'static {
        let child = self.child.clone();
        move || {
            if let Some(mut c) = child.lock().unwrap().take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// The stored bytes of blob `digest` (`sha256:HEX`), to tamper with.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        (self.killer())();
        if let Some(mut t) = self.token_server.take() {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI image layout written by hand: blobs, manifests, an index.
pub struct Layout {
    pub dir: tempfile::TempDir,
}

/// A descriptor in JSON form plus what the tests need to know.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub size: usize,
    pub media_type: String,
}

impl Blob {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

impl Layout {
    pub fn new() -> Layout {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout { dir }
    }

    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Blob {
        let digest = sha256(bytes);
        std::fs::write(
            self.dir
                .path()
                .join("blobs/sha256")
                .join(&digest["sha256:".len()..]),
            bytes,
        )
        .unwrap();
        Blob {
            digest,
            size: bytes.len(),
            media_type: media_type.into(),
        }
    }

    /// An image of uncompressed tar `layers` for `arch`; returns its
    /// manifest blob.
    pub fn image(&self, arch: &str, layers: &[Vec<u8>]) -> Blob {
        self.image_with(arch, layers, false)
    }

    /// [`Layout::image`], its layers gzip-compressed when `gzip`.
    pub fn image_with(&self, arch: &str, layers: &[Vec<u8>], gzip: bool) -> Blob {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                if gzip {
                    use std::io::Write as _;
                    let mut z =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    z.write_all(l).unwrap();
                    self.blob(
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                        &z.finish().unwrap(),
                    )
                    .json()
                } else {
                    self.blob("application/vnd.oci.image.layer.v1.tar", l)
                        .json()
                }
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.json(),
            "layers": layers,
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
    }

    /// A cosign signature attachment: a manifest whose one layer is the
    /// simple-signing `payload`, with `signature_b64` in its
    /// `dev.cosignproject.cosign/signature` annotation (tag it
    /// `sha256-<hex>.sig` beside the image it signs).
    pub fn sigstore_attachment(&self, payload: &[u8], signature_b64: &str) -> Blob {
        let config = self.blob("application/vnd.oci.image.config.v1+json", b"{}");
        let layer = self.blob("application/vnd.dev.cosign.simplesigning.v1+json", payload);
        let mut l = layer.json();
        l["annotations"] = serde_json::json!({"dev.cosignproject.cosign/signature": signature_b64});
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.json(),
            "layers": [l],
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
    }

    /// Names `target` (a manifest or an index) `tag` in index.json.
    pub fn tag(&self, target: &Blob, tag: &str) {
        let mut d = target.json();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [d]});
        std::fs::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// An index of `(manifest, os, arch, variant)`.
    pub fn index(&self, entries: &[(&Blob, &str, &str, Option<&str>)]) -> Blob {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(m, os, arch, variant)| {
                let mut d = m.json();
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = serde_json::json!(v);
                }
                d["platform"] = p;
                d
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `skopeo copy [--all] oci:LAYOUT:TAG docker://REGISTRY/DEST`.
pub fn push(layout: &Path, tag: &str, registry: &str, dest: &str, all: bool) {
    need("/usr/bin/skopeo", "skopeo");
    let mut c = Command::new("skopeo");
    c.args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]);
    if all {
        c.arg("--all");
    }
    c.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{registry}/{dest}"));
    run(c, "skopeo copy");
}

/// `skopeo copy` with basic credentials.
pub fn push_with_creds(layout: &Path, tag: &str, registry: &str, dest: &str, creds: &str) {
    let mut c = Command::new("skopeo");
    c.args([
        "--insecure-policy",
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds,
    ])
    .arg(format!("oci:{}:{tag}", layout.display()))
    .arg(format!("docker://{registry}/{dest}"));
    run(c, "skopeo copy");
}

pub fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A busybox image with `/marker` built with umoci (gzip layers, as image
/// builders make them) in a new OCI layout, tagged `tag`.
pub fn umoci_busybox_image(marker: &str, tag: &str) -> tempfile::TempDir {
    need("/usr/bin/umoci", "umoci");
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let image = format!("{}:{tag}", layout.display());
    let mut c = Command::new("umoci");
    c.args(["init", "--layout"]).arg(&layout);
    run(c, "umoci init");
    let mut c = Command::new("umoci");
    c.args(["new", "--image", &image]);
    run(c, "umoci new");
    let bundle = work.path().join("bundle");
    let mut c = Command::new("umoci");
    c.args(["unpack", "--image", &image]).arg(&bundle);
    run(c, "umoci unpack");
    busybox_rootfs(&bundle.join("rootfs"));
    std::fs::write(bundle.join("rootfs/marker"), marker).unwrap();
    let mut c = Command::new("umoci");
    c.args(["repack", "--image", &image]).arg(&bundle);
    run(c, "umoci repack");
    let mut c = Command::new("umoci");
    c.args([
        "config",
        "--image",
        &image,
        "--config.cmd",
        "cat",
        "--config.cmd",
        "/marker",
        "--config.env",
        "GREETING=hi",
    ]);
    run(c, "umoci config");
    work
}

/// A tar archive from entries built by `f`, with raw (unchecked) names.
pub fn tar(f: impl FnOnce(&mut TarBuilder)) -> Vec<u8> {
    let mut b = TarBuilder {
        inner: tar::Builder::new(Vec::new()),
    };
    f(&mut b);
    b.inner.into_inner().unwrap()
}

pub struct TarBuilder {
    inner: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    fn header(kind: tar::EntryType, name: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        // Raw name: tar's set_path refuses "..", which is what we test.
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        h
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, name, 0o755, 0);
        self.inner.append(&h, std::io::empty()).unwrap();
        self
    }
    pub fn file(&mut self, name: &str, body: &[u8]) -> &mut Self {
        self.file_mode(name, body, 0o644)
    }
    pub fn file_mode(&mut self, name: &str, body: &[u8], mode: u32) -> &mut Self {
        let h = Self::header(tar::EntryType::Regular, name, mode, body.len() as u64);
        self.inner.append(&h, body).unwrap();
        self
    }
    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, name, 0o777, 0);
        let raw = &mut h.as_old_mut().linkname;
        raw.fill(0);
        raw[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.inner.append(&h, std::io::empty()).unwrap();
        self
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target)
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target)
    }
    pub fn device(&mut self, name: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Char, name, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_cksum();
        self.inner.append(&h, std::io::empty()).unwrap();
        self
    }
}

/// Writes `bytes` to a file (for big random layers).
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// The busybox-static rootfs of tests/src `busybox_rootfs()`, written into
/// `root` (that crate is not a dependency here: it would pull the whole
/// runtime into this crate's test build).
pub fn busybox_rootfs(root: &Path) {
    let bb = Path::new("/bin/busybox");
    need("/bin/busybox", "busybox-static");
    for d in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "ls", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
}

/// Sigstore (cosign) signatures and keys by python3-cryptography.
pub fn cosign_sign(dir: &Path, name: &str, payload: &str) -> (String, String) {
    std::fs::write(dir.join(format!("{name}.payload")), payload).unwrap();
    let script = r#"
import base64, os, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
name = sys.argv[1]
if os.path.exists(name + ".key"):
    key = serialization.load_pem_private_key(open(name + ".key", "rb").read(), None)
else:
    key = ec.generate_private_key(ec.SECP256R1())
    open(name + ".key", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
sig = key.sign(open(name + ".payload", "rb").read(), ec.ECDSA(hashes.SHA256()))
print(base64.b64encode(pub).decode())
print(base64.b64encode(sig).decode())
"#;
    let mut c = Command::new("/usr/bin/python3");
    c.arg("-c").arg(script).arg(name).current_dir(dir);
    let out = run(c, "python3-cryptography signing");
    let mut lines = out.lines();
    (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    )
}
