//! End to end with the sim backend: a real guest (TCG here) asks the host's
//! software RMM for a CCA token through its agent; `cloister verify --tee sim`
//! accepts it with the sim trust anchor and the reference values `cloister
//! measure --tee sim` predicted; one flipped byte of the initramfs changes the
//! RIM, and the evidence then fails against those reference values.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::Path;
use std::process::{Command, Output};

use cloister_e2e::{assets, boot_lock, cloister_bin};
use cloister_tee::evidence::{cca_claims, realm_claim_bytes};
use cloister_tee::TeeKind;

fn cloister(config_dir: &Path, args: &[&str]) -> Output {
    Command::new(cloister_bin())
        .args(args)
        .env("CLOISTER_CONFIG_DIR", config_dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running cloister")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
    let rv_text = ok(
        &cloister(&cfg, &["measure", "--tee", "sim"]),
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
                &["evidence", "--tee", "sim", "--report-data", &rd, "-o", &ev],
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
            "--nonce",
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
    // explicitly, so the verdict is affirming (exit 0), marked simulated.
    let out = verify(&rd, &p("rv.json"), &["--allow-simulated"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "not accepted:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("\"affirming\"") && stdout.contains("simulated"),
        "expected an affirming, simulated verdict:\n{stdout}\n{stderr}"
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
                "--initrd",
                &p("initramfs.tampered"),
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
