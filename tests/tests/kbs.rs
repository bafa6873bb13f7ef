//! End to end with the key broker as users run it: `cloister kbs serve` as
//! its own process on 127.0.0.1, administered with `cloister kbs admin`,
//! and a secret fetched with `cloister attest --attester sim` (this host's sim
//! platform: a software RMM signing CCA tokens with the sim platform key).
//! Covers persistence across a restart, a policy refusal, HTTPS with a
//! configured certificate, and SNP/TDX evidence reaching their verifiers.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use cloister_e2e::cloister_bin;

use cloister_e2e::kbs_server::KbsServer as Server;
use cloister_e2e::{cloister_with_config as cloister, stdout_of_success as ok};

fn refused(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should have failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: nothing may be released on a refusal, stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A resource policy for sim guests that releases only the "default"
/// repository (so `other/...` is refused by policy, not for lack of data).
const SIM_DEFAULT_REPO_POLICY: &str = r#"package policy

import rego.v1

default allow := false

cpu0 := input.submods.cpu0

allow if {
	cpu0["ear.cloister.simulated"] == true
	count(cpu0["ear.veraison.annotated-evidence"].failures) == 0
	startswith(data["resource-path"], "default/")
}
"#;

/// Fresh dirs: sim platform config, KBS data dir with the admin public key,
/// the admin private key, and the sim platform's trust anchor.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    data: PathBuf,
    admin_key: String,
    anchors: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let config = root.join("config");
    let data = root.join("data");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    // The KBS refuses a data dir that others can read.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let prefix = root.join("admin");
    ok(
        &cloister(
            &config,
            &["kbs", "admin", "keygen", "--out", prefix.to_str().unwrap()],
        ),
        "kbs admin keygen",
    );
    std::fs::copy(root.join("admin.pub.pem"), data.join("admin.pub.pem")).unwrap();
    let anchors = ok(
        &cloister(&config, &["sim", "trust-anchor"]),
        "sim trust-anchor",
    );
    let anchors_path = root.join("anchors.json");
    std::fs::write(&anchors_path, anchors).unwrap();
    Setup {
        root: root.clone(),
        config,
        data,
        admin_key: root.join("admin.key.pem").to_str().unwrap().to_owned(),
        anchors: anchors_path.to_str().unwrap().to_owned(),
        _tmp: tmp,
    }
}

impl Setup {
    fn admin(&self, url: &str, extra: &[&str], args: &[&str]) -> Output {
        let mut a = vec!["kbs", "admin", "--kbs", url, "--key", &self.admin_key];
        a.extend_from_slice(extra);
        a.extend_from_slice(args);
        cloister(&self.config, &a)
    }

    fn write(&self, name: &str, data: &[u8]) -> String {
        let p = self.root.join(name);
        std::fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_owned()
    }

    fn attest(&self, url: &str, extra: &[&str], resource: &str) -> Output {
        let mut a = vec![
            "attest",
            "--kbs",
            url,
            "--attester",
            "sim",
            "--resource",
            resource,
        ];
        if url.starts_with("http://") {
            a.push("--allow-http");
        }
        a.extend_from_slice(extra);
        cloister(&self.config, &a)
    }
}

