//! KBS configuration (TOML). Every field has a working default, so
//! `cloister kbs serve` runs with no file at all.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The KBS configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory: store, token signing key.
    pub data_dir: PathBuf,
    /// Serve plain HTTP (tests on loopback only).
    pub insecure_http: bool,
    /// TLS certificate chain (PEM) for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Accept evidence from a simulated root of trust (the sim backend, the
    /// test attester): the verifier appraises it (never better than
    /// "warning", marked `ear.cloister.simulated`) instead of refusing it,
    /// and the default resource policy releases to it. Off by default;
    /// `cloister kbs serve --allow-simulated`. (`allow_sim` is the old name.)
    #[serde(alias = "allow_sim")]
    pub allow_simulated: bool,
    /// Accept Trustee's `tee: "sample"` dev evidence (never released by the
    /// default resource policy).
    pub insecure_sample: bool,
    /// Session lifetime in seconds.
    pub session_ttl_secs: u64,
    /// Maximum number of sessions held.
    pub max_sessions: usize,
    /// Attestation token lifetime in seconds.
    pub token_lifetime_secs: i64,
    /// Maximum request body in bytes.
    pub max_body_bytes: usize,
    /// Admin public keys (PEM files). None configured: admin API denies all
    /// unless `<data_dir>/admin.pub.pem` exists.
    pub admin_public_keys: Vec<PathBuf>,
    /// Initial CCA trust anchors (file), used until the admin API sets them.
    pub trust_anchors: Option<PathBuf>,
    /// Initial reference values (file), used until the admin API sets them.
    pub reference_values: Option<PathBuf>,
    /// Collateral directory for the SNP and TDX verifiers: VCEK/VLEK/ASK
    /// certificates (`*.der`, `*.pem`) for raw SNP reports, and Intel
    /// `QuoteCollateralV3` JSON (`*.json`) for TDX quotes.
    pub collateral_dir: Option<PathBuf>,
    /// The audience (`aud`) admin tokens must name: this KBS.
    pub admin_audience: String,
    /// The `iss` of the attestation tokens this KBS issues.
    pub token_issuer: String,
    /// Serve the admin API on this address only (and not on `listen`).
    /// None: the admin API shares `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `/auth` and `/attest` requests per second per client address (0: no
    /// limit).
    pub rate_limit_per_sec: u32,
    /// Burst allowed above the per-client rate.
    pub rate_limit_burst: u32,
    /// Requests handled at once (all clients); more are refused with 503.
    pub max_in_flight: usize,
    /// Seconds a request (body included) may take before it is answered 503.
    pub request_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("kbs-data"),
            insecure_http: false,
            tls_cert: None,
            tls_key: None,
            allow_simulated: false,
            insecure_sample: false,
            session_ttl_secs: 300,
            max_sessions: 10_000,
            token_lifetime_secs: 300,
            max_body_bytes: 1 << 20,
            admin_public_keys: Vec::new(),
            trust_anchors: None,
            reference_values: None,
            collateral_dir: None,
            admin_audience: crate::admin::DEFAULT_AUDIENCE.to_string(),
            token_issuer: "cloister-kbs".to_string(),
            admin_listen: None,
            rate_limit_per_sec: 50,
            rate_limit_burst: 100,
            max_in_flight: 1024,
            request_timeout_secs: 30,
        }
    }
}

/// Config file errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Invalid TOML or unknown field.
    #[error("config {path}: {source}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: toml::de::Error,
    },
}

impl Config {
    /// Load from a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}
