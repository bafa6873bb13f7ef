//! End to end with the sim backend: a real guest (TCG here) asks the host's
//! software RMM for a CCA token through its agent; `cloister verify --tee sim`
//! accepts it with the sim trust anchor and the reference values `cloister
//! measure --tee sim` predicted; one flipped byte of the initramfs changes the
//! RIM, and the evidence then fails against those reference values.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::process::Command;

use cloister_e2e::{assets, boot_lock, cloister_bin};
use cloister_tee::evidence::{cca_claims, realm_claim_bytes};
use cloister_tee::TeeKind;

use cloister_e2e::{cloister_with_config as cloister, stdout_of_success as ok};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn sim_guest_evidence_verifies_against_measured_reference_values() {
    let assets = assets();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    let p = |n: &str| dir.path().join(n).display().to_string();

    let ta = p("sim-ta.json");
    ok(
        &cloister(&cfg, &["sim", "trust-anchor", "-o", &ta]),
        "sim trust-anchor",
    );
    // A TEE guest answers GetEvidence only after CreateSandbox, and signs
    // host-chosen report_data only when its measured initdata sets
    // allow_host_evidence (the default policy honours it too). The
    // reference values carry the document's digest.
    let allow = p("initdata-allow.toml");
    std::fs::write(
        &allow,
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cloister.toml\" = \"allow_host_evidence = true\\n\"\n",
    )
    .unwrap();
    let rv_text = ok(
        &cloister(&cfg, &["measure", "--tee", "sim", "--initdata", &allow]),
        "measure --tee sim",
    );
    std::fs::write(p("rv.json"), &rv_text).unwrap();

    let report_data: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let rd = hex(&report_data);
    let ev = p("evidence.cbor");
    {
        let _lock = boot_lock();
        ok(
            &cloister(
                &cfg,
                &[
                    "evidence",
                    "--tee",
                    "sim",
                    "--initdata",
                    &allow,
                    "--report-data",
                    &rd,
                    "-o",
                    &ev,
                ],
            ),
            "evidence --tee sim",
        );
    }
    let token = std::fs::read(&ev).unwrap();

    // The token carries our report_data, and measure predicted its RIM.
    let challenge = realm_claim_bytes(TeeKind::Sim, &token, cca_claims::CHALLENGE).unwrap();
    assert_eq!(challenge, report_data);
    let rim = realm_claim_bytes(TeeKind::Sim, &token, cca_claims::RIM).unwrap();
    assert!(
        rv_text.contains(&format!("\"initial-measurement\": \"{}\"", hex(&rim))),
        "measure did not predict RIM {}:\n{rv_text}",
        hex(&rim)
    );

    let verify = |nonce: &str, rv: &str, extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--tee",
            "sim",
            "--evidence",
            &ev,
            "--report-data",
            nonce,
            "--trust-anchors",
            &ta,
            "--reference-values",
            rv,
        ];
        args.extend_from_slice(extra);
        cloister(&cfg, &args)
    };

    // Accepted: every check passes and simulated evidence is allowed
    // explicitly. Simulated evidence is never rated as hardware, so the
    // verdict is warning (exit 1) with no failure, marked simulated.
    let out = verify(&rd, &p("rv.json"), &["--allow-simulated"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "not appraised:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("\"warning\"") && stdout.contains("simulated"),
        "expected a warning, simulated verdict:\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("initial-measurement"), "{stderr}");
    assert!(!stderr.contains("contraindicated"), "{stderr}");

    // Without --allow-simulated the verifier says why it refuses.
    let out = verify(&rd, &p("rv.json"), &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("simulated"));

    // A wrong nonce is refused, naming the challenge.
    let mut other = report_data.clone();
    other[0] ^= 1;
    let out = verify(&hex(&other), &p("rv.json"), &["--allow-simulated"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"affirming\""));

    // One flipped byte of the initramfs: a different RIM, and the evidence
    // fails against the reference values measured from it.
    let mut initrd = std::fs::read(&assets.initramfs).unwrap();
    let at = initrd.len() / 2;
    initrd[at] ^= 0x01;
    std::fs::write(p("initramfs.tampered"), &initrd).unwrap();
    let kernel = assets.kernel.display().to_string();
    let tampered_rv = ok(
        &cloister(
            &cfg,
            &[
                "measure",
                "--tee",
                "sim",
                "--kernel",
                &kernel,
                "--initramfs",
                &p("initramfs.tampered"),
                "--initdata",
                &allow,
            ],
        ),
        "measure --tee sim (tampered)",
    );
    assert!(!tampered_rv.contains(&hex(&rim)), "the RIM did not change");
    std::fs::write(p("rv-tampered.json"), &tampered_rv).unwrap();
    let out = verify(&rd, &p("rv-tampered.json"), &["--allow-simulated"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("initial-measurement") || stderr.contains("initial measurement"),
        "the failure must name the RIM: {stderr}"
    );
}

/// Initdata end to end: the sim RMM puts its digest in the RPV, and the guest
/// agent accepts the document at CreateSandbox only if it matches — not a
/// different document, and not none when the launch carried one.
#[test]
fn sim_guest_agent_checks_initdata_against_the_rpv() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cloister.toml\" = \"agent_policy = 'allow-all'\\n\"\n";
    let other = b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cloister.toml\" = \"agent_policy = 'confidential-default'\\n\"\n";
    let runtime_dir = dir.path().join("run");
    let backend = cloister_e2e::sim_backend(&dir.path().join("config"));
    let config = cloister_e2e::sim_sandbox_config(&runtime_dir, good.to_vec(), "initdata-test");
    let _lock = boot_lock();
    let rt = cloister_e2e::runtime();
    rt.block_on(async {
        let (sb, client) = cloister_e2e::boot(config, backend.as_ref()).await;
        // Another document than the launch measured: refused, naming the RPV.
        let e = client
            .create_sandbox(sb.id(), Some(other))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("initdata refused") && e.contains("RPV"), "{e}");
        // Withholding it: the RPV is not zero, so refused as well.
        let e = client
            .create_sandbox(sb.id(), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("initdata refused") && e.contains("RPV"), "{e}");
        // The document the launch carried: accepted.
        client
            .create_sandbox(sb.id(), sb.initdata())
            .await
            .expect("the launched initdata is accepted");
        sb.shutdown().await;
    });
    assert_eq!(std::fs::read_dir(&runtime_dir).unwrap().count(), 0);
}

/// A bad initdata document is refused before any VM starts, naming the
/// file. (Running with initdata in a sim realm: tests/tests/guest_image.rs.)
#[test]
fn run_refuses_a_bad_initdata_document_before_booting() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = \"9.9\"\nalgorithm = \"md5\"\n").unwrap();
    let out = Command::new(cloister_bin())
        .args(["run", "--tee", "sim", "--image"])
        .arg(format!("127.0.0.1:1/app@sha256:{}", "ab".repeat(32)))
        .arg("--initdata")
        .arg(&bad)
        .args(["--", "true"])
        .env("CLOISTER_CONFIG_DIR", dir.path().join("config"))
        .env("CLOISTER_RUNTIME_DIR", dir.path().join("run"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running cloister");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("initdata") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("run").exists()
            || std::fs::read_dir(dir.path().join("run")).unwrap().count() == 0
    );
}
