//! The image pulled inside the guest (issue 9), end to end with real peers on
//! 127.0.0.1: Debian's docker-registry, images built with umoci and pushed
//! (and encrypted) with skopeo or `cloister image encrypt`, `cloister kbs
//! serve` holding the keys, and `cloister run --tee sim --initdata F --image
//! REF` booting a sim-TEE guest (TCG) whose agent attests, pulls, decrypts
//! and runs `cat /marker`.

#![allow(clippy::unwrap_used)] // tests may unwrap

#[path = "../../agent/image/tests/registry_common/mod.rs"]
mod registry_common;

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::process::Output;

use cloister_e2e::kbs_server::TestKbs;
use cloister_e2e::{boot_lock, cloister_with_config as cloister, stdout_of_success as ok};
use registry_common::{push, sha256, umoci_busybox_image, Registry};

/// `cloister initdata new -o DIR/initdata.toml ARGS`; returns the path.
fn initdata(dir: &Path, cfg: &Path, args: &[&str]) -> String {
    let out = dir.join("initdata.toml");
    let out = out.to_str().unwrap().to_owned();
    let mut a = vec!["initdata", "new", "-o", &out];
    a.extend_from_slice(args);
    ok(&cloister(cfg, &a), "initdata new");
    out
}

/// Initdata that pins `reference` from `reg` (plain HTTP) and names no KBS.
fn pinned_initdata(dir: &Path, cfg: &Path, reg: &Registry, reference: &str) -> String {
    initdata(
        dir,
        cfg,
        &["--insecure-registry", &reg.addr, "--pin", reference],
    )
}

/// Initdata for a guest that attests to `kbs` (plain HTTP on 127.0.0.1) and
/// pulls from `reg` the images `pins`, with `extra` flags; the KBS accepts
/// exactly this launch. Returns the document's path.
fn kbs_initdata(
    root: &Path,
    kbs: &TestKbs,
    reg: &Registry,
    pins: &[&str],
    extra: &[&str],
) -> String {
    let kbs_url = format!("http://127.0.0.1:{}", kbs.port());
    let mut args = vec![
        "--kbs",
        &kbs_url,
        "--insecure-http",
        "--insecure-registry",
        &reg.addr,
    ];
    for p in pins {
        args.extend(["--pin", p]);
    }
    args.extend_from_slice(extra);
    let doc = initdata(root, &kbs.cfg, &args);
    kbs.accept_sim_launch(Path::new(&doc));
    doc
}

/// `cloister run --tee sim --initdata DOC --image REF -- CMD` (one boot at a
/// time).
fn run_image(cfg: &Path, doc: &str, reference: &str, cmd: &[&str]) -> Output {
    run_image_in(cfg, doc, reference, cmd, None)
}

/// [`run_image`] with the guest assets of `$CLOISTER_CACHE_DIR` = `cache`.
fn run_image_in(
    cfg: &Path,
    doc: &str,
    reference: &str,
    cmd: &[&str],
    cache: Option<&Path>,
) -> Output {
    let mut a = sim_image_args(doc, reference).to_vec();
    a.extend(["--memory", "512"]);
    if !cmd.is_empty() {
        a.push("--");
        a.extend_from_slice(cmd);
    }
    let _lock = boot_lock();
    match cache {
        None => cloister(cfg, &a),
        Some(dir) => std::process::Command::new(cloister_e2e::cloister_bin())
            .args(&a)
            .env("CLOISTER_CONFIG_DIR", cfg)
            .env("CLOISTER_CACHE_DIR", dir)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap(),
    }
}

/// `cloister run --tee sim --initdata DOC --image REF` in `env` with the
/// config dir `cfg` (add flags, `--` and the command).
fn sim_image_run(
    env: &cloister_e2e::Env,
    cfg: &Path,
    doc: &str,
    reference: &str,
) -> std::process::Command {
    let mut c = env.cloister();
    c.args(sim_image_args(doc, reference))
        .env("CLOISTER_CONFIG_DIR", cfg);
    c
}

/// The words of `cloister run --tee sim --initdata DOC --image REF`.
fn sim_image_args<'a>(doc: &'a str, reference: &'a str) -> [&'a str; 7] {
    [
        "run",
        "--tee",
        "sim",
        "--initdata",
        doc,
        "--image",
        reference,
    ]
}