#[test]
fn kbs_releases_to_a_sim_guest_keeps_state_across_restart_and_refuses_by_policy() {
    let s = setup();
    let data = s.data.to_str().unwrap();
    let serve_args = [
        "--insecure-http",
        "--allow-simulated",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ];
    let srv = Server::start(&s.config, &serve_args);
    let url = srv.url.clone();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // Before any admin write the sim platform is unknown: refused, not released.
    let err = refused(
        &s.attest(&url, &[], "default/key/1"),
        "attest before trust anchors",
    );
    assert!(err.contains("401"), "{err}");

    ok(
        &s.admin(&url, &[], &["set-trust-anchors", &s.anchors]),
        "set-trust-anchors",
    );
    let secret = s.write("secret.bin", b"the-sim-secret\x00\x01");
    ok(
        &s.admin(&url, &[], &["set-resource", "default/key/1", &secret]),
        "set-resource",
    );
    let other = s.write("other.bin", b"not-for-sim");
    ok(
        &s.admin(&url, &[], &["set-resource", "other/key/1", &other]),
        "set-resource other",
    );
    let policy = s.write("policy.rego", SIM_DEFAULT_REPO_POLICY.as_bytes());
    ok(
        &s.admin(&url, &[], &["set-policy", "resource", &policy]),
        "set-policy resource",
    );

    let out = s.attest(&url, &[], "default/key/1");
    ok(&out, "attest default/key/1");
    assert_eq!(out.stdout, b"the-sim-secret\x00\x01");

    // The resource exists but the policy denies it: 403 with the reason.
    let err = refused(&s.attest(&url, &[], "other/key/1"), "attest other/key/1");
    assert!(err.contains("403"), "{err}");
    assert!(err.contains("resource policy denies other/key/1"), "{err}");

    // An admin write with another admin key is refused.
    let rogue = s.root.join("rogue");
    ok(
        &cloister(
            &s.config,
            &["kbs", "admin", "keygen", "--out", rogue.to_str().unwrap()],
        ),
        "keygen rogue",
    );
    let rogue_key = s.root.join("rogue.key.pem");
    let out = cloister(
        &s.config,
        &[
            "kbs",
            "admin",
            "--kbs",
            &url,
            "--key",
            rogue_key.to_str().unwrap(),
            "set-resource",
            "default/key/1",
            &other,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("401"), "{err}");

    // Restart on the same data dir: resources, trust anchors and the policy
    // persist (and the rogue write changed nothing).
    let log = srv.log();
    drop(srv);
    assert!(log.contains("admin: set resource default/key/1"), "{log}");
    let srv = Server::start(&s.config, &serve_args);
    let out = s.attest(&srv.url, &[], "default/key/1");
    ok(&out, "attest after restart");
    assert_eq!(out.stdout, b"the-sim-secret\x00\x01");
    let err = refused(
        &s.attest(&srv.url, &[], "other/key/1"),
        "attest other/key/1 after restart",
    );
    assert!(err.contains("resource policy denies"), "{err}");
}

#[test]
fn kbs_serves_https_with_a_configured_certificate() {
    let s = setup();
    cloister_e2e::kbs_server::make_certs(&s.root);
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\ntls_cert = {:?}\ntls_key = {:?}\nallow_simulated = true\n",
        s.data,
        s.root.join("server.pem"),
        s.root.join("server.key"),
    );
    let config_file = s.write("kbs.toml", config.as_bytes());
    let srv = Server::start(&s.config, &["--config", &config_file]);
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
    let ca = s.root.join("ca.pem");
    let ca = ca.to_str().unwrap();

    // Without our CA the client does not trust the server: nothing released.
    let out = s.admin(&srv.url, &[], &["set-trust-anchors", &s.anchors]);
    assert!(
        !out.status.success(),
        "admin write over untrusted TLS succeeded"
    );

    ok(
        &s.admin(
            &srv.url,
            &["--cacert", ca],
            &["set-trust-anchors", &s.anchors],
        ),
        "set-trust-anchors over HTTPS",
    );
    let secret = s.write("secret.bin", b"tls-secret");
    ok(
        &s.admin(
            &srv.url,
            &["--cacert", ca],
            &["set-resource", "default/key/tls", &secret],
        ),
        "set-resource over HTTPS",
    );
    let err = refused(
        &s.attest(&srv.url, &[], "default/key/tls"),
        "attest without the CA",
    );
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("HTTP to KBS failed"),
        "{err}"
    );
    let out = s.attest(&srv.url, &["--cacert", ca], "default/key/tls");
    ok(&out, "attest over HTTPS");
    assert_eq!(out.stdout, b"tls-secret");
}

#[test]
fn kbs_serve_refuses_a_missing_collateral_dir_by_name() {
    let s = setup();
    let missing = s.root.join("no-such-collateral");
    let out = Command::new(cloister_bin())
        .args(["kbs", "serve", "--insecure-http", "--listen", "127.0.0.1:0"])
        .args(["--data-dir", s.data.to_str().unwrap()])
        .args(["--collateral-dir", missing.to_str().unwrap()])
        .env("CLOISTER_CONFIG_DIR", &s.config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "served with a missing collateral dir"
    );
    assert!(err.contains("no-such-collateral"), "{err}");
}
