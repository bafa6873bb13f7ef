//! The KBS HTTP service: RCAR endpoints, resource release, admin API,
//! metrics and health.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use cloister_attestation::appraisal::Status;
use cloister_attestation::cca::TrustAnchorStore;
use cloister_attestation::ear::{EarIssuer, Submod};
use cloister_attestation::verifiers::{SnpEvidenceVerifier, TdxEvidenceVerifier};
use cloister_attestation::{
    Appraisal, Failure, ReferenceValues, ReportData, TeeKind, Verifier, VerifierConfig,
};
use cloister_kbs_client::jwe::{p256_from_xy, ALG_ECDH_ES_A256KW, ALG_RSA_OAEP_256};
use cloister_kbs_client::{report_data, ResourcePath};
use cloister_policy::Policy;
use kbs_types::{Attestation, Challenge, InitData, Request, Tee, TeePubKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde_json::{json, Value};

use crate::config::Config;
use crate::limit::RateLimiter;
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::session::{SessionError, Sessions};
use crate::store::{FileStore, Namespace, Store, StoreError};
use crate::token::TokenKey;
use crate::{admin, jwe, DEFAULT_RESOURCE_POLICY, RESOURCE_POLICY_QUERY};

/// Cookie carrying the session id.
pub const SESSION_COOKIE: &str = "kbs-session-id";
const KEY_ATTESTATION_POLICY: &str = "attestation-policy";
const KEY_RESOURCE_POLICY: &str = "resource-policy";
const KEY_REFERENCE_VALUES: &str = "reference-values";
const KEY_TRUST_ANCHORS: &str = "trust-anchors";
const TEE_PUBKEY_POINTER: &str =
    "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey";

/// Failures starting or running the KBS (never per-request).
#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    /// Bad configuration.
    #[error("KBS configuration: {0}")]
    Config(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Filesystem or socket.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Clone)]
struct VerifierTexts {
    policy: Option<String>,
    anchors: Option<String>,
    refvals: Option<String>,
}