/// A copy of the guest assets whose initramfs has two zero pages more (the
/// kernel skips them): the same guest, another launch measurement.
fn changed_launch_assets(root: &Path) -> std::path::PathBuf {
    let assets = cloister_e2e::assets();
    let cache = root.join("changed-cache");
    let dir = cache.join("assets");
    std::fs::create_dir_all(&dir).unwrap();
    let src = assets.initramfs.parent().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let mut bytes = std::fs::read(&assets.initramfs).unwrap();
    bytes.extend_from_slice(&[0u8; 8192]);
    std::fs::write(dir.join(assets.initramfs.file_name().unwrap()), bytes).unwrap();
    cache
}

/// Asserts the run succeeded and printed exactly `stdout`.
fn assert_printed(out: &Output, stdout: &str) {
    assert!(out.status.success(), "{}", text(out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout);
}

/// [`assert_printed`], showing the KBS's log on a failure.
fn assert_printed_kbs(out: &Output, stdout: &str, kbs: &TestKbs) {
    assert!(
        out.status.success(),
        "{}\nKBS log:\n{}",
        text(out),
        kbs.server.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout);
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A busybox image with `/marker` pushed as `repo:v1`; returns its pinned
/// reference `ADDR/repo@sha256:…`.
fn push_plain(reg: &Registry, repo: &str, marker: &str) -> String {
    let img = umoci_busybox_image(marker, "v1");
    push(
        &img.path().join("layout"),
        "v1",
        &reg.addr,
        &format!("{repo}:v1"),
        false,
    );
    pinned(reg, repo)
}

/// `ADDR/repo@sha256:…` of what the registry serves for `repo:v1`.
fn pinned(reg: &Registry, repo: &str) -> String {
    let digest = sha256(&reg.raw_manifest(&format!("{repo}:v1")));
    format!("{}/{repo}@{digest}", reg.addr)
}

/// A plain image pinned by digest in initdata: the guest pulls it itself and
/// runs the command; the image's own Cmd runs when none is given; a tag
/// (not pinned) is refused by the default policy, naming the rule; and a
/// host rootfs with a TEE is refused before any VM starts.
#[test]
fn pinned_plain_image_runs_in_a_sim_guest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let reg = Registry::start();
    let reference = push_plain(&reg, "plain", "plain-marker\n");
    let doc = pinned_initdata(dir.path(), &cfg, &reg, &reference);

    let out = run_image(&cfg, &doc, &reference, &["cat", "/marker"]);
    assert_printed(&out, "plain-marker\n");

    // No command: the image's Cmd (`cat /marker`) runs.
    let out = run_image(&cfg, &doc, &reference, &[]);
    assert_printed(&out, "plain-marker\n");

    // By tag: the default confidential policy admits only pinned digests.
    let tagged = format!("{}/plain:v1", reg.addr);
    let out = run_image(&cfg, &doc, &tagged, &["cat", "/marker"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pinned_image_digest"), "{}", text(&out));

    // A host rootfs in a TEE guest: refused up front.
    let rootfs = cloister_e2e::busybox_rootfs();
    let out = cloister(
        &cfg,
        &[
            "run",
            "--tee",
            "sim",
            "--rootfs",
            rootfs.path().to_str().unwrap(),
            "--",
            "true",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("never takes its root filesystem from the host"),
        "{}",
        text(&out)
    );
}

/// An image encrypted with `cloister image encrypt` (CoCo's
/// attestation-agent annotation): the guest attests to the KBS its initdata
/// names, which releases the KEK only to this launch; the registry only
/// ever holds ciphertext. With the KEK not in the KBS the pull fails naming
/// the kid; a launch with one initramfs page more is refused the key.
#[test]
fn encrypted_image_is_decrypted_with_a_key_released_after_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let kbs = TestKbs::start(root);
    let reg = Registry::start();
    let img = umoci_busybox_image("secret-marker\n", "v1");
    let layout = img.path().join("layout");
    // A second layer, so two layers share the one kid.
    let image = format!("{}:v1", layout.display());
    let bundle = img.path().join("bundle2");
    let umoci = |args: &[&str]| {
        let mut c = std::process::Command::new("umoci");
        c.args(args);
        registry_common::run(c, "umoci");
    };
    umoci(&["unpack", "--image", &image, bundle.to_str().unwrap()]);
    std::fs::write(bundle.join("rootfs/second-layer"), "2\n").unwrap();
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
    let enc = root.join("enc");
    let kek = root.join("kek.bin");
    let kid = "kbs:///default/image-kek/app";
    ok(
        &cloister(
            &kbs.cfg,
            &[
                "image",
                "encrypt",
                "--input",
                &format!("oci:{}:v1", layout.display()),
                "--output",
                &format!("oci:{}:v1", enc.display()),
                "--kid",
                kid,
                "--kek-out",
                kek.to_str().unwrap(),
            ],
        ),
        "image encrypt",
    );
    push(&enc, "v1", &reg.addr, "enc:v1", false);
    let reference = pinned(&reg, "enc");
    // The registry holds no plaintext of the marker.
    let storage = reg.dir.path().join("storage");
    let grep = std::process::Command::new("grep")
        .args(["-r", "-q", "secret-marker"])
        .arg(&storage)
        .status()
        .unwrap();
    assert!(
        !grep.success(),
        "the registry holds the marker in plaintext"
    );

    let doc = kbs_initdata(root, &kbs, &reg, &[&reference], &[]);

    // Without the key: the pull stops, naming the kid, before any layer
    // body is requested.
    let layers = reg.layer_digests("enc:v1");
    assert!(!layers.is_empty());
    let no_layer_fetched = |mark: usize, when: &str| {
        for l in &layers {
            assert_eq!(
                reg.requests_after(mark, l),
                0,
                "{when}: layer {l} was requested"
            );
        }
    };
    let mark = reg.mark();
    let out = run_image(&kbs.cfg, &doc, &reference, &["cat", "/marker"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("default/image-kek/app"),
        "{}",
        text(&out)
    );
    assert!(
        reg.requests_after(mark, "/manifests/") > 0,
        "the pull reached the registry"
    );
    no_layer_fetched(mark, "no key in the KBS");
    // The refusal is one line naming the cause.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("default/image-kek/app"), "{stderr}");
    assert!(!stderr.contains("Caused by"), "{stderr}");

    kbs.set_resource("default/image-kek/app", &std::fs::read(&kek).unwrap());
    assert_eq!(layers.len(), 2, "two layers under one kid");
    let released = kbs.releases();
    let out = run_image(&kbs.cfg, &doc, &reference, &["cat", "/marker"]);
    assert_printed_kbs(&out, "secret-marker\n", &kbs);
    // One key for every layer: fetched once in the sandbox's life.
    assert_eq!(kbs.releases() - released, 1, "the KEK is fetched once");

    // While the sandbox runs, the host's files of it (state dir, console
    // and QEMU logs) hold neither the image's plaintext nor the key.
    let env = cloister_e2e::Env::new();
    let out = {
        let _lock = boot_lock();
        sim_image_run(&env, &kbs.cfg, &doc, &reference)
            .args(["--memory", "512", "--detach", "--", "sleep", "600"])
            .output()
            .unwrap()
    };
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let kek_bytes = std::fs::read(&kek).unwrap();
    let secrets: [(&str, Vec<u8>); 4] = [
        ("the image's marker", b"secret-marker".to_vec()),
        ("the KEK", kek_bytes.clone()),
        ("the KEK in hex", hex::encode(&kek_bytes).into_bytes()),
        (
            "the KEK in base64",
            STANDARD.encode(&kek_bytes).into_bytes(),
        ),
    ];
    let console = env.runtime_dir.path().join(&id).join("console.log");
    assert!(
        cloister_e2e::wait_for(std::time::Duration::from_secs(120), || {
            std::fs::read_to_string(&console).is_ok_and(|c| c.contains("pulled "))
        }),
        "the guest did not finish its pull; console:\n{}",
        std::fs::read_to_string(&console).unwrap_or_default()
    );
    let files = files_under(env.runtime_dir.path());
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for (what, needle) in &secrets {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{} holds {what}",
                f.display()
            );
        }
    }
    let rm = env.cloister().args(["rm", &id]).output().unwrap();
    assert!(rm.status.success(), "{rm:?}");
    assert_gone(&env);

    // Another launch (the initramfs changed): the KBS appraises the RIM as
    // unrecognized and releases nothing.
    let cache = changed_launch_assets(root);
    let mark = reg.mark();
    let out = run_image_in(
        &kbs.cfg,
        &doc,
        &reference,
        &["cat", "/marker"],
        Some(&cache),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("default/image-kek/app")
            && text(&out).contains("resource policy denies"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("secret-marker"), "{}", text(&out));
    no_layer_fetched(mark, "the key refused to a changed launch");
}

/// Images encrypted by skopeo 1.9 with `--encryption-key jwe:`, one to an
/// RSA key (RSA-OAEP) and one to an EC P-256 key (ECDH-ES with AES key
/// wrap): each private key is a KBS resource that initdata names.
#[test]
fn skopeo_jwe_images_are_decrypted_with_kbs_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let kbs = TestKbs::start(root);
    let reg = Registry::start();
    let openssl = |args: &[&str], what: &str| {
        let mut c = std::process::Command::new("openssl");
        c.args(args).current_dir(root);
        registry_common::run(c, what);
    };
    openssl(&["genrsa", "-out", "rsa.pem", "2048"], "openssl genrsa");
    openssl(
        &["rsa", "-pubout", "-in", "rsa.pem", "-out", "rsa.pub"],
        "openssl rsa -pubout",
    );
    openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
        "openssl ecparam -genkey",
    );
    openssl(
        &["ec", "-pubout", "-in", "ec.pem", "-out", "ec.pub"],
        "openssl ec -pubout",
    );
    for kind in ["rsa", "ec"] {
        let marker = format!("jwe-{kind}-marker\n");
        let img = umoci_busybox_image(&marker, "v1");
        let repo = format!("jwe-{kind}");
        let mut c = std::process::Command::new("skopeo");
        c.args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
            .arg("--encryption-key")
            .arg(format!(
                "jwe:{}",
                root.join(format!("{kind}.pub")).display()
            ))
            .arg(format!("oci:{}:v1", img.path().join("layout").display()))
            .arg(format!("docker://{}/{repo}:v1", reg.addr));
        registry_common::run(c, "skopeo copy --encryption-key");
        let reference = pinned(&reg, &repo);
        kbs.set_resource(
            &format!("default/keys/{kind}"),
            &std::fs::read(root.join(format!("{kind}.pem"))).unwrap(),
        );
        let key = format!("kbs:///default/keys/{kind}");
        let doc = kbs_initdata(root, &kbs, &reg, &[&reference], &["--decryption-key", &key]);
        let out = run_image(&kbs.cfg, &doc, &reference, &["cat", "/marker"]);
        assert_printed_kbs(&out, &marker, &kbs);
    }
}

/// A two-platform index (linux/amd64 and linux/arm64/v8) pinned by the
/// index digest: the guest picks its own platform's manifest.
#[test]
fn two_platform_index_runs_the_guests_platform() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let reg = Registry::start();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let layer = |marker: &str| {
        registry_common::tar(|t| {
            t.dir("bin")
                .file_mode("bin/busybox", &busybox, 0o755)
                .symlink("bin/cat", "busybox")
                .symlink("bin/sh", "busybox")
                .file("marker", marker.as_bytes());
        })
    };
    let l = registry_common::Layout::new();
    let amd = l.image("amd64", &[layer("the amd64 image\n")]);
    let arm = l.image("arm64", &[layer("the arm64 image\n")]);
    let index = l.index(&[
        (&amd, "linux", "amd64", None),
        (&arm, "linux", "arm64", Some("v8")),
    ]);
    l.tag(&index, "v1");
    push(l.path(), "v1", &reg.addr, "multi:v1", true);
    let reference = pinned(&reg, "multi");
    let _ = &index.digest;
    let served: serde_json::Value = serde_json::from_slice(&reg.raw_manifest("multi:v1")).unwrap();
    assert_eq!(
        served["manifests"].as_array().unwrap().len(),
        2,
        "an index is pinned"
    );
    let doc = pinned_initdata(dir.path(), &cfg, &reg, &reference);
    let out = run_image(&cfg, &doc, &reference, &["cat", "/marker"]);
    assert_printed(&out, "the amd64 image\n");
}

