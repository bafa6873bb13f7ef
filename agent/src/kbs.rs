//! The agent attests itself: it runs the KBS client's RCAR flow with its
//! own TEE's evidence, to the KBS that the measured initdata names, and
//! keeps the token and every released resource in guest memory for the
//! sandbox's life. The TEE key is made here (by the client) and never
//! leaves; nothing the host sends reaches report_data.
//!
//! [`TeeAttester`] adapts the guest's attester (configfs-tsm, or the sim
//! channel) to the client's; [`KbsResources`] is the image library's
//! [`ResourceProvider`], fetching each resource once per sandbox.

use std::collections::HashMap;
use std::sync::Arc;

use cloister_guest_config::{GuestConfig, Scheme};
use cloister_image::resources::{ResourceError, ResourceProvider};
use cloister_kbs_client::client::cca_evidence_json;
use cloister_kbs_client::kbs_types::Tee;
use cloister_kbs_client::{Attester as KbsAttester, AttesterError, KbsClient, ResourcePath};
use cloister_tee::{Attester, TeeKind};

/// The guest's attester, as the KBS client wants it.
#[derive(Debug, Clone)]
pub struct TeeAttester {
    inner: Arc<dyn Attester>,
    tee: Tee,
}

impl TeeAttester {
    /// Adapts `inner`; `None` for a guest without a TEE.
    pub fn new(inner: Arc<dyn Attester>) -> Option<Self> {
        kbs_tee(inner.tee()).map(|tee| Self { inner, tee })
    }
}

/// The KBS protocol's name for a guest TEE (sim evidence is a CCA token).
pub fn kbs_tee(tee: TeeKind) -> Option<Tee> {
    match tee {
        TeeKind::None => None,
        TeeKind::Sim | TeeKind::Cca => Some(Tee::Cca),
        TeeKind::Snp => Some(Tee::Snp),
        TeeKind::Tdx => Some(Tee::Tdx),
    }
}

/// The `primary_evidence` JSON a Trustee client sends for `tee`, from the
/// raw evidence the guest attester produced.
pub fn evidence_json(tee: TeeKind, raw: &[u8]) -> Result<serde_json::Value, AttesterError> {
    use base64::Engine as _;
    match tee {
        TeeKind::Sim | TeeKind::Cca => Ok(cca_evidence_json(raw)),
        TeeKind::Tdx => Ok(serde_json::json!({
            "quote": base64::engine::general_purpose::STANDARD.encode(raw),
            "cc_eventlog": null,
        })),
        // Trustee's SNP shape: the report's fields as JSON, plus the
        // certificates. The attester gives the bare report (configfs-tsm
        // outblob or /dev/sev-guest), not the host's certificate table, so
        // `cert_chain` is null and the KBS takes the VCEK from its collateral.
        TeeKind::Snp => {
            use cloister_tee::snp_evidence::SnpEvidence;
            let ev = SnpEvidence::from_raw(raw, None)
                .map_err(|e| AttesterError(format!("SNP evidence for the KBS: {e}")))?;
            serde_json::to_value(ev)
                .map_err(|e| AttesterError(format!("SNP evidence for the KBS: {e}")))
        }
        TeeKind::None => Err(AttesterError(
            "a guest without a TEE has no evidence".into(),
        )),
    }
}