fn build_verifier(
    t: &VerifierTexts,
    collateral_dir: Option<&Path>,
    allow_simulated: bool,
) -> Result<Verifier, String> {
    let cca_trust_anchors = match &t.anchors {
        Some(a) => TrustAnchorStore::parse(a).map_err(|e| format!("trust anchors: {e}"))?,
        None => TrustAnchorStore::default(),
    };
    let reference_values = match &t.refvals {
        Some(r) => ReferenceValues::parse(r).map_err(|e| format!("reference values: {e}"))?,
        None => ReferenceValues::default(),
    };
    let verifier = Verifier::new(VerifierConfig {
        cca_trust_anchors,
        reference_values,
        // Off unless `--allow-simulated`: simulated evidence is then
        // contraindicated and gets no token at all.
        allow_simulated,
        collateral_dir: collateral_dir.map(Path::to_owned),
        policy: t.policy.clone(),
    })
    .map_err(|e| format!("attestation policy: {e}"))?;
    let snp = SnpEvidenceVerifier::new(collateral_dir).map_err(|e| format!("SNP verifier: {e}"))?;
    let tdx = TdxEvidenceVerifier::new(collateral_dir).map_err(|e| format!("TDX verifier: {e}"))?;
    Ok(verifier
        .with_verifier(TeeKind::Snp, Arc::new(snp))
        .with_verifier(TeeKind::Tdx, Arc::new(tdx)))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Digest of Trustee/CoCo initdata sent in an Attestation message (format
/// `toml`): the one implementation, [`cloister_tee::initdata::Initdata`]
/// (version 0.1.0, algorithm sha256/sha384/sha512 with no default, the hash
/// over the exact text).
pub fn init_data_digest(init: &InitData) -> Result<Vec<u8>, String> {
    if init.format != "toml" {
        return Err(format!(
            "initdata format {:?}, expected \"toml\"",
            init.format
        ));
    }
    cloister_tee::initdata::InitdataDigest::of(init.body.as_bytes())
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| e.to_string())
}

/// A running KBS's state.
pub struct Kbs {
    cfg: Config,
    store: Arc<dyn Store>,
    sessions: Sessions,
    issuer: EarIssuer,
    token_key: TokenKey,
    verifier: RwLock<Arc<Verifier>>,
    texts: Mutex<VerifierTexts>,
    resource_policy: RwLock<Arc<Policy>>,
    admin_keys: Vec<p256::ecdsa::VerifyingKey>,
    admin_jtis: admin::JtiCache,
    limiter: RateLimiter,
    in_flight: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
}

/// The client address of a request (set by the guard middleware from the
/// connection; None when the service runs without connection info).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<std::net::IpAddr>);

impl std::fmt::Debug for Kbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kbs")
            .field("listen", &self.cfg.listen)
            .finish_non_exhaustive()
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> KbsError {
    move |source| KbsError::Io { what, source }
}

fn load_or_create_signing_key(path: &Path) -> Result<p256::ecdsa::SigningKey, KbsError> {
    match std::fs::read_to_string(path) {
        Ok(pem) => p256::ecdsa::SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| KbsError::Config(format!("token signing key {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| KbsError::Config(format!("encoding signing key: {e}")))?;
            write_private(path, pem.as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), KbsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(format!("creating {}", tmp.display())))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(io_err(format!("writing {}", path.display())))
}

fn text_of(store: &dyn Store, key: &str, file: Option<&Path>) -> Result<Option<String>, KbsError> {
    if let Some(v) = store.get(Namespace::Config, key)? {
        return String::from_utf8(v)
            .map(Some)
            .map_err(|_| KbsError::Config(format!("stored {key} is not UTF-8")));
    }
    match file {
        Some(p) => std::fs::read_to_string(p)
            .map(Some)
            .map_err(io_err(format!("reading {key} file {}", p.display()))),
        None => Ok(None),
    }
}

impl Kbs {
    /// Open a KBS with the embedded file store in `cfg.data_dir`.
    pub fn open(cfg: Config) -> Result<Arc<Self>, KbsError> {
        private_data_dir(&cfg.data_dir)?;
        let store = Arc::new(FileStore::open(&cfg.data_dir.join("store"))?);
        Self::open_with_store(cfg, store)
    }

    /// Open a KBS over any [`Store`] (the signing key still lives in the data dir).
    pub fn open_with_store(cfg: Config, store: Arc<dyn Store>) -> Result<Arc<Self>, KbsError> {
        private_data_dir(&cfg.data_dir)?;
        let key = load_or_create_signing_key(&cfg.data_dir.join("token-signing-key.pem"))?;
        let mut issuer = EarIssuer::new(key.clone());
        issuer.lifetime_secs = cfg.token_lifetime_secs;
        issuer.issuer = Some(cfg.token_issuer.clone());
        let token_key = TokenKey::new(&key, &issuer.public_jwk())
            .map_err(|e| KbsError::Config(e.to_string()))?;
        let texts = VerifierTexts {
            policy: text_of(store.as_ref(), KEY_ATTESTATION_POLICY, None)?,
            anchors: text_of(
                store.as_ref(),
                KEY_TRUST_ANCHORS,
                cfg.trust_anchors.as_deref(),
            )?,
            refvals: text_of(
                store.as_ref(),
                KEY_REFERENCE_VALUES,
                cfg.reference_values.as_deref(),
            )?,
        };
        let verifier = build_verifier(&texts, cfg.collateral_dir.as_deref(), cfg.allow_simulated)
            .map_err(KbsError::Config)?;
        let rp_text = text_of(store.as_ref(), KEY_RESOURCE_POLICY, None)?
            .unwrap_or_else(|| DEFAULT_RESOURCE_POLICY.to_string());
        let resource_policy = Policy::new("resource-policy.rego", &rp_text)
            .map_err(|e| KbsError::Config(e.to_string()))?;
        let mut admin_files = cfg.admin_public_keys.clone();
        let default_admin = cfg.data_dir.join("admin.pub.pem");
        if admin_files.is_empty() && default_admin.exists() {
            admin_files.push(default_admin);
        }
        let mut admin_keys = Vec::new();
        for f in &admin_files {
            let pem = std::fs::read_to_string(f)
                .map_err(io_err(format!("reading admin key {}", f.display())))?;
            admin_keys.push(
                admin::verifying_key_from_pem(&pem)
                    .map_err(|e| KbsError::Config(format!("{}: {e}", f.display())))?,
            );
        }
        let sessions = Sessions::new(cfg.session_ttl_secs, cfg.max_sessions);
        let limiter = RateLimiter::new(cfg.rate_limit_per_sec, cfg.rate_limit_burst, 65_536);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1)));
        Ok(Arc::new(Self {
            cfg,
            store,
            sessions,
            issuer,
            token_key,
            verifier: RwLock::new(Arc::new(verifier)),
            texts: Mutex::new(texts),
            resource_policy: RwLock::new(Arc::new(resource_policy)),
            admin_keys,
            admin_jtis: admin::JtiCache::new(100_000),
            limiter,
            in_flight,
            metrics: Metrics::default(),
        }))
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Number of sessions currently held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The public key attestation tokens are signed with (JWK).
    pub fn token_public_jwk(&self) -> Value {
        self.issuer.public_jwk()
    }

    fn verifier(&self) -> Arc<Verifier> {
        self.verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn resource_policy(&self) -> Arc<Policy> {
        self.resource_policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The axum router of the service: the RCAR endpoints, resources and
    /// health, plus the admin API unless `admin_listen` puts it on a
    /// listener of its own ([`admin_router`](Self::admin_router)).
    pub fn router(self: &Arc<Self>) -> Router {
        let resource = if self.cfg.admin_listen.is_none() {
            get(get_resource)
                .post(set_resource)
                .put(set_resource)
                .delete(delete_resource)
        } else {
            get(get_resource)
        };
        let mut r = Router::new()
            .route("/kbs/v0/auth", post(auth))
            .route("/kbs/v0/attest", post(attest))
            .route("/kbs/v0/resource/{repo}/{kind}/{tag}", resource)
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/kbs/v0/health", get(health));
        if self.cfg.admin_listen.is_none() {
            r = Self::admin_routes(r);
        }
        self.finish_router(r)
    }

    /// The admin API alone (for `admin_listen`).
    pub fn admin_router(self: &Arc<Self>) -> Router {
        let r = Router::new()
            .route(
                "/kbs/v0/resource/{repo}/{kind}/{tag}",
                post(set_resource).put(set_resource).delete(delete_resource),
            )
            .route("/health", get(health));
        self.finish_router(Self::admin_routes(r))
    }

    fn admin_routes(r: Router<Arc<Self>>) -> Router<Arc<Self>> {
        r.route("/kbs/v0/attestation-policy", post(set_attestation_policy))
            .route("/kbs/v0/resource-policy", post(set_resource_policy))
            .route("/kbs/v0/reference-value", post(set_reference_values))
            .route("/kbs/v0/trust-anchors", post(set_trust_anchors))
    }

    fn finish_router(self: &Arc<Self>, r: Router<Arc<Self>>) -> Router {
        r.fallback(|| async { Problem::not_found("NotFound", "no such endpoint") })
            .layer(middleware::from_fn_with_state(self.clone(), track))
            .layer(DefaultBodyLimit::max(self.cfg.max_body_bytes))
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Serve plain HTTP on an already bound listener (tests, `--insecure-http`).
    pub async fn serve_http(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> Result<(), KbsError> {
        let app = self.router();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .map_err(io_err("serving HTTP".into()))
    }

    /// Serve the admin API alone over plain HTTP on a bound listener.
    pub async fn serve_admin_http(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> Result<(), KbsError> {
        let app = self.admin_router();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .map_err(io_err("serving the admin API over HTTP".into()))
    }

    /// Serve according to the configuration: HTTPS with the configured
    /// certificate, or HTTP when `insecure_http` is set.
    pub async fn serve(self: Arc<Self>) -> Result<(), KbsError> {
        let addr: SocketAddr = self.cfg.listen;
        if self.cfg.insecure_http {
            if !addr.ip().is_loopback() {
                tracing::warn!("serving plain HTTP on non-loopback address {addr}");
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io_err(format!("binding {addr}")))?;
            let bound = listener
                .local_addr()
                .map_err(io_err(format!("address bound for {addr}")))?;
            tracing::info!("KBS listening on http://{bound}");
            if let Some(admin_addr) = self.cfg.admin_listen {
                let admin = tokio::net::TcpListener::bind(admin_addr)
                    .await
                    .map_err(io_err(format!("binding admin listener {admin_addr}")))?;
                let bound = admin
                    .local_addr()
                    .map_err(io_err(format!("address bound for {admin_addr}")))?;
                tracing::info!("KBS admin API listening on http://{bound}");
                let k = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = k.serve_admin_http(admin).await {
                        tracing::error!("admin listener: {e}");
                    }
                });
            }
            return self.serve_http(listener).await;
        }
        let (Some(cert), Some(key)) = (&self.cfg.tls_cert, &self.cfg.tls_key) else {
            return Err(KbsError::Config(
                "HTTPS needs tls_cert and tls_key in the config; use --insecure-http for plain HTTP on loopback".into(),
            ));
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .map_err(io_err(format!(
                "loading TLS cert {} / key {}",
                cert.display(),
                key.display()
            )))?;
        let listener =
            std::net::TcpListener::bind(addr).map_err(io_err(format!("binding {addr}")))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err(format!("configuring the socket of {addr}")))?;
        let bound = listener
            .local_addr()
            .map_err(io_err(format!("address bound for {addr}")))?;
        tracing::info!("KBS listening on https://{bound}");
        if let Some(admin_addr) = self.cfg.admin_listen {
            let admin = std::net::TcpListener::bind(admin_addr)
                .map_err(io_err(format!("binding admin listener {admin_addr}")))?;
            admin
                .set_nonblocking(true)
                .map_err(io_err(format!("configuring the socket of {admin_addr}")))?;
            let bound = admin
                .local_addr()
                .map_err(io_err(format!("address bound for {admin_addr}")))?;
            tracing::info!("KBS admin API listening on https://{bound}");
            let app = self.admin_router();
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Err(e) = axum_server::from_tcp_rustls(admin, tls)
                    .serve(app.into_make_service_with_connect_info::<SocketAddr>())
                    .await
                {
                    tracing::error!("admin listener: {e}");
                }
            });
        }
        let app = self.router();
        axum_server::from_tcp_rustls(listener, tls)
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .map_err(io_err("serving HTTPS".into()))
    }
}

/// Refuse a data dir others can read or enter; create a missing one 0700.
fn private_data_dir(dir: &Path) -> Result<(), KbsError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KbsError::Config(format!(
                    "data dir {} is mode {mode:04o}: other users can read it; expected 0700 (chmod 700 {})",
                    dir.display(),
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(format!("creating data dir {}", dir.display()))),
        Err(e) => Err(io_err(format!("data dir {}", dir.display()))(e)),
    }
}

/// Every request: a bound on requests in flight, a per-client rate limit
/// on the RCAR endpoints, and a time limit (body included).
async fn guard(State(k): State<Arc<Kbs>>, mut req: axum::extract::Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    req.extensions_mut().insert(Peer(peer));
    let Ok(_permit) = k.in_flight.clone().try_acquire_owned() else {
        return Problem::unavailable("Busy", "too many requests in flight; retry").into_response();
    };
    let path = req.uri().path();
    if path == "/kbs/v0/auth" || path == "/kbs/v0/attest" {
        if let Some(ip) = peer {
            if !k.limiter.allow(ip, Instant::now()) {
                return Problem::too_many(format!("client {ip} exceeded its request rate"))
                    .into_response();
            }
        }
    }
    let limit = Duration::from_secs(k.cfg.request_timeout_secs.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => Problem::unavailable(
            "Timeout",
            format!("request not completed within {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

async fn track(State(k): State<Arc<Kbs>>, req: axum::extract::Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    k.metrics
        .request(&route, resp.status().as_u16(), start.elapsed());
    resp
}

fn body_problem(r: BytesRejection) -> Problem {
    let status = r.status();
    let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "BodyTooLarge"
    } else {
        "BadBody"
    };
    Problem::new(status, kind, r.body_text())
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("MalformedRequest", format!("{what} JSON: {e}")))
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn check_version(v: &str) -> Result<(), Problem> {
    let parts: Vec<u64> = v.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [0, minor, _] if *minor <= 4 => Ok(()),
        _ => Err(Problem::bad_request(
            "ProtocolVersion",
            format!("protocol version {v:?} is not supported: expected 0.1.0 ..= 0.4.x"),
        )),
    }
}

async fn auth(
    State(k): State<Arc<Kbs>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(body_problem)?;
    let req: Request = parse_json("Request", &body)?;
    check_version(&req.version)?;
    match req.tee {
        Tee::Cca | Tee::Snp | Tee::Tdx => {}
        Tee::Sample if k.cfg.insecure_sample => {}
        Tee::Sample => {
            return Err(Problem::unauthorized(
                "SampleEvidenceDisabled",
                "tee \"sample\" is accepted only by a KBS started with insecure_sample",
            ))
        }
        other => {
            return Err(Problem::bad_request(
                "UnsupportedTee",
                format!("tee {other} is not supported: expected cca, snp or tdx"),
            ))
        }
    }
    let (value, nonce) = k.sessions.open(req.tee, now_secs());
    let cookie = session_set_cookie(&k.cfg, &value);
    let challenge = Challenge {
        nonce,
        extra_params: Value::String(String::new()),
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(challenge)).into_response())
}

/// The `Set-Cookie` value: HttpOnly and SameSite=Strict always, Secure
/// when served over HTTPS.
fn session_set_cookie(cfg: &Config, value: &str) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/kbs/v0; Max-Age={}; HttpOnly; SameSite=Strict{}",
        cfg.session_ttl_secs,
        if cfg.insecure_http { "" } else { "; Secure" }
    )
}

