//! `cloister attest`: run the RCAR flow against a KBS from the host, with
//! the sim attester (a software RMM signing with this host's sim platform
//! key) or the test attester (published Trustee test keys), and print the
//! resource. For testing KBS setups.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
#[cfg(feature = "testing")]
use cloister_kbs::testing::TestCcaAttester;
use cloister_kbs_client::client::cca_evidence_json;
use cloister_kbs_client::kbs_types::{InitData, Tee};
use cloister_kbs_client::{Attester, AttesterError, KbsClient, ResourcePath};
use cloister_measure::cca::{HashAlgo, RealmMeasurement};
use cloister_tee::host::sim::{SimPlatform, SimRmm};
use cloister_tee::host::HostOptions;

/// Arguments of `cloister attest`.
#[derive(Debug, clap::Args)]
pub struct AttestArgs {
    /// KBS base URL.
    #[arg(long, value_name = "URL")]
    kbs: String,
    /// Who signs the evidence: `sim` (this host's sim platform; register
    /// its trust anchor from `cloister sim trust-anchor` with the KBS) or,
    /// in builds with the `testing` feature, `test` (published Trustee test
    /// keys). Not `--tee`: both make sim-format CCA evidence, and `--tee`
    /// names a TEE everywhere else.
    #[arg(long, value_enum, default_value = "sim")]
    attester: AttesterKind,
    /// Resource to fetch, REPO/TYPE/TAG.
    #[arg(long, value_name = "REPO/TYPE/TAG")]
    resource: ResourcePath,
    /// Initdata TOML sent with the attestation; its digest becomes the RPV.
    #[arg(long, value_name = "FILE")]
    initdata: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for HTTPS.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Write the resource here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Allow a plain http:// KBS URL (refused by default).
    #[arg(long)]
    allow_http: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AttesterKind {
    Sim,
    #[cfg(feature = "testing")]
    Test,
}

/// The sim backend's RMM as a KBS-client attester.
#[derive(Debug)]
struct SimAttester(Mutex<SimRmm>);

impl Attester for SimAttester {
    fn tee(&self) -> Tee {
        Tee::Cca
    }
    fn evidence(&self, report_data: &[u8; 64]) -> Result<serde_json::Value, AttesterError> {
        let rmm = self
            .0
            .lock()
            .map_err(|_| AttesterError("sim RMM lock poisoned".into()))?;
        let token = rmm
            .token(*report_data)
            .map_err(|e| AttesterError(e.to_string()))?;
        Ok(cca_evidence_json(&token))
    }
}

/// Runs `cloister attest`.
pub fn run(a: AttestArgs) -> anyhow::Result<()> {
    let init = match &a.initdata {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let mut rpv = [0u8; 64];
    if let Some(text) = &init {
        let d = cloister_kbs::server::init_data_digest(&InitData {
            format: "toml".into(),
            body: text.clone(),
        })
        .map_err(|e| anyhow::anyhow!("initdata: {e}"))?;
        rpv[..d.len().min(64)].copy_from_slice(&d[..d.len().min(64)]);
    }
    let mut http = reqwest::Client::builder();
    if let Some(p) = &a.cacert {
        let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let http = http.build()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let secret = match a.attester {
        AttesterKind::Sim => {
            let opts = HostOptions::from_env();
            let platform = SimPlatform::load_or_create(&opts.config_dir)?;
            let rmm = SimRmm::new(platform, RealmMeasurement::zero(HashAlgo::Sha256), rpv);
            let mut client = KbsClient::with_http(http, &a.kbs, SimAttester(Mutex::new(rmm)));
            client.allow_http(a.allow_http);
            rt.block_on(fetch(client, init, &a.resource))?
        }
        #[cfg(feature = "testing")]
        AttesterKind::Test => {
            let mut t = TestCcaAttester::new()?;
            t.rpv = rpv;
            let mut client = KbsClient::with_http(http, &a.kbs, t);
            client.allow_http(a.allow_http);
            rt.block_on(fetch(client, init, &a.resource))?
        }
    };
    match &a.output {
        Some(p) => {
            std::fs::write(p, &secret).with_context(|| format!("writing {}", p.display()))?
        }
        None => std::io::stdout().write_all(&secret)?,
    }
    Ok(())
}

async fn fetch<A: Attester>(
    mut client: KbsClient<A>,
    init: Option<String>,
    resource: &ResourcePath,
) -> anyhow::Result<Vec<u8>> {
    if let Some(text) = init {
        client.set_init_data(text);
    }
    Ok(client.get_resource(resource).await?)
}