impl KbsAttester for TeeAttester {
    fn tee(&self) -> Tee {
        self.tee
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<serde_json::Value, AttesterError> {
        let tee = self.inner.tee();
        let raw = self
            .inner
            .evidence(report_data)
            .map_err(|e| AttesterError(format!("{tee} evidence: {}", chain(&e))))?;
        evidence_json(tee, &raw)
    }
}

use crate::service::error_chain as chain;

/// Why the agent cannot reach its KBS.
#[derive(Debug, thiserror::Error)]
pub enum KbsSetupError {
    /// The initdata names no KBS.
    #[error("the measured initdata names no KBS (aa.toml [token_configs.kbs] url): nothing can be fetched")]
    NoKbs,
    /// A plain-HTTP KBS without the opt-in.
    #[error("the KBS {0} is plain HTTP and the measured initdata does not set cloister.toml insecure_http = true")]
    PlainHttp(String),
    /// The guest has no TEE.
    #[error("a guest without a TEE cannot attest to a KBS")]
    NoTee,
    /// The CA certificate does not load.
    #[error("the KBS CA certificate in initdata does not load")]
    Cert(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    Http(#[source] reqwest::Error),
    /// The endpoints initdata names cannot be forwarded.
    #[error("the endpoints initdata names")]
    Network(#[source] cloister_guest_config::ConfigError),
}

/// KBS resources for one sandbox, each fetched once and kept in memory.
pub struct KbsResources<A> {
    inner: tokio::sync::Mutex<Inner<A>>,
}

struct Inner<A> {
    client: KbsClient<A>,
    cache: HashMap<ResourcePath, Vec<u8>>,
    fetches: usize,
}

impl<A> std::fmt::Debug for KbsResources<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbsResources").finish_non_exhaustive()
    }
}

/// How long one KBS request may take.
const KBS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl KbsResources<TeeAttester> {
    /// The sandbox's KBS client, from the measured settings and the exact
    /// initdata text (sent with the attestation so the KBS can check its
    /// digest against the evidence).
    pub fn for_guest(
        config: &GuestConfig,
        initdata: Option<String>,
        attester: Arc<dyn Attester>,
    ) -> Result<Self, KbsSetupError> {
        let attester = TeeAttester::new(attester).ok_or(KbsSetupError::NoTee)?;
        Self::new(config, initdata, attester)
    }
}

impl<A: KbsAttester> KbsResources<A> {
    /// A client for the KBS `config` names, attesting with `attester`. The
    /// KBS URL and its CA come only from `config`: HTTPS, trusting only the
    /// named CA when there is one; plain HTTP only with insecure_http.
    pub fn new(
        config: &GuestConfig,
        initdata: Option<String>,
        attester: A,
    ) -> Result<Self, KbsSetupError> {
        let kbs = config.kbs.as_ref().ok_or(KbsSetupError::NoKbs)?;
        let insecure = config.cloister.insecure_http;
        if kbs.url.scheme == Scheme::Http && !insecure {
            return Err(KbsSetupError::PlainHttp(kbs.url.to_string()));
        }
        let mut http = reqwest::Client::builder()
            .https_only(!insecure)
            .timeout(KBS_TIMEOUT)
            .no_proxy();
        for (host, addr) in config.guest_hosts().map_err(KbsSetupError::Network)? {
            http = http.resolve(&host, addr);
        }
        if let Some(pem) = &kbs.cert {
            let cert =
                reqwest::Certificate::from_pem(pem.as_bytes()).map_err(KbsSetupError::Cert)?;
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert);
        }
        let http = http.build().map_err(KbsSetupError::Http)?;
        let mut client = KbsClient::with_http(http, kbs.url.as_str(), attester);
        client.allow_http(insecure);
        if let Some(text) = initdata {
            client.set_init_data(text);
        }
        Ok(Self {
            inner: tokio::sync::Mutex::new(Inner {
                client,
                cache: HashMap::new(),
                fetches: 0,
            }),
        })
    }

    /// How many resources have been fetched from the KBS (not the cache).
    #[cfg(test)]
    pub async fn fetches(&self) -> usize {
        self.inner.lock().await.fetches
    }