fn session_problem(e: SessionError) -> Problem {
    match e {
        SessionError::Spent => Problem::unauthorized("NonceReused", e.to_string()),
        SessionError::Expired { .. } => Problem::unauthorized("ExpiredSession", e.to_string()),
        SessionError::NotAttested => Problem::unauthorized("NotAttested", e.to_string()),
        SessionError::Busy => Problem::unavailable("Busy", e.to_string()),
        SessionError::Unknown => Problem::unauthorized("InvalidSession", e.to_string()),
    }
}

/// The verifier's TEE for a protocol TEE: exhaustive, so a new protocol
/// TEE is refused by name instead of being verified as another kind.
/// (`Sample` has its own insecure path and is not a verifier TEE.)
pub fn verifier_tee(tee: Tee) -> Option<TeeKind> {
    match tee {
        Tee::Cca => Some(TeeKind::Cca),
        Tee::Snp => Some(TeeKind::Snp),
        Tee::Tdx => Some(TeeKind::Tdx),
        Tee::AzSnpVtpm
        | Tee::AzTdxVtpm
        | Tee::Nvidia
        | Tee::Sgx
        | Tee::Csv
        | Tee::Se
        | Tee::HygonDcu
        | Tee::NvidiaDpu
        | Tee::Tpm
        | Tee::Sample
        | Tee::SampleDevice => None,
    }
}

