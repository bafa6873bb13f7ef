//! The RCAR flow over HTTP(S).

use std::fmt;
use std::str::FromStr;

use kbs_types::{
    Attestation, Challenge, CompositeEvidence, InitData, Request, Response, RuntimeData, Tee,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::binding::{report_data, BindingError};
use crate::jwe::{JweError, TeeKey};

/// The protocol version this client announces.
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// Why an attester could not produce evidence.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AttesterError(pub String);

/// Where evidence comes from: the caller's TEE (or a simulator).
///
/// `evidence` returns the `primary_evidence` JSON exactly as a Trustee client
/// sends it for that TEE (for CCA: `{"token": [bytes as numbers]}`; see
/// [`cca_evidence_json`]).
pub trait Attester: Send + Sync {
    /// The TEE kind announced in the Request.
    fn tee(&self) -> Tee;
    /// Evidence binding the given 64-byte report data.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Value, AttesterError>;
}

/// The CCA evidence shape Trustee clients send: the token bytes as a JSON
/// array of numbers.
pub fn cca_evidence_json(token: &[u8]) -> Value {
    serde_json::json!({ "token": token })
}

/// A resource address `<repository>/<type>/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    /// Repository name.
    pub repository: String,
    /// Resource type.
    pub kind: String,
    /// Tag.
    pub tag: String,
}

/// A malformed resource path.
#[derive(Debug, thiserror::Error)]
#[error(
    "bad resource path {0:?}: expected REPOSITORY/TYPE/TAG, each [A-Za-z0-9._-]+ and not . or .."
)]
pub struct BadResourcePath(pub String);

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl ResourcePath {
    /// Build from the three segments, validating each.
    pub fn new(repository: &str, kind: &str, tag: &str) -> Result<Self, BadResourcePath> {
        if [repository, kind, tag].iter().all(|s| valid_segment(s)) {
            Ok(Self {
                repository: repository.into(),
                kind: kind.into(),
                tag: tag.into(),
            })
        } else {
            Err(BadResourcePath(format!("{repository}/{kind}/{tag}")))
        }
    }
}

impl ResourcePath {
    /// Parses a KBS resource URI, `kbs:///REPOSITORY/TYPE/TAG` (CoCo's form;
    /// an authority such as `kbs://host/...` is accepted and ignored, since
    /// the KBS address comes from the sandbox's initdata, not the URI).
    pub fn from_kbs_uri(uri: &str) -> Result<Self, BadResourcePath> {
        let rest = uri
            .strip_prefix("kbs://")
            .ok_or_else(|| BadResourcePath(uri.into()))?;
        // The authority ends at the first '/'.
        let path = rest
            .find('/')
            .map(|i| &rest[i..])
            .ok_or_else(|| BadResourcePath(uri.into()))?;
        path.parse().map_err(|_| BadResourcePath(uri.into()))
    }

    /// The resource as a KBS URI, `kbs:///REPOSITORY/TYPE/TAG`.
    pub fn to_kbs_uri(&self) -> String {
        format!("kbs:///{self}")
    }
}

impl FromStr for ResourcePath {
    type Err = BadResourcePath;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            [r, k, t] => Self::new(r, k, t).map_err(|_| BadResourcePath(s.into())),
            _ => Err(BadResourcePath(s.into())),
        }
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.repository, self.kind, self.tag)
    }
}

/// Failures of the RCAR flow.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Transport failure.
    #[error("HTTP to KBS failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The KBS answered with an error status.
    #[error("KBS refused {step} with {status}: {detail}")]
    Refused {
        /// Which step (auth, attest, resource).
        step: &'static str,
        /// The HTTP status.
        status: u16,
        /// The RFC 7807 detail (or body text).
        detail: String,
    },
    /// The KBS answered with something that is not the protocol.
    #[error("KBS sent a malformed {step} response: {detail}")]
    Protocol {
        /// Which step.
        step: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The attester failed.
    #[error("attester: {0}")]
    Attester(#[from] AttesterError),
    /// Binding failed.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// The resource JWE did not open.
    #[error("resource JWE: {0}")]
    Jwe(#[from] JweError),
    /// The KBS URL is plain `http://` and the caller did not allow it.
    #[error(
        "KBS URL {url} is plain HTTP: expected https:// (plain HTTP must be allowed explicitly)"
    )]
    PlainHttp {
        /// The URL as given.
        url: String,
    },
}