    /// Runs the attestation now (CreateSandbox does, so a refusal shows
    /// before any image is pulled).
    pub async fn attest(&self) -> Result<(), cloister_kbs_client::ClientError> {
        self.inner.lock().await.client.attest().await.map(|_| ())
    }
}

#[async_trait::async_trait]
impl<A: KbsAttester> ResourceProvider for KbsResources<A> {
    async fn resource(&self, path: &ResourcePath) -> Result<Vec<u8>, ResourceError> {
        // The lock is held across the fetch, so concurrent pulls asking for
        // one key make one request.
        let mut inner = self.inner.lock().await;
        if let Some(bytes) = inner.cache.get(path) {
            return Ok(bytes.clone());
        }
        let bytes = inner
            .client
            .get_resource(path)
            .await
            .map_err(|e| ResourceError {
                path: path.to_kbs_uri(),
                reason: chain(&e),
            })?;
        inner.fetches += 1;
        inner.cache.insert(path.clone(), bytes.clone());
        Ok(bytes)
    }
}

/// The KBS client of a guest: attesting with its own TEE.
pub type GuestKbs = KbsResources<TeeAttester>;

/// What CreateSandbox does with accepted (digest-checked) initdata: keep
/// its settings, open the network path to the endpoints it names, and, if
/// it names a KBS, attest now so that a refusal shows before anything runs.
pub async fn on_create_sandbox(
    settings: &crate::settings::Settings,
    attester: Arc<dyn Attester>,
    config: &GuestConfig,
    initdata: Option<&cloister_tee::initdata::Initdata>,
) -> Result<(), String> {
    crate::net::setup(config)
        .await
        .map_err(|e| format!("network: {}", chain(&e)))?;
    let Some(kbs) = &config.kbs else {
        return Ok(());
    };
    if settings.kbs().is_some() {
        return Ok(());
    }
    let text = initdata.map(|d| String::from_utf8_lossy(d.raw()).into_owned());
    let client = KbsResources::for_guest(config, text, attester)
        .map_err(|e| format!("KBS {}: {}", kbs.url, chain(&e)))?;
    client.attest().await.map_err(|e| {
        format!(
            "attestation to the KBS at {} failed: {}",
            kbs.url,
            chain(&e)
        )
    })?;
    crate::log!("attested to the KBS at {}", kbs.url);
    settings.set_kbs(Arc::new(client));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cloister_guest_config::KbsConfig;

    fn config(url: &str, insecure: bool) -> GuestConfig {
        let mut c = GuestConfig {
            kbs: Some(KbsConfig {
                url: url.parse().unwrap(),
                cert: None,
            }),
            ..Default::default()
        };
        c.cloister.insecure_http = insecure;
        c
    }

    #[derive(Debug)]
    struct NoEvidence;
    impl KbsAttester for NoEvidence {
        fn tee(&self) -> Tee {
            Tee::Cca
        }
        fn evidence(&self, _: &[u8; 64]) -> Result<serde_json::Value, AttesterError> {
            Err(AttesterError("none".into()))
        }
    }

    #[test]
    fn plain_http_needs_the_initdata_opt_in() {
        let e =
            KbsResources::new(&config("http://127.0.0.1:1", false), None, NoEvidence).unwrap_err();
        assert!(matches!(e, KbsSetupError::PlainHttp(_)), "{e}");
        KbsResources::new(&config("http://127.0.0.1:1", true), None, NoEvidence).unwrap();
        let e = KbsResources::new(&GuestConfig::default(), None, NoEvidence).unwrap_err();
        assert!(matches!(e, KbsSetupError::NoKbs), "{e}");
    }

    #[test]
    fn evidence_shapes_per_tee() {
        assert_eq!(
            evidence_json(TeeKind::Sim, &[1, 2]).unwrap(),
            serde_json::json!({"token": [1, 2]})
        );
        assert_eq!(
            evidence_json(TeeKind::Tdx, &[0xff]).unwrap(),
            serde_json::json!({"quote": "/w==", "cc_eventlog": null})
        );
        let e = evidence_json(TeeKind::Snp, &[0]).unwrap_err();
        assert!(e.0.contains("1 bytes, expected 1184"), "{}", e.0);
        assert_eq!(kbs_tee(TeeKind::None), None);
        assert_eq!(kbs_tee(TeeKind::Sim), Some(Tee::Cca));
    }

    /// SNP: Trustee's `{"attestation_report", "cert_chain"}` from a real raw
    /// report (Trustee's test-report.bin, attestation/testdata/snp/SOURCES.md).
    /// That the verifier rebuilds the same bytes from it is tested where
    /// both sides are (cloister-attestation's snp_vectors).
    #[test]
    fn snp_evidence_is_trustees_report_json() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../attestation/testdata/snp/trustee-test-report.bin"
        ))
        .unwrap();
        let v = evidence_json(TeeKind::Snp, &raw).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["attestation_report", "cert_chain"]);
        assert_eq!(v["cert_chain"], serde_json::Value::Null);
        let r = &v["attestation_report"];
        assert_eq!(r["version"], 2);
        assert_eq!(r["guest_svn"], 4);
        assert_eq!(r["policy"], 0x3001f);
        let measurement = r["measurement"].as_array().unwrap();
        assert_eq!(measurement.len(), 48);
        assert_eq!(measurement[..4], [0xa1, 0xf3, 0x93, 0x04]);
        assert_eq!(r["report_data"].as_array().unwrap().len(), 64);
        assert_eq!(
            r["reported_tcb"],
            serde_json::json!({"fmc": null, "bootloader": 3, "tee": 0, "snp": 8, "microcode": 115})
        );
        assert_eq!(
            r["cpuid_fam_id"],
            serde_json::Value::Null,
            "v2 has no CPUID"
        );
        assert!(r["current"]["major"].is_u64());
        assert_eq!(r["signature"]["r"].as_array().unwrap().len(), 72);
        assert_eq!(r["signature"]["s"].as_array().unwrap().len(), 72);
    }

    /// A failed fetch is not cached and names the resource.
    #[tokio::test(flavor = "current_thread")]
    async fn unreachable_kbs_fails_naming_the_resource() {
        // Port 9 on loopback: nothing listens (connection refused).
        let r = KbsResources::new(&config("http://127.0.0.1:9", true), None, NoEvidence).unwrap();
        let p: ResourcePath = "default/key/1".parse().unwrap();
        let e = r.resource(&p).await.unwrap_err();
        assert!(e.to_string().contains("kbs:///default/key/1"), "{e}");
        assert_eq!(r.fetches().await, 0);
    }
}