fn check_tee_pubkey(key: &TeePubKey) -> Result<(), Problem> {
    let bad = |m: String| Problem::bad_request("UnsupportedTeeKey", m);
    match key {
        TeePubKey::EC { crv, alg, x, y } => {
            if crv != "P-256" || alg != ALG_ECDH_ES_A256KW {
                return Err(bad(format!(
                    "EC tee-pubkey {crv}/{alg}: expected P-256/{ALG_ECDH_ES_A256KW}"
                )));
            }
            p256_from_xy(x, y)
                .map(|_| ())
                .map_err(|e| bad(e.to_string()))
        }
        TeePubKey::RSA { alg, .. } if alg == ALG_RSA_OAEP_256 => Ok(()),
        TeePubKey::RSA { alg, .. } => Err(bad(format!(
            "RSA tee-pubkey alg {alg}: expected {ALG_RSA_OAEP_256}"
        ))),
        TeePubKey::AKP { alg, .. } => Err(bad(format!("AKP tee-pubkey ({alg}) is not supported"))),
    }
}

/// The failing claims, by name only: a refusal tells the client which
/// claim failed but never the reference value it was compared with.
fn failures_text(f: &[Failure]) -> String {
    if f.is_empty() {
        return "no individual failure recorded".into();
    }
    let mut names: Vec<&str> = f.iter().map(|x| x.claim.as_str()).collect();
    names.dedup();
    format!("failing claims: {}", names.join(", "))
}

fn sample_appraisal(evidence: &Value, expected: &[u8; 64]) -> Result<Appraisal, Problem> {
    let rd = evidence
        .get("report_data")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            Problem::bad_request("EvidenceMalformed", "sample evidence lacks report_data")
        })?;
    let rd = STANDARD
        .decode(rd)
        .or_else(|_| URL_SAFE_NO_PAD.decode(rd))
        .map_err(|_| {
            Problem::bad_request("EvidenceMalformed", "sample report_data is not base64")
        })?;
    let mut padded = rd.clone();
    padded.resize(64, 0);
    let mut failures = Vec::new();
    if rd.len() > 64 || padded.as_slice() != expected.as_slice() {
        failures.push(Failure {
            claim: "report_data".into(),
            expected: hex::encode(expected),
            found: hex::encode(&rd),
        });
    }
    let ok = failures.is_empty();
    let mut tv = std::collections::BTreeMap::new();
    tv.insert("instance-identity".to_string(), if ok { 2 } else { 96 });
    tv.insert("hardware".to_string(), 32);
    Ok(Appraisal {
        tee: TeeKind::Sim,
        status: if ok {
            Status::Warning
        } else {
            Status::Contraindicated
        },
        trust_vector: tv,
        simulated: true,
        claims: json!({"sample": evidence}),
        report_data: hex::encode(&rd),
        init_data: None,
        failures,
        checks: Vec::new(),
        policy_id: "sample".into(),
        reference_value_sets: Vec::new(),
    })
}

/// A refused `/attest`: the problem the client gets, and the outcome the
/// metrics count it under (`malformed`, `refused` or `error`).
#[derive(Debug)]
pub struct Refusal {
    /// What the client is answered.
    pub problem: Problem,
    /// The metrics outcome.
    pub outcome: &'static str,
}

impl Refusal {
    fn malformed(problem: Problem) -> Self {
        Self {
            problem,
            outcome: "malformed",
        }
    }

    fn refused(problem: Problem) -> Self {
        Self {
            problem,
            outcome: "refused",
        }
    }

    fn error(problem: Problem) -> Self {
        Self {
            problem,
            outcome: "error",
        }
    }
}