impl ClientError {
    /// The HTTP status if the KBS refused.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A KBS client bound to one attester and one ephemeral key.
pub struct KbsClient<A> {
    http: reqwest::Client,
    base: String,
    attester: A,
    key: TeeKey,
    init_data: Option<InitData>,
    token: Option<String>,
    cookie: Option<String>,
    allow_http: bool,
}

impl<A> fmt::Debug for KbsClient<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KbsClient")
            .field("base", &self.base)
            .field("attested", &self.token.is_some())
            .finish()
    }
}

async fn refusal(step: &'static str, resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or(text);
    ClientError::Refused {
        step,
        status,
        detail,
    }
}

impl<A: Attester> KbsClient<A> {
    /// A client for the KBS at `url` (e.g. `http://127.0.0.1:8080`), with a
    /// fresh ephemeral key.
    pub fn new(url: &str, attester: A) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder().build()?;
        Ok(Self::with_http(http, url, attester))
    }

    /// As [`KbsClient::new`] with a caller-built HTTP client (custom roots,
    /// timeouts, connection sharing).
    pub fn with_http(http: reqwest::Client, url: &str, attester: A) -> Self {
        Self {
            http,
            base: format!("{}/kbs/v0", url.trim_end_matches('/')),
            attester,
            key: TeeKey::generate(),
            init_data: None,
            token: None,
            cookie: None,
            allow_http: false,
        }
    }

    /// Allow (or forbid again) a plain `http://` KBS URL. By default the
    /// client refuses one before sending anything ([`ClientError::PlainHttp`]):
    /// secrets still travel as JWE to the TEE key, but the challenge, the
    /// evidence and the token would be visible and the KBS unauthenticated.
    /// Call `allow_http(true)` only where configuration says so explicitly,
    /// e.g. a guest whose initdata permits plain HTTP, or tests on loopback.
    pub fn allow_http(&mut self, allow: bool) -> &mut Self {
        self.allow_http = allow;
        self
    }

    fn check_scheme(&self) -> Result<(), ClientError> {
        let lower = self.base.to_ascii_lowercase();
        if lower.starts_with("https://") || (self.allow_http && lower.starts_with("http://")) {
            return Ok(());
        }
        if lower.starts_with("http://") {
            return Err(ClientError::PlainHttp {
                url: self.base.trim_end_matches("/kbs/v0").to_owned(),
            });
        }
        Err(ClientError::Protocol {
            step: "auth",
            detail: format!(
                "KBS URL {} is neither https:// nor http://",
                self.base.trim_end_matches("/kbs/v0")
            ),
        })
    }

    /// Send this initdata (the TOML text) in the Attestation message.
    pub fn set_init_data(&mut self, toml_text: String) {
        self.init_data = Some(InitData {
            format: "toml".into(),
            body: toml_text,
        });
    }

    /// Use this TEE key instead of the generated one (drops any token,
    /// which is bound to the old key).
    pub fn set_tee_key(&mut self, key: TeeKey) {
        self.key = key;
        self.token = None;
        self.cookie = None;
    }

    /// The ephemeral TEE key.
    pub fn tee_key(&self) -> &TeeKey {
        &self.key
    }

    /// The current attestation token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Run auth + attest; keep and return the token.
    pub async fn attest(&mut self) -> Result<String, ClientError> {
        self.check_scheme()?;
        let request = Request {
            version: PROTOCOL_VERSION.into(),
            tee: self.attester.tee(),
            extra_params: Value::String(String::new()),
        };
        let resp = self
            .http
            .post(format!("{}/auth", self.base))
            .json(&request)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(refusal("auth", resp).await);
        }
        let cookie = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|kv| kv.trim_start().starts_with("kbs-session-id="))
            .map(|kv| kv.trim().to_owned())
            .ok_or_else(|| ClientError::Protocol {
                step: "auth",
                detail: "no kbs-session-id cookie".into(),
            })?;
        let challenge: Challenge = resp.json().await.map_err(|e| ClientError::Protocol {
            step: "auth",
            detail: e.to_string(),
        })?;
        let tee_pubkey = self.key.public_jwk();
        let additional = String::new();
        let rd = report_data(&challenge.nonce, &tee_pubkey, &additional)?;
        let evidence = self.attester.evidence(&rd)?;
        let attestation = Attestation {
            init_data: self.init_data.clone(),
            runtime_data: RuntimeData {
                nonce: challenge.nonce,
                tee_pubkey,
            },
            tee_evidence: CompositeEvidence {
                primary_evidence: evidence,
                additional_evidence: additional,
            },
        };
        let resp = self
            .http
            .post(format!("{}/attest", self.base))
            .header(reqwest::header::COOKIE, &cookie)
            .json(&attestation)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(refusal("attest", resp).await);
        }
        let body: Value = resp.json().await.map_err(|e| ClientError::Protocol {
            step: "attest",
            detail: e.to_string(),
        })?;
        let token = body
            .get("token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| ClientError::Protocol {
                step: "attest",
                detail: "no token in response".into(),
            })?
            .to_owned();
        self.cookie = Some(cookie);
        self.token = Some(token.clone());
        Ok(token)
    }

    async fn fetch(&self, path: &ResourcePath) -> Result<reqwest::Response, ClientError> {
        self.check_scheme()?;
        let mut req = self.http.get(format!("{}/resource/{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        Ok(req.send().await?)
    }

    /// Fetch and decrypt a resource, attesting first if needed and once more
    /// if the KBS answers 401 (expired token or session).
    pub async fn get_resource(&mut self, path: &ResourcePath) -> Result<Vec<u8>, ClientError> {
        if self.token.is_none() {
            self.attest().await?;
        }
        let mut resp = self.fetch(path).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            tracing::debug!("KBS answered 401; re-attesting");
            self.attest().await?;
            resp = self.fetch(path).await?;
        }
        if !resp.status().is_success() {
            return Err(refusal("resource", resp).await);
        }
        let jwe: Response = resp.json().await.map_err(|e| ClientError::Protocol {
            step: "resource",
            detail: e.to_string(),
        })?;
        Ok(self.key.decrypt(&jwe)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths() {
        let p: ResourcePath = "default/key/1".parse().unwrap();
        assert_eq!(p.to_string(), "default/key/1");
        for bad in ["a/b", "a/b/c/d", "a/../c", "a//c", "a/b/c d", "../b/c"] {
            assert!(bad.parse::<ResourcePath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn kbs_uris() {
        let p = ResourcePath::from_kbs_uri("kbs:///default/key/1").unwrap();
        assert_eq!(p.to_string(), "default/key/1");
        assert_eq!(p.to_kbs_uri(), "kbs:///default/key/1");
        let p = ResourcePath::from_kbs_uri("kbs://example/default/key/1").unwrap();
        assert_eq!(p.to_string(), "default/key/1");
        for bad in [
            "default/key/1",
            "kbs://",
            "kbs:///a/b",
            "http:///a/b/c",
            "kbs:///a/../c",
        ] {
            assert!(ResourcePath::from_kbs_uri(bad).is_err(), "{bad}");
        }
    }

    struct NoAttester;
    impl Attester for NoAttester {
        fn tee(&self) -> Tee {
            Tee::Cca
        }
        fn evidence(&self, _: &[u8; 64]) -> Result<Value, AttesterError> {
            Err(AttesterError("not called".into()))
        }
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let mut c = KbsClient::new("http://127.0.0.1:1", NoAttester).unwrap();
        assert!(matches!(
            c.check_scheme(),
            Err(ClientError::PlainHttp { url }) if url == "http://127.0.0.1:1"
        ));
        c.allow_http(true);
        assert!(c.check_scheme().is_ok());
        c.allow_http(false);
        assert!(c.check_scheme().is_err());
        let c = KbsClient::new("https://kbs.example", NoAttester).unwrap();
        assert!(c.check_scheme().is_ok());
        let c = KbsClient::new("ftp://kbs.example", NoAttester).unwrap();
        assert!(matches!(
            c.check_scheme(),
            Err(ClientError::Protocol { .. })
        ));
    }

    #[tokio::test]
    async fn attest_over_plain_http_fails_before_any_request() {
        // Port 1 on loopback: nothing listens; the refusal comes first.
        let mut c = KbsClient::new("http://127.0.0.1:1", NoAttester).unwrap();
        let e = c.attest().await.unwrap_err();
        assert!(matches!(e, ClientError::PlainHttp { .. }), "{e}");
    }

    #[test]
    fn cca_evidence_is_number_array() {
        assert_eq!(
            cca_evidence_json(&[1, 2, 255]).to_string(),
            r#"{"token":[1,2,255]}"#
        );
    }
}