/// A static file server on 127.0.0.1 (`python3 -m http.server`), killed on
/// drop: the signature lookaside.
struct FileServer {
    child: std::process::Child,
    port: u16,
}

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let up = cloister_e2e::wait_for(std::time::Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "python3 -m http.server did not listen on {port}");
        FileServer { child, port }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image signed by skopeo 1.9 `--sign-by` (GPG simple signing, key made
/// here) with its signature in a lookaside served on 127.0.0.1, checked in
/// the guest against a containers-policy.json the KBS releases; an unsigned
/// image under the same policy is refused before any layer is fetched.
#[test]
fn gpg_signed_image_runs_and_an_unsigned_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let kbs = TestKbs::start(root);
    let reg = Registry::start();
    let home = root.join("gnupg");
    let lookaside = root.join("lookaside");
    std::fs::create_dir_all(&lookaside).unwrap();
    std::fs::create_dir_all(root.join("registries.d")).unwrap();
    std::fs::write(
        root.join("registries.d/local.yaml"),
        format!(
            "docker:\n  {}:\n    lookaside-staging: file://{}\n",
            reg.addr,
            lookaside.display()
        ),
    )
    .unwrap();
    let sh = |script: &str| {
        let mut c = std::process::Command::new("sh");
        c.args(["-ec", script])
            .current_dir(root)
            .env("GNUPGHOME", &home);
        registry_common::run(c, script)
    };
    sh(&format!(
        "mkdir -m 700 {h}; gpg -q --batch --passphrase '' --quick-gen-key 'signer <signer@example.com>' rsa2048 sign 1y",
        h = home.display()
    ));
    let fpr = sh("gpg --with-colons --list-keys | awk -F: '/^fpr/{print $10; exit}'")
        .trim()
        .to_owned();
    sh(&format!("gpg --export {fpr} > signer.gpg"));
    let public = std::fs::read(root.join("signer.gpg")).unwrap();

    let signed = umoci_busybox_image("signed-marker\n", "v1");
    sh(&format!(
        "skopeo --insecure-policy --registries.d registries.d copy -q --dest-tls-verify=false --sign-by {fpr} oci:{}:v1 docker://{}/signed:v1",
        signed.path().join("layout").display(),
        reg.addr
    ));
    let signed_ref = pinned(&reg, "signed");
    let unsigned_ref = push_plain(&reg, "unsigned", "unsigned-marker\n");
    let server = FileServer::start(&lookaside);

    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{}/signed", reg.addr): [{
                "type": "signedBy", "keyType": "GPGKeys",
                "keyData": STANDARD.encode(&public),
            }],
            format!("{}/unsigned", reg.addr): [{
                "type": "signedBy", "keyType": "GPGKeys",
                "keyData": STANDARD.encode(&public),
            }],
        }},
    });
    kbs.set_resource("default/security-policy/app", policy.to_string().as_bytes());
    let lookaside_arg = format!("{}=http://127.0.0.1:{}", reg.addr, server.port);
    let doc = kbs_initdata(
        root,
        &kbs,
        &reg,
        &[&signed_ref, &unsigned_ref],
        &[
            "--image-policy",
            "kbs:///default/security-policy/app",
            "--lookaside",
            &lookaside_arg,
        ],
    );

    let out = run_image(&kbs.cfg, &doc, &signed_ref, &["cat", "/marker"]);
    assert_printed(&out, "signed-marker\n");

    let mark = reg.mark();
    let out = run_image(&kbs.cfg, &doc, &unsigned_ref, &["cat", "/marker"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("signature"), "{}", text(&out));
    assert_eq!(
        reg.requests_after(mark, "/blobs/"),
        0,
        "no config or layer was fetched for the unsigned image"
    );
}