/// The decision on one `/attest` body for the session's `challenge` at
/// `now`, with no I/O and no session change: the body is parsed, bound to
/// the challenge's nonce and the client's TEE key, appraised, and on
/// success the signed attestation token comes back. The handler around it
/// only takes the challenge and stores the token.
pub fn appraise_attestation(
    k: &Kbs,
    challenge: &crate::session::Challenge,
    body: &[u8],
    now: i64,
) -> Result<String, Refusal> {
    let (nonce, tee) = (&challenge.nonce, challenge.tee);
    let att: Attestation = parse_json("Attestation", body).map_err(Refusal::malformed)?;
    if att.runtime_data.nonce != *nonce {
        return Err(Refusal::refused(Problem::unauthorized(
            "NonceMismatch",
            "runtime-data nonce does not match this session's challenge",
        )));
    }
    check_tee_pubkey(&att.runtime_data.tee_pubkey).map_err(Refusal::malformed)?;
    let additional = &att.tee_evidence.additional_evidence;
    let rd = report_data(nonce, &att.runtime_data.tee_pubkey, additional)
        .map_err(|e| Refusal::malformed(Problem::bad_request("MalformedRequest", e.to_string())))?;
    let init_digest = match &att.init_data {
        Some(init) => Some(
            init_data_digest(init)
                .map_err(|e| Refusal::malformed(Problem::bad_request("BadInitData", e)))?,
        ),
        None => None,
    };
    let appraisal = match tee {
        Tee::Sample => {
            sample_appraisal(&att.tee_evidence.primary_evidence, &rd).map_err(Refusal::malformed)?
        }
        other => {
            let vtee = verifier_tee(other).ok_or_else(|| {
                Refusal::malformed(Problem::bad_request(
                    "UnsupportedTee",
                    format!("tee {other} is not supported: expected cca, snp or tdx"),
                ))
            })?;
            let evidence = evidence_bytes(other, &att.tee_evidence.primary_evidence)
                .map_err(|e| Refusal::malformed(Problem::bad_request("EvidenceMalformed", e)))?;
            k.verifier()
                .appraise(
                    vtee,
                    &evidence,
                    Some(ReportData(rd)),
                    init_digest.as_deref(),
                    now,
                )
                .map_err(|e| {
                    Refusal::malformed(Problem::bad_request(
                        "EvidenceMalformed",
                        format!("{tee} evidence: {e}"),
                    ))
                })?
        }
    };
    if matches!(appraisal.status, Status::Contraindicated | Status::None) {
        return Err(Refusal::refused(Problem::unauthorized(
            "AttestationFailed",
            format!(
                "evidence failed appraisal ({}): {}",
                appraisal.status.as_str(),
                failures_text(&appraisal.failures)
            ),
        )));
    }
    let mut runtime = json!({
        "nonce": nonce,
        "tee-pubkey": att.runtime_data.tee_pubkey,
    });
    if tee == Tee::Sample {
        runtime["insecure-sample"] = json!(true);
    }
    let init_claims = att
        .init_data
        .as_ref()
        .map(|i| json!({"format": i.format, "digest": init_digest.as_deref().map(hex::encode)}));
    let submod = Submod {
        name: "cpu0".into(),
        appraisal: &appraisal,
        runtime_data_claims: Some(runtime),
        init_data_claims: init_claims,
    };
    let mut claims = k
        .issuer
        .claims_json(&[submod], now)
        .map_err(|e| Refusal::error(Problem::internal(format!("building EAR: {e}"))))?;
    if tee == Tee::Sample {
        // Trustee's policies recognise insecure evidence by this key.
        claims["submods"]["cpu0"][cloister_attestation::ear::ANNOTATED_EVIDENCE]["sample"] =
            att.tee_evidence.primary_evidence.clone();
    }
    k.token_key
        .sign(&claims)
        .map_err(|e| Refusal::error(Problem::internal(format!("signing EAR: {e}"))))
}

async fn attest(
    State(k): State<Arc<Kbs>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let id = session_cookie(&headers).ok_or_else(|| {
        Problem::unauthorized(
            "MissingCookie",
            format!("no {SESSION_COOKIE} cookie: call /auth first"),
        )
    })?;
    let challenge = k
        .sessions
        .take_nonce(&id, now_secs())
        .map_err(session_problem)?;
    let tee_name = challenge.tee.to_string();
    let decided = body
        .map_err(|r| Refusal::malformed(body_problem(r)))
        .and_then(|body| appraise_attestation(&k, &challenge, &body, now_secs()));
    let token = match decided {
        Ok(token) => token,
        Err(refusal) => {
            k.metrics.attestation(&tee_name, refusal.outcome);
            return Err(refusal.problem);
        }
    };
    // The session keeps the signed token (a few KiB of text), not the
    // parsed claims tree, which is several times larger in memory.
    let value = k
        .sessions
        .set_attested(&challenge, Arc::from(token.as_str()), now_secs());
    k.metrics.attestation(&tee_name, "ok");
    // The protocol's sequence re-sends the session cookie with the result.
    Ok((
        [(header::SET_COOKIE, session_set_cookie(&k.cfg, &value))],
        Json(json!({ "token": token })),
    )
        .into_response())
}

/// The bytes the verifier takes for `tee`, from the evidence JSON a Trustee
/// client sends. CCA `{"token": [numbers]}` is unwrapped here instead of
/// being serialised back to JSON for the verifier to parse again; SNP
/// `{"attestation_report", "cert_chain"}`, TDX `{"quote", "cc_eventlog"}` (the
/// TDX verifier replays the event log) and every other shape are passed on
/// as JSON text.
fn evidence_bytes(tee: Tee, evidence: &Value) -> Result<Vec<u8>, String> {
    if let (Tee::Cca, Some(Value::Array(a))) = (tee, evidence.get("token")) {
        return a
            .iter()
            .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| "CCA evidence JSON: token must be an array of bytes".to_string());
    }
    serde_json::to_vec(evidence).map_err(|e| e.to_string())
}

fn resource_path(
    p: Result<UrlPath<(String, String, String)>, PathRejection>,
) -> Result<ResourcePath, Problem> {
    let UrlPath((r, t, g)) =
        p.map_err(|e| Problem::bad_request("BadResourcePath", e.body_text()))?;
    ResourcePath::new(&r, &t, &g)
        .map_err(|e| Problem::bad_request("BadResourcePath", e.to_string()))
}

async fn get_resource(
    State(k): State<Arc<Kbs>>,
    headers: HeaderMap,
    path: Result<UrlPath<(String, String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    let path = resource_path(path)?;
    let claims = if let Some(token) = bearer(&headers) {
        k.token_key
            .verify(token, now_secs())
            .map_err(|e| Problem::unauthorized("InvalidToken", format!("attestation token: {e}")))?
    } else if let Some(id) = session_cookie(&headers) {
        let token = k.sessions.token(&id, now_secs()).map_err(session_problem)?;
        // Issued by us and held server-side: the signature is not re-checked.
        crate::token::claims_of_own_token(&token)
            .map_err(|e| Problem::internal(format!("session token: {e}")))?
    } else {
        return Err(Problem::unauthorized(
            "Unauthenticated",
            "no Bearer token and no attested kbs-session-id cookie",
        ));
    };
    let tee_key: TeePubKey = claims
        .pointer(TEE_PUBKEY_POINTER)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| {
            Problem::unauthorized("InvalidToken", "token carries no usable tee-pubkey")
        })?;
    let (input, data) = policy_input(&k.cfg, claims, &tee_key, &path);
    match k
        .resource_policy()
        .eval(RESOURCE_POLICY_QUERY, &input, Some(&data))
    {
        Ok(Value::Bool(true)) => {}
        Ok(_) | Err(cloister_policy::PolicyError::Undefined(_)) => {
            return Err(Problem::forbidden(
                "PolicyDenied",
                format!("resource policy denies {path} to this attestation"),
            ))
        }
        Err(e) => {
            return Err(Problem::forbidden(
                "PolicyDenied",
                format!("resource policy failed for {path}: {e}"),
            ))
        }
    }
    let secret = k
        .store
        .get(Namespace::Resource, &path.to_string())
        .map_err(|e| Problem::internal(e.to_string()))?
        .ok_or_else(|| Problem::not_found("ResourceNotFound", format!("no resource {path}")))?;
    let resp = jwe::encrypt(&tee_key, &secret)
        .map_err(|e| Problem::bad_request("UnsupportedTeeKey", e.to_string()))?;
    Ok(Json(resp).into_response())
}

