//! SEV-SNP and TDX evidence through the KBS: published vectors posted as a
//! Trustee client shapes them reach the SNP and TDX verifiers (not "unknown
//! TEE") and are refused with 401 and a reason naming the report_data
//! binding, because a recorded report cannot carry this session's nonce.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cloister_kbs::{Config, Kbs};
use cloister_kbs_client::kbs_types::Tee;
use cloister_kbs_client::{Attester, AttesterError, KbsClient, ResourcePath};
use serde_json::{json, Value};

const TD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

/// Hands out fixed (recorded) evidence whatever the report data.
struct Recorded {
    tee: Tee,
    evidence: Value,
}

impl Attester for Recorded {
    fn tee(&self) -> Tee {
        self.tee
    }
    fn evidence(&self, _report_data: &[u8; 64]) -> Result<Value, AttesterError> {
        Ok(self.evidence.clone())
    }
}

async fn start(dir: &Path, collateral: Option<PathBuf>) -> (String, Arc<Kbs>) {
    let kbs = Kbs::open(Config {
        data_dir: dir.to_owned(),
        insecure_http: true,
        collateral_dir: collateral,
        ..Config::default()
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let k = kbs.clone();
    tokio::spawn(async move {
        let _ = k.serve_http(listener).await;
    });
    (url, kbs)
}

async fn refusal(url: &str, attester: Recorded) -> String {
    let mut c = KbsClient::new(url, attester).unwrap();
    c.allow_http(true);
    let path: ResourcePath = "default/key/1".parse().unwrap();
    let err = c.get_resource(&path).await.unwrap_err();
    eprintln!("refused: {err}");
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(c.token().is_none(), "a token was issued: {err}");
    err.to_string()
}

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snp_evidence_reaches_the_snp_verifier_and_fails_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    // The KBS refuses a data dir that others can read.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (url, _kbs) = start(dir.path(), None).await;
    let text = std::fs::read_to_string(format!("{TD}/trustee-as-e2e-snp-evidence.json")).unwrap();
    let evidence: Value = serde_json::from_str(&text).unwrap();
    let err = refusal(
        &url,
        Recorded {
            tee: Tee::Snp,
            evidence,
        },
    )
    .await;
    assert!(err.contains("evidence failed appraisal"), "{err}");
    // The report's recorded report_data (7e7320…) is not this session's
    // binding: the refusal names the claim, not the values compared.
    assert!(err.contains("report_data"), "{err}");
    assert!(!err.contains("7e7320889600c7ac"), "{err}");
    // The SNP verifier checked the signature chain: it is not among the failures.
    assert!(!err.contains("snp report signature"), "{err}");
    assert!(!err.contains("snp endorsement chain"), "{err}");
    let m = metrics(&url).await;
    assert!(
        m.contains(r#"tee="snp",outcome="refused""#),
        "no refused SNP attestation in the metrics:\n{m}"
    );

    // A report with a flipped byte no longer verifies: the verifier says so.
    let mut evidence: Value = serde_json::from_str(&text).unwrap();
    let m = &mut evidence["attestation_report"]["measurement"][0];
    *m = json!((m.as_u64().unwrap() ^ 1));
    let err = refusal(
        &url,
        Recorded {
            tee: Tee::Snp,
            evidence,
        },
    )
    .await;
    assert!(err.contains("snp report signature"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tdx_quote_reaches_the_tdx_verifier_and_fails_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    // The KBS refuses a data dir that others can read.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (url, _kbs) = start(dir.path(), Some(format!("{TD}/tdx-collateral").into())).await;
    let quote = std::fs::read(format!("{TD}/dcap-qvl-tdx_quote")).unwrap();
    let err = refusal(
        &url,
        Recorded {
            tee: Tee::Tdx,
            evidence: json!({"quote": STANDARD.encode(&quote), "cc_eventlog": null}),
        },
    )
    .await;
    assert!(err.contains("evidence failed appraisal"), "{err}");
    assert!(err.contains("report_data"), "{err}");
    // The TDX verifier ran: with this collateral (its window ended in 2025)
    // it also reports the collateral; the quote's signature is not blamed.
    assert!(err.contains("tdx collateral"), "{err}");
    assert!(!err.contains("tdx quote signature"), "{err}");
    let m = metrics(&url).await;
    assert!(
        m.contains(r#"tee="tdx",outcome="refused""#),
        "no refused TDX attestation in the metrics:\n{m}"
    );

    // Not base64: a 400 naming the expected shape, not a verifier crash.
    let err = {
        let mut c = KbsClient::new(
            &url,
            Recorded {
                tee: Tee::Tdx,
                evidence: json!({"quote": "*not base64*"}),
            },
        )
        .unwrap();
        c.allow_http(true);
        c.attest().await.unwrap_err()
    };
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("quote is not base64"), "{err}");
}