/// The host kills the registry while the guest pulls a 48 MiB layer: the
/// run fails with one line naming the pull, and nothing is left behind (no
/// QEMU, no state dir, no mount).
#[test]
fn registry_killed_mid_pull_fails_cleanly() {
    use std::io::{BufRead, BufReader, Read};
    let env = cloister_e2e::Env::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let reg = Registry::start();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut payload = vec![0u8; 48 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut payload)
        .unwrap();
    let layer = registry_common::tar(|t| {
        t.dir("bin")
            .file_mode("bin/busybox", &busybox, 0o755)
            .symlink("bin/cat", "busybox")
            .file("payload", &payload)
            .file("marker", b"never printed\n");
    });
    let l = registry_common::Layout::new();
    let image = l.image("amd64", &[layer]);
    l.tag(&image, "v1");
    push(l.path(), "v1", &reg.addr, "big:v1", false);
    let reference = pinned(&reg, "big");
    let doc = pinned_initdata(dir.path(), &cfg, &reg, &reference);

    let _lock = boot_lock();
    let mut child = sim_image_run(&env, &cfg, &doc, &reference)
        .args(["--", "cat", "/marker"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Pull the plug at the first progress line of the layer.
    let kill = reg.killer();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut killed = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !killed && line.starts_with("cloister: pull sha256:") {
                kill();
                killed = true;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        (killed, seen)
    });
    let status = cloister_e2e::wait_limit(&mut child, std::time::Duration::from_secs(300));
    let (killed, stderr) = reader.join().unwrap();
    assert!(killed, "no pull progress was shown:\n{stderr}");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("CreateContainer") && stderr.contains("pulling"),
        "{stderr}"
    );
    env.assert_clean();
}