/// The resource policy's input and data. The input is the EAR claims (our
/// policies read `submods.cpu0`) plus Trustee's backend-agnostic
/// `trust_context` (`attestation_summary.verification_result` is true only
/// for affirming, non-simulated, non-sample evidence); the data carries the
/// path as Trustee's earlier KBS did (`"resource-path": "REPO/TYPE/TAG"`),
/// Trustee's `plugin` and `query`, and our `allow-sim`. A Trustee resource
/// policy therefore runs unchanged.
pub fn policy_input(
    cfg: &Config,
    mut claims: Value,
    tee_key: &TeePubKey,
    path: &ResourcePath,
) -> (Value, Value) {
    let cpu0 = &claims["submods"]["cpu0"];
    let evidence = &cpu0[cloister_attestation::ear::ANNOTATED_EVIDENCE];
    let simulated = cpu0[cloister_attestation::ear::SIMULATED] == Value::Bool(true);
    let sample = evidence["runtime_data_claims"]["insecure-sample"] == Value::Bool(true);
    let affirming = cpu0["ear.status"] == "affirming";
    let tee_type: Vec<String> = evidence
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| ["cca", "snp", "tdx", "sim", "sample"].contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let summary = json!({
        "tee_type": tee_type,
        "policy_ids": [cpu0["ear.appraisal-policy-id"].clone()],
        "issuer": claims["iss"].clone(),
        "verification_result": affirming && !simulated && !sample,
        "claims": claims.clone(),
    });
    claims["trust_context"] = json!({
        "attestation_summary": summary,
        "tee_pubkey": tee_key,
        "custom_claims": {},
    });
    let data = json!({
        "resource-path": path.to_string(),
        "plugin": "resource",
        "query": {},
        "allow-sim": cfg.allow_simulated,
    });
    (claims, data)
}

fn require_admin(k: &Kbs, headers: &HeaderMap, peer: Peer) -> Result<(), Problem> {
    if k.cfg.insecure_http && !peer.0.is_some_and(|ip| ip.is_loopback()) {
        return Err(Problem::forbidden(
            "AdminOverPlainHttp",
            "the admin API over plain HTTP is served to loopback clients only",
        ));
    }
    if k.admin_keys.is_empty() {
        return Err(Problem::unauthorized(
            "AdminDisabled",
            "no admin public key is configured: admin API denies all writes",
        ));
    }
    let token = bearer(headers).ok_or_else(|| {
        Problem::unauthorized(
            "AdminUnauthorized",
            "admin write needs Authorization: Bearer <admin token>",
        )
    })?;
    let now = now_secs();
    let claims = admin::verify_token(token, &k.admin_keys, now, &k.cfg.admin_audience)
        .map_err(|e| Problem::unauthorized("AdminUnauthorized", e.to_string()))?;
    k.admin_jtis.check(&claims, now).map_err(|e| match e {
        admin::JtiError::Replayed => Problem::unauthorized("AdminUnauthorized", e.to_string()),
        admin::JtiError::Full => Problem::unavailable("Busy", e.to_string()),
    })
}

