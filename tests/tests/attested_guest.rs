//! The attested guest end to end (issue 9), with real peers on 127.0.0.1:
//! a sim-TEE guest (TCG) whose agent attests itself to `cloister kbs serve`
//! with the KBS URL (and CA) from its measured initdata, reaches exactly
//! the endpoints that initdata names (host loopback ports, and other hosts
//! by name), and refuses to sign host-chosen report_data.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cloister_e2e::cloister_with_config as cloister;
use cloister_e2e::kbs_server::TestKbs as Kbs;
use cloister_e2e::{boot_lock, cloister_bin};
use cloister_runtime::agent::{block_rootfs, oci_spec};
use cloister_runtime::{Sandbox, SandboxConfig};

const CONTAINER: &str = "c0";

fn initdata(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from("version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n");
    for (k, v) in entries {
        s.push_str(&format!("{k:?} = '''\n{v}'''\n"));
    }
    s.into_bytes()
}

/// A sandbox config for a sim guest with the busybox rootfs, if any.
fn sim_config(dir: &Path, rootfs: Option<&Path>, doc: Vec<u8>) -> SandboxConfig {
    // QEMU runs the relay per forwarded connection: the cloister binary,
    // not this test executable.
    std::env::set_var("CLOISTER_NET_RELAY", cloister_bin());
    SandboxConfig {
        rootfs: rootfs.map(Path::to_owned),
        ..cloister_e2e::sim_sandbox_config(&dir.join("run"), doc, "attested-guest-test")
    }
}

fn backend(config_dir: &Path) -> Box<dyn cloister_tee::HostBackend> {
    cloister_e2e::sim_backend(config_dir)
}

/// Boots, runs CreateSandbox with the launch's initdata, then `cmd` (if
/// any) in a container; returns CreateSandbox's error text or the
/// container's stdout.
fn boot_and_run(
    config: SandboxConfig,
    config_dir: &Path,
    cmd: Option<&[&str]>,
) -> Result<String, String> {
    let runtime_dir = config.runtime_dir.clone();
    let qemu = cloister_runtime::Qemu::find().expect("QEMU");
    let be = backend(config_dir);
    let _lock = boot_lock();
    let rt = cloister_e2e::runtime();
    let r = rt.block_on(async {
        let mut sb = Sandbox::start(config, &qemu, be.as_ref()).expect("sandbox");
        let client = sb.wait_ready().await.expect("agent ready");
        let r = match client.create_sandbox(sb.id(), sb.initdata()).await {
            Err(e) => Err(e.to_string()),
            Ok(()) => match cmd {
                None => Ok(String::new()),
                Some(cmd) => {
                    let args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
                    client
                        .create_container(CONTAINER, oci_spec(&args, "t"), block_rootfs())
                        .await
                        .unwrap();
                    client.start_container(CONTAINER).await.unwrap();
                    let mut out = Vec::new();
                    loop {
                        let d = client.read_output(CONTAINER, "", false).await.unwrap();
                        if d.is_empty() {
                            break;
                        }
                        out.extend_from_slice(&d);
                    }
                    let st = client.wait(CONTAINER, "").await.unwrap();
                    assert_eq!(st.code, 0, "{}", String::from_utf8_lossy(&out));
                    Ok(String::from_utf8_lossy(&out).into_owned())
                }
            },
        };
        let tail = sb.console_tail(30).join("\n");
        sb.shutdown().await;
        match (r, cmd) {
            // No command: the console shows what CreateSandbox did.
            (Ok(_), None) => Ok(tail),
            (Ok(out), Some(_)) => Ok(out),
            (Err(e), _) => Err(format!("{e}\nconsole:\n{tail}")),
        }
    });
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(&runtime_dir).unwrap().count(), 0);
    r
}

/// A host service on 127.0.0.1 that greets each connection with `hello`
/// and counts them.
fn greeter(hello: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(hello.as_bytes());
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 64];
            let _ = s.read(&mut sink);
        }
    });
    (port, n)
}

/// The guest reaches the host port its initdata names (through guest
/// 127.0.0.1:PORT, as written), and neither another host port (through
/// QEMU's host alias 10.0.2.2, which `restrict=on` cuts) nor that port on
/// its own loopback.
#[test]
fn guest_reaches_the_named_host_port_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let rootfs = cloister_e2e::busybox_rootfs();
    let (named, named_hits) = greeter("named-service\n");
    let (other, other_hits) = greeter("other-service\n");
    let doc = initdata(&[(
        "cloister.toml",
        // allow-all: this test hands the guest a host rootfs, which the
        // default confidential policy refuses.
        &format!("insecure_registries = [\"127.0.0.1:{named}\"]\nagent_policy = \"allow-all\"\n"),
    )]);
    let script = format!(
        "nc 127.0.0.1 {named} </dev/null; \
         nc -w 3 10.0.2.2 {other} </dev/null || echo blocked-host-alias; \
         nc -w 3 10.0.2.2 {named} </dev/null || echo blocked-host-alias-named; \
         nc -w 3 127.0.0.1 {other} </dev/null || echo blocked-loopback; true"
    );
    let out = boot_and_run(
        sim_config(dir.path(), Some(rootfs.path()), doc),
        &cfg,
        Some(&["sh", "-c", &script]),
    )
    .unwrap();
    assert!(out.contains("named-service"), "{out}");
    assert!(!out.contains("other-service"), "{out}");
    assert!(out.contains("blocked-host-alias\n"), "{out}");
    assert!(out.contains("blocked-host-alias-named"), "{out}");
    assert!(out.contains("blocked-loopback"), "{out}");
    assert_eq!(named_hits.load(Ordering::SeqCst), 1);
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
}