/// A sigstore-signed image: a cosign-format signature (ECDSA P-256 over the
/// simple-signing payload, made with python3-cryptography, because Debian's
/// skopeo 1.9 is built with sigstore signing disabled) attached at
/// `sha256-<hex>.sig`, checked in the guest against a `sigstoreSigned`
/// policy with the public key inline, released by the KBS; a signature by
/// another key is refused.
#[test]
fn sigstore_signed_image_runs_and_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let kbs = TestKbs::start(root);
    let reg = Registry::start();
    let sign_and_attach = |repo: &str, key_name: &str| -> (String, String) {
        let reference = pinned(&reg, repo);
        let digest = reference.rsplit('@').next().unwrap().to_owned();
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{}/{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#,
            reg.addr
        );
        let (key, sig) = registry_common::cosign_sign(root, key_name, &payload);
        let l = registry_common::Layout::new();
        let att = l.sigstore_attachment(payload.as_bytes(), &sig);
        let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
        l.tag(&att, &tag);
        push(l.path(), &tag, &reg.addr, &format!("{repo}:{tag}"), false);
        (reference, key)
    };
    push_plain(&reg, "signed", "sigstore-marker\n");
    push_plain(&reg, "stranger", "stranger-marker\n");
    let (signed_ref, key) = sign_and_attach("signed", "trusted");
    let (stranger_ref, _) = sign_and_attach("stranger", "other");

    let req = serde_json::json!([{"type": "sigstoreSigned", "keyData": key}]);
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{}/signed", reg.addr): req,
            format!("{}/stranger", reg.addr): req,
        }},
    });
    kbs.set_resource(
        "default/security-policy/cosign",
        policy.to_string().as_bytes(),
    );
    let doc = kbs_initdata(
        root,
        &kbs,
        &reg,
        &[&signed_ref, &stranger_ref],
        &["--image-policy", "kbs:///default/security-policy/cosign"],
    );

    let out = run_image(&kbs.cfg, &doc, &signed_ref, &["cat", "/marker"]);
    assert_printed_kbs(&out, "sigstore-marker\n", &kbs);

    let out = run_image(&kbs.cfg, &doc, &stranger_ref, &["cat", "/marker"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("signature"), "{}", text(&out));
    assert!(!text(&out).contains("stranger-marker"), "{}", text(&out));
}