async fn set_resource(
    State(k): State<Arc<Kbs>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    path: Result<UrlPath<(String, String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    require_admin(&k, &headers, peer)?;
    let path = resource_path(path)?;
    let body = body.map_err(body_problem)?;
    k.store
        .put(Namespace::Resource, &path.to_string(), &body)
        .map_err(|e| Problem::internal(e.to_string()))?;
    tracing::info!("admin: set resource {path} ({} bytes)", body.len());
    Ok(StatusCode::OK.into_response())
}

async fn delete_resource(
    State(k): State<Arc<Kbs>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    path: Result<UrlPath<(String, String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    require_admin(&k, &headers, peer)?;
    let path = resource_path(path)?;
    if k.store
        .delete(Namespace::Resource, &path.to_string())
        .map_err(|e| Problem::internal(e.to_string()))?
    {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(Problem::not_found(
            "ResourceNotFound",
            format!("no resource {path}"),
        ))
    }
}

fn policy_text(body: &[u8]) -> Result<String, Problem> {
    let v: Value = parse_json("policy request", body)?;
    let b64 = v.get("policy").and_then(|p| p.as_str()).ok_or_else(|| {
        Problem::bad_request(
            "MalformedRequest",
            "expected {\"policy\": \"<base64 of Rego text>\"}",
        )
    })?;
    if let Some(t) = v.get("type").and_then(|t| t.as_str()) {
        if t != "rego" {
            return Err(Problem::bad_request(
                "BadPolicy",
                format!("policy type {t:?}, expected \"rego\""),
            ));
        }
    }
    let raw = URL_SAFE_NO_PAD
        .decode(b64)
        .or_else(|_| URL_SAFE.decode(b64))
        .or_else(|_| STANDARD.decode(b64))
        .map_err(|_| Problem::bad_request("BadPolicy", "policy is not base64"))?;
    String::from_utf8(raw).map_err(|_| Problem::bad_request("BadPolicy", "policy is not UTF-8"))
}

fn update_verifier(
    k: &Kbs,
    key: &str,
    text: String,
    set: impl FnOnce(&mut VerifierTexts, String),
) -> Result<Response, Problem> {
    let mut texts = k.texts.lock().unwrap_or_else(|e| e.into_inner());
    let mut candidate = texts.clone();
    set(&mut candidate, text.clone());
    let verifier = build_verifier(
        &candidate,
        k.cfg.collateral_dir.as_deref(),
        k.cfg.allow_simulated,
    )
    .map_err(|e| Problem::bad_request("BadConfig", e))?;
    k.store
        .put(Namespace::Config, key, text.as_bytes())
        .map_err(|e| Problem::internal(e.to_string()))?;
    *texts = candidate;
    *k.verifier.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(verifier);
    tracing::info!("admin: set {key}");
    Ok(StatusCode::OK.into_response())
}

async fn set_attestation_policy(
    State(k): State<Arc<Kbs>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    require_admin(&k, &headers, peer)?;
    let text = policy_text(&body.map_err(body_problem)?)?;
    update_verifier(&k, KEY_ATTESTATION_POLICY, text, |t, v| t.policy = Some(v))
}

async fn set_resource_policy(
    State(k): State<Arc<Kbs>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    require_admin(&k, &headers, peer)?;
    let text = policy_text(&body.map_err(body_problem)?)?;
    let policy = Policy::new("resource-policy.rego", &text)
        .map_err(|e| Problem::bad_request("BadPolicy", e.to_string()))?;
    k.store
        .put(Namespace::Config, KEY_RESOURCE_POLICY, text.as_bytes())
        .map_err(|e| Problem::internal(e.to_string()))?;
    *k.resource_policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    tracing::info!("admin: set resource policy");
    Ok(StatusCode::OK.into_response())
}

fn utf8_body(body: Result<Bytes, BytesRejection>) -> Result<String, Problem> {
    let body = body.map_err(body_problem)?;
    String::from_utf8(body.to_vec())
        .map_err(|_| Problem::bad_request("MalformedRequest", "body is not UTF-8"))
}

async fn set_reference_values(
    State(k): State<Arc<Kbs>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    require_admin(&k, &headers, peer)?;
    let text = utf8_body(body)?;
    update_verifier(&k, KEY_REFERENCE_VALUES, text, |t, v| t.refvals = Some(v))
}

async fn set_trust_anchors(
    State(k): State<Arc<Kbs>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    require_admin(&k, &headers, peer)?;
    let text = utf8_body(body)?;
    update_verifier(&k, KEY_TRUST_ANCHORS, text, |t, v| t.anchors = Some(v))
}

async fn metrics(State(k): State<Arc<Kbs>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        k.metrics.render(k.sessions.len()),
    )
        .into_response()
}

async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    mod attest_decisions {
        use super::*;
        use crate::testing::TestCcaAttester;
        use cloister_kbs_client::{Attester, TeeKey};
        use kbs_types::{CompositeEvidence, RuntimeData};

        /// A KBS trusting the test attester's simulated platform, and the
        /// challenge `/auth` would have given a CCA client.
        fn kbs(dir: &Path) -> (Arc<Kbs>, crate::session::Challenge) {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .unwrap();
            let anchors = dir.join("anchors.json");
            std::fs::write(&anchors, TestCcaAttester::trust_anchors(true)).unwrap();
            let k = Kbs::open(Config {
                data_dir: dir.to_owned(),
                allow_simulated: true,
                trust_anchors: Some(anchors),
                ..Config::default()
            })
            .unwrap();
            let (cookie, _) = k.sessions.open(Tee::Cca, now_secs());
            let challenge = k.sessions.take_nonce(&cookie, now_secs()).unwrap();
            (k, challenge)
        }

        /// The body a genuine client sends for `nonce`, with `edit` applied
        /// to it before the evidence is taken (so the evidence binds the
        /// edited runtime data).
        fn body(nonce: &str, edit: impl FnOnce(&mut Attestation)) -> Attestation {
            let key = TeeKey::generate();
            let mut att = Attestation {
                init_data: None,
                runtime_data: RuntimeData {
                    nonce: nonce.to_owned(),
                    tee_pubkey: key.public_jwk(),
                },
                tee_evidence: CompositeEvidence {
                    primary_evidence: Value::Null,
                    additional_evidence: String::new(),
                },
            };
            edit(&mut att);
            let rd = report_data(
                &att.runtime_data.nonce,
                &att.runtime_data.tee_pubkey,
                &att.tee_evidence.additional_evidence,
            )
            .unwrap();
            att.tee_evidence.primary_evidence =
                TestCcaAttester::new().unwrap().evidence(&rd).unwrap();
            att
        }

        fn decide(
            k: &Kbs,
            c: &crate::session::Challenge,
            att: &Attestation,
        ) -> Result<String, Refusal> {
            appraise_attestation(k, c, &serde_json::to_vec(att).unwrap(), now_secs())
        }

        fn refused_as(r: Result<String, Refusal>, kind: &str, outcome: &str, status: u16) {
            match r {
                Err(refusal) => {
                    assert_eq!(refusal.problem.kind, kind, "{:?}", refusal.problem);
                    assert_eq!(refusal.outcome, outcome, "{:?}", refusal.problem);
                    assert_eq!(
                        refusal.problem.status.as_u16(),
                        status,
                        "{:?}",
                        refusal.problem
                    );
                }
                Ok(_) => panic!("expected {kind}, got a token"),
            }
        }

        #[test]
        fn a_genuine_body_gets_a_token_naming_the_nonce() {
            let dir = tempfile::tempdir().unwrap();
            let (k, c) = kbs(dir.path());
            let token = decide(&k, &c, &body(&c.nonce, |_| {})).unwrap();
            let claims = k.token_key.verify(&token, now_secs()).unwrap();
            assert!(claims.to_string().contains(&c.nonce), "{claims}");
            assert!(
                claims["submods"]["cpu0"]["ear.status"].is_string(),
                "{claims}"
            );
        }

        #[test]
        fn a_body_that_is_not_an_attestation_is_malformed() {
            let dir = tempfile::tempdir().unwrap();
            let (k, c) = kbs(dir.path());
            refused_as(
                appraise_attestation(&k, &c, b"{\"tee-evidence\": 1}", now_secs()),
                "MalformedRequest",
                "malformed",
                400,
            );
        }

        #[test]
        fn another_sessions_nonce_is_refused() {
            let dir = tempfile::tempdir().unwrap();
            let (k, c) = kbs(dir.path());
            let other = body("bm90IHRoaXMgb25l", |_| {});
            refused_as(decide(&k, &c, &other), "NonceMismatch", "refused", 401);
        }

        #[test]
        fn a_tee_key_other_than_p256_is_malformed() {
            let dir = tempfile::tempdir().unwrap();
            let (k, c) = kbs(dir.path());
            let att = body(&c.nonce, |a| {
                a.runtime_data.tee_pubkey = TeePubKey::EC {
                    crv: "P-384".into(),
                    alg: ALG_ECDH_ES_A256KW.into(),
                    x: "AA".into(),
                    y: "AA".into(),
                }
            });
            refused_as(decide(&k, &c, &att), "UnsupportedTeeKey", "malformed", 400);
        }

        #[test]
        fn initdata_in_another_format_is_malformed() {
            let dir = tempfile::tempdir().unwrap();
            let (k, c) = kbs(dir.path());
            let att = body(&c.nonce, |a| {
                a.init_data = Some(InitData {
                    format: "json".into(),
                    body: "{}".into(),
                })
            });
            refused_as(decide(&k, &c, &att), "BadInitData", "malformed", 400);
        }

        #[test]
        fn a_tee_the_kbs_cannot_verify_is_refused_by_name() {
            let dir = tempfile::tempdir().unwrap();
            let (k, mut c) = kbs(dir.path());
            c.tee = Tee::Sgx;
            let r = decide(&k, &c, &body(&c.nonce, |_| {}));
            refused_as(r, "UnsupportedTee", "malformed", 400);
        }

        #[test]
        fn evidence_that_does_not_parse_is_malformed() {
            let dir = tempfile::tempdir().unwrap();
            let (k, c) = kbs(dir.path());
            let mut att = body(&c.nonce, |_| {});
            att.tee_evidence.primary_evidence = json!({"token": [1, 2, 3]});
            refused_as(decide(&k, &c, &att), "EvidenceMalformed", "malformed", 400);
        }

        #[test]
        fn evidence_bound_to_another_key_fails_appraisal() {
            let dir = tempfile::tempdir().unwrap();
            let (k, c) = kbs(dir.path());
            // Genuine evidence taken for one key, sent with another: the
            // binding in report_data no longer matches.
            let mut att = body(&c.nonce, |_| {});
            att.runtime_data.tee_pubkey = TeeKey::generate().public_jwk();
            refused_as(decide(&k, &c, &att), "AttestationFailed", "refused", 401);
        }

        #[test]
        fn initdata_the_evidence_does_not_carry_fails_appraisal() {
            let dir = tempfile::tempdir().unwrap();
            let (k, c) = kbs(dir.path());
            let att = body(&c.nonce, |a| {
                a.init_data = Some(InitData {
                    format: "toml".into(),
                    body: "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n".into(),
                })
            });
            refused_as(decide(&k, &c, &att), "AttestationFailed", "refused", 401);
        }
    }

    #[test]
    fn versions() {
        assert!(check_version("0.4.0").is_ok());
        assert!(check_version("0.1.0").is_ok());
        assert!(check_version("0.5.0").is_err());
        assert!(check_version("1.0.0").is_err());
        assert!(check_version("x").is_err());
    }

    #[test]
    fn initdata_digest_follows_algorithm() {
        let body = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n".to_string();
        let d = init_data_digest(&InitData {
            format: "toml".into(),
            body: body.clone(),
        })
        .unwrap();
        assert_eq!(
            d,
            <sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()).to_vec()
        );
        assert!(init_data_digest(&InitData {
            format: "json".into(),
            body
        })
        .is_err());
        // The KBS follows the one rule: no default algorithm, no other
        // version, no `sha-256` spelling.
        for bad in [
            "algorithm = \"md5\"\n",
            "version = \"0.1.0\"\n[data]\n",
            "version = \"0.2.0\"\nalgorithm = \"sha256\"\n[data]\n",
            "version = \"0.1.0\"\nalgorithm = \"sha-256\"\n[data]\n",
        ] {
            let err = init_data_digest(&InitData {
                format: "toml".into(),
                body: bad.to_string(),
            })
            .unwrap_err();
            assert!(err.contains("initdata"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn every_protocol_tee_maps_to_a_verifier_or_is_refused() {
        assert_eq!(verifier_tee(Tee::Cca), Some(TeeKind::Cca));
        assert_eq!(verifier_tee(Tee::Snp), Some(TeeKind::Snp));
        assert_eq!(verifier_tee(Tee::Tdx), Some(TeeKind::Tdx));
        // No fallback to TDX for TEEs we do not verify.
        for t in [Tee::Sgx, Tee::AzTdxVtpm, Tee::Csv, Tee::Tpm, Tee::Sample] {
            assert_eq!(verifier_tee(t), None, "{t}");
        }
    }

    #[test]
    fn session_cookie_is_secure_over_https_and_strict_always() {
        let https = Config::default();
        let c = session_set_cookie(&https, "v");
        assert!(
            c.ends_with("; Secure") && c.contains("SameSite=Strict"),
            "{c}"
        );
        let http = Config {
            insecure_http: true,
            ..Config::default()
        };
        let c = session_set_cookie(&http, "v");
        assert!(!c.contains("Secure"), "{c}");
        assert!(c.contains("HttpOnly; SameSite=Strict"), "{c}");
    }

    #[test]
    fn admin_over_plain_http_is_refused_off_loopback() {
        let dir = tempfile::tempdir().unwrap();
        // The KBS refuses a data dir that others can read.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let k = Kbs::open(Config {
            data_dir: dir.path().to_owned(),
            insecure_http: true,
            ..Config::default()
        })
        .unwrap();
        let h = HeaderMap::new();
        let off = Peer(Some("192.0.2.7".parse().unwrap()));
        let e = require_admin(&k, &h, off).unwrap_err();
        assert_eq!(e.kind, "AdminOverPlainHttp");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = require_admin(&k, &h, Peer(None)).unwrap_err();
        assert_eq!(e.kind, "AdminOverPlainHttp");
        // From loopback the token is what decides (none configured here).
        let e = require_admin(&k, &h, Peer(Some("127.0.0.1".parse().unwrap()))).unwrap_err();
        assert_eq!(e.kind, "AdminDisabled");
    }

    #[test]
    fn failures_text_names_claims_only() {
        let t = failures_text(&[Failure {
            claim: "realm initial-measurement".into(),
            expected: "4242".into(),
            found: "1111".into(),
        }]);
        assert_eq!(t, "failing claims: realm initial-measurement");
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; kbs-session-id=abc; c=d".parse().unwrap(),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
    }
}