/// A sim guest asked for evidence over host-chosen report_data refuses,
/// naming the initdata key, and `cloister evidence` says so.
#[test]
fn host_get_evidence_is_refused_without_the_initdata_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let ev = dir.path().join("ev.cbor");
    let doc = dir.path().join("initdata.toml");
    std::fs::write(&doc, initdata(&[])).unwrap();
    let out = {
        let _lock = boot_lock();
        cloister(
            &cfg,
            &[
                "evidence",
                "--tee",
                "sim",
                "--report-data",
                "00ff",
                "--initdata",
                doc.to_str().unwrap(),
                "-o",
                ev.to_str().unwrap(),
            ],
        )
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refused to sign host-chosen report_data")
            && err.contains("cloister.toml allow_host_evidence"),
        "{err}"
    );
    assert!(!ev.exists(), "no evidence may be written");
}

/// The agent attests itself to the KBS its initdata names (plain HTTP on
/// 127.0.0.1, allowed by the initdata) at CreateSandbox. (A changed launch
/// gets a token appraised "unrecognized" but no resource: guest_image.rs.)
#[test]
fn guest_attests_to_the_kbs_its_initdata_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let kbs = Kbs::start(root);
    let port = kbs.port();
    let doc_bytes = initdata(&[
        (
            "aa.toml",
            &format!("[token_configs.kbs]\nurl = \"http://127.0.0.1:{port}\"\n"),
        ),
        ("cloister.toml", "insecure_http = true\n"),
    ]);
    let doc = root.join("initdata.toml");
    std::fs::write(&doc, &doc_bytes).unwrap();
    kbs.accept_sim_launch(&doc);

    // The measured launch: the guest attests.
    let console = boot_and_run(sim_config(root, None, doc_bytes.clone()), &kbs.cfg, None)
        .unwrap_or_else(|e| {
            panic!(
                "the guest should attest:\n{e}\nKBS log:\n{}",
                kbs.server.log()
            )
        });
    assert!(
        console.contains("attested to the KBS at http://127.0.0.1:"),
        "{console}"
    );
}

/// A KBS named by host name over HTTPS, as a deployment names one: the
/// runtime forwards `localhost:PORT` (resolved on the host) to a guest
/// address of its own, the agent resolves the name to it, and TLS checks
/// the name as written against the CA the measured initdata carries. The
/// same launch with another CA in its initdata is refused at
/// CreateSandbox: the guest trusts only the initdata's CA.
#[test]
fn guest_attests_over_https_to_a_kbs_named_by_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let kbs = Kbs::start_tls(root);
    let port = kbs.port();
    let ca = std::fs::read_to_string(kbs.ca.as_ref().unwrap()).unwrap();
    let doc_for = |ca: &str| {
        initdata(&[(
            "aa.toml",
            &format!(
                "[token_configs.kbs]\nurl = \"https://localhost:{port}\"\ncert = \"\"\"\n{ca}\"\"\"\n"
            ),
        )])
    };
    let doc_bytes = doc_for(&ca);
    let doc = root.join("initdata.toml");
    std::fs::write(&doc, &doc_bytes).unwrap();
    kbs.accept_sim_launch(&doc);

    let console =
        boot_and_run(sim_config(root, None, doc_bytes), &kbs.cfg, None).unwrap_or_else(|e| {
            panic!(
                "the guest should attest over HTTPS:\n{e}\nKBS log:\n{}",
                kbs.server.log()
            )
        });
    assert!(
        console.contains(&format!("attested to the KBS at https://localhost:{port}")),
        "{console}"
    );
    assert!(
        console.contains(&format!("localhost:{port}")) && console.contains("endpoints"),
        "the agent names the endpoint it reaches:\n{console}"
    );

    // Another CA in the initdata: the KBS's certificate is not trusted.
    let other = root.join("other-ca");
    std::fs::create_dir_all(&other).unwrap();
    cloister_e2e::kbs_server::make_certs(&other);
    let other_ca = std::fs::read_to_string(other.join("ca.pem")).unwrap();
    let e = boot_and_run(sim_config(root, None, doc_for(&other_ca)), &kbs.cfg, None)
        .expect_err("a KBS certificate from another CA must not be trusted");
    assert!(
        e.contains(&format!(
            "attestation to the KBS at https://localhost:{port}"
        )),
        "{e}"
    );
    assert!(
        e.to_lowercase().contains("certificate"),
        "the refusal names the certificate: {e}"
    );
}