/// An image larger than the guest's image store (75 % of its RAM). With a
/// scratch disk the measured initdata does not allow, the TEE guest ignores
/// the disk and the pull fails, naming `--scratch-disk` and the initdata
/// key; with initdata that allows it, the agent encrypts the disk with a
/// key made in the guest, pages the store out to it and runs the
/// container, while the host's file holds none of the image's plaintext;
/// `cloister rm` removes the file.
#[test]
fn image_larger_than_guest_ram_runs_on_an_encrypted_scratch_disk() {
    let env = cloister_e2e::Env::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let scratch_dir = dir.path().join("scratch");
    let reg = Registry::start();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    // 224 MiB of one recognisable line: compresses to almost nothing on
    // the wire, fills the guest's memory once unpacked.
    const LINE: &[u8] = b"cloister scratch plaintext 0123456789abcdef\n";
    let big: Vec<u8> = LINE.iter().copied().cycle().take(224 << 20).collect();
    let layer = registry_common::tar(|t| {
        t.dir("bin")
            .file_mode("bin/busybox", &busybox, 0o755)
            .symlink("bin/sh", "busybox")
            .symlink("bin/cat", "busybox")
            .symlink("bin/wc", "busybox")
            .symlink("bin/sleep", "busybox")
            .file("big", &big)
            .file("marker", b"ran from swap\n");
    });
    drop(big);
    let l = registry_common::Layout::new();
    let image = l.image_with("amd64", &[layer], true);
    l.tag(&image, "v1");
    push(l.path(), "v1", &reg.addr, "huge:v1", false);
    let reference = pinned(&reg, "huge");
    // Initdata without cloister.toml allow_scratch_disk, and with it.
    let refused_doc = pinned_initdata(dir.path(), &cfg, &reg, &reference);
    let allowed_dir = dir.path().join("allowed");
    std::fs::create_dir_all(&allowed_dir).unwrap();
    let doc = initdata(
        &allowed_dir,
        &cfg,
        &[
            "--insecure-registry",
            &reg.addr,
            "--pin",
            &reference,
            "--allow-scratch-disk",
        ],
    );
    let run_with = |doc: &str, extra: &[&str], cmd: &[&str]| {
        let mut c = sim_image_run(&env, &cfg, doc, &reference);
        c.args(["--memory", "256"])
            .args(extra)
            .arg("--")
            .args(cmd)
            .env("CLOISTER_SCRATCH_DIR", &scratch_dir)
            .stdin(std::process::Stdio::null());
        let _lock = boot_lock();
        c.output().unwrap()
    };
    let run = |extra: &[&str], cmd: &[&str]| run_with(&doc, extra, cmd);

    // A host that attaches a disk the measured initdata does not allow gets
    // it ignored: the image does not fit, and the error names the key.
    let out = run_with(&refused_doc, &["--scratch-disk", "1G"], &["cat", "/marker"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left on device")
            && err.contains("--scratch-disk")
            && err.contains("allow_scratch_disk"),
        "{err}"
    );
    env.assert_clean();

    let out = run(
        &["--scratch-disk", "1G", "--detach"],
        &["sh", "-c", "cat /marker; wc -c < /big; sleep 600"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let c0 = env.runtime_dir.path().join(&id).join("c0.out");
    let printed = || std::fs::read_to_string(&c0).unwrap_or_default();
    assert!(
        cloister_e2e::wait_for(std::time::Duration::from_secs(120), || printed()
            .lines()
            .count()
            >= 2),
        "the container printed {:?}",
        printed()
    );
    assert_eq!(printed(), format!("ran from swap\n{}\n", 224u64 << 20));
    let file = scratch_dir.join(format!("{id}.img"));
    let disk = std::fs::read(&file).unwrap();
    assert_eq!(disk.len(), 1 << 30);
    // The image paged out (the file holds data), but never in plaintext:
    // a plaintext page of /big would hold a whole LINE ending in '\n'.
    let written: Vec<&[u8]> = disk
        .chunks(4096)
        .filter(|p| p.iter().any(|b| *b != 0))
        .collect();
    assert!(
        written.len() > (32 << 20) / 4096,
        "only {} pages written",
        written.len()
    );
    let holds_line = |p: &[u8]| {
        p.iter()
            .enumerate()
            .any(|(i, b)| *b == b'\n' && i + 1 >= LINE.len() && p[i + 1 - LINE.len()..=i] == *LINE)
    };
    let page: Vec<u8> = LINE.iter().copied().cycle().skip(7).take(4096).collect();
    assert!(holds_line(&page), "the plaintext detector works");
    assert!(
        !written.iter().any(|p| holds_line(p)),
        "the scratch disk holds the image's plaintext"
    );
    drop(disk);
    let rm = env.cloister().args(["rm", &id]).output().unwrap();
    assert!(rm.status.success(), "{rm:?}");
    assert!(
        cloister_e2e::wait_for(std::time::Duration::from_secs(30), || !file.exists()),
        "{} left behind",
        file.display()
    );
    assert_gone(&env);
}

/// Every regular file under `dir`, recursively (sockets and FIFOs are not
/// read).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Waits for a removed sandbox's state to go, then checks nothing of it is
/// left.
fn assert_gone(env: &cloister_e2e::Env) {
    assert!(
        cloister_e2e::wait_for(std::time::Duration::from_secs(30), || env
            .state_dirs()
            .is_empty()),
        "state left"
    );
    env.assert_clean();
}
