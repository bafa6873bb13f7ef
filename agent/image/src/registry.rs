//! A small OCI distribution client (pull only) on reqwest + rustls (ring,
//! webpki roots plus the sandbox's extra roots): manifests, blobs streamed
//! to files while hashed, and anonymous, basic and bearer-token auth.
//!
//! Why not `oci-client`: 0.18 is built on reqwest 0.13, whose `rustls`
//! feature brings aws-lc-rs (C and cmake) and the platform verifier; the
//! agent is a static guest binary with pure-Rust TLS (ring), and needs
//! to refuse redirects to plain HTTP and to check every digest itself.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;
use crate::manifest::Descriptor;
use crate::reference::{Digest, Reference};
use crate::Progress;

/// Largest manifest, config or signature we read into memory.
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// Credentials for one registry, from auth.json.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Finds the credentials for `reference` in a containers auth.json
/// (`{"auths": {"KEY": {"auth": base64("user:pass")}}}`). Keys are tried
/// most specific first: `REGISTRY/REPO/PATH`, its parents, then
/// `REGISTRY` (with `http(s)://` prefixes and `/v1/` suffixes ignored, and
/// `index.docker.io` read as `docker.io`).
pub fn credentials_for(
    auth_json: &[u8],
    reference: &Reference,
) -> Result<Option<Credentials>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(auth_json).map_err(|e| format!("not JSON: {e}"))?;
    let auths = doc
        .get("auths")
        .and_then(|a| a.as_object())
        .ok_or("no \"auths\" object")?;
    let normalize = |k: &str| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_string();
        match k.strip_prefix("index.docker.io") {
            Some(rest) => format!("docker.io{rest}"),
            None => k,
        }
    };
    let mut wanted = vec![reference.registry.clone()];
    let mut path = reference.registry.clone();
    for c in reference.repository.split('/') {
        path = format!("{path}/{c}");
        wanted.push(path.clone());
    }
    for want in wanted.iter().rev() {
        let Some((key, entry)) = auths.iter().find(|(k, _)| &normalize(k) == want) else {
            continue;
        };
        let bad = |r: &str| format!("entry {key:?}: {r}");
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("\"auth\" is not base64"))?;
            let s = String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8"))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not user:password"))?;
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }));
        }
        match (
            entry.get("username").and_then(|u| u.as_str()),
            entry.get("password").and_then(|p| p.as_str()),
        ) {
            (Some(u), Some(p)) => {
                return Ok(Some(Credentials {
                    username: u.into(),
                    password: p.into(),
                }))
            }
            _ => return Err(bad("neither \"auth\" nor \"username\"/\"password\"")),
        }
    }
    Ok(None)
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter, if any.
        service: Option<String>,
        /// `scope` parameter, if any.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = std::collections::HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// One repository on one registry, with the auth state of a pull.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    registry: String,
    repository: String,
    insecure: Vec<String>,
    creds: Option<Credentials>,
    authorization: Mutex<Option<String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base", &self.base)
            .field("creds", &self.creds)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client for `reference`'s repository, as `cfg` says: its
    /// `insecure_registries` are the `HOST:PORT`s allowed over plain HTTP,
    /// its `extra_roots` PEM CA certificates trusted besides the webpki
    /// roots, and its `resolve` names reached at fixed addresses.
    pub fn new(
        reference: &Reference,
        cfg: &crate::pull::PullConfig,
        creds: Option<Credentials>,
    ) -> Result<Self, ImageError> {
        let registry = reference.registry.clone();
        let fail = |reason: String| ImageError::Registry {
            registry: registry.clone(),
            reason,
        };
        let allowed: Vec<String> = cfg.insecure_registries.clone();
        let redirect_allowed = allowed.clone();
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(true)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    return attempt.error("more than 10 redirects");
                }
                let url = attempt.url();
                if url.scheme() == "https" || is_listed(url, &redirect_allowed) {
                    attempt.follow()
                } else {
                    attempt.error("redirect to plain HTTP outside the insecure registries")
                }
            }));
        for (host, addr) in &cfg.resolve {
            b = b.resolve(host, *addr);
        }
        for pem in &cfg.extra_roots {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| fail(format!("extra CA certificate: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build().map_err(|e| fail(format!("HTTP client: {e}")))?;
        let scheme = if allowed.iter().any(|h| h == reference.api_host()) {
            "http"
        } else {
            "https"
        };
        Ok(Registry {
            http,
            base: format!(
                "{scheme}://{}/v2/{}",
                reference.api_host(),
                reference.repository
            ),
            registry,
            repository: reference.repository.clone(),
            insecure: allowed,
            creds,
            authorization: Mutex::new(None),
        })
    }

    fn fail(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            reason: reason.into(),
        }
    }

    fn auth_fail(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Auth {
            registry: self.registry.clone(),
            reason: reason.into(),
        }
    }

    /// `GET {base}/{path}`, answering one auth challenge. Returns the
    /// response with a 2xx status, or `None` on 404.
    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Option<reqwest::Response>, ImageError> {
        let url = format!("{}/{path}", self.base);
        let mut answered = false;
        loop {
            let mut req = self.http.get(&url);
            if let Some(a) = accept {
                req = req.header(reqwest::header::ACCEPT, a);
            }
            let auth = self.authorization.lock().ok().and_then(|a| a.clone());
            if let Some(a) = &auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| self.fail(transport(&e)))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && !answered {
                answered = true;
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge)
                    .ok_or_else(|| self.auth_fail("401 without a Basic or Bearer challenge"))?;
                let value = self.answer(challenge).await?;
                if let Ok(mut a) = self.authorization.lock() {
                    *a = Some(value);
                }
                continue;
            }
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                return Err(self.auth_fail(match &self.creds {
                    Some(c) => format!("{status} for user {:?}", c.username),
                    None => format!("{status} and no credentials for this registry"),
                }));
            }
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(self.fail(format!("GET {url}: {status}")));
            }
            return Ok(Some(resp));
        }
    }

    /// The `Authorization` value answering `challenge`.
    async fn answer(&self, challenge: Challenge) -> Result<String, ImageError> {
        let basic = |c: &Credentials| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        };
        match challenge {
            Challenge::Basic => self
                .creds
                .as_ref()
                .map(basic)
                .ok_or_else(|| self.auth_fail("the registry asks for Basic auth and no credentials are configured (registry_auth)")),
            Challenge::Bearer { realm, service, scope } => {
                let mut url = reqwest::Url::parse(&realm)
                    .map_err(|_| self.auth_fail(format!("bad token realm {realm:?}")))?;
                if url.scheme() != "https" && !is_listed(&url, &self.insecure) {
                    return Err(self.auth_fail(format!(
                        "token realm {realm} is plain HTTP and not an insecure registry"
                    )));
                }
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &service {
                        q.append_pair("service", s);
                    }
                    let own = format!("repository:{}:pull", self.repository);
                    q.append_pair("scope", scope.as_deref().unwrap_or(&own));
                }
                let mut req = self.http.get(url);
                if let Some(c) = &self.creds {
                    req = req.header(reqwest::header::AUTHORIZATION, basic(c));
                }
                let resp = req.send().await.map_err(|e| self.auth_fail(format!("token request: {}", transport(&e))))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(self.auth_fail(format!("token endpoint {realm}: {status}")));
                }
                let body = read_limited(resp, MAX_DOCUMENT)
                    .await
                    .map_err(|e| self.auth_fail(format!("token endpoint: {e}")))?;
                let doc: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| self.auth_fail("token endpoint: reply is not JSON"))?;
                let token = doc
                    .get("token")
                    .or_else(|| doc.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.auth_fail("token endpoint: no token in the reply"))?;
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// The manifest named by `reference` (tag or digest), with its
    /// Content-Type. `None` if the registry has none (404).
    pub async fn manifest(
        &self,
        reference: &str,
        accept: &str,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, ImageError> {
        let Some(resp) = self
            .get(&format!("manifests/{reference}"), Some(accept))
            .await?
        else {
            return Ok(None);
        };
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_limited(resp, MAX_DOCUMENT)
            .await
            .map_err(|e| self.fail(format!("manifest {reference}: {e}")))?;
        Ok(Some((body, ct)))
    }

    /// A small blob (config, signature payload), size- and digest-checked.
    pub async fn small_blob(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ImageError> {
        if desc.size > MAX_DOCUMENT {
            return Err(self.fail(format!(
                "{what} is {} bytes, over the {MAX_DOCUMENT}-byte limit",
                desc.size
            )));
        }
        let resp = self
            .get(&format!("blobs/{}", desc.digest), None)
            .await?
            .ok_or_else(|| self.fail(format!("{what} {} not found (404)", desc.digest)))?;
        let body = read_limited(resp, desc.size.saturating_add(1))
            .await
            .map_err(|e| self.fail(format!("{what}: {e}")))?;
        if body.len() as u64 != desc.size {
            return Err(ImageError::Size {
                what: format!("{what} {}", desc.digest),
                expected: desc.size,
                found: body.len() as u64,
            });
        }
        let found = Digest::of(&body);
        if found != desc.digest {
            return Err(ImageError::Digest {
                what: what.to_string(),
                expected: desc.digest.to_string(),
                found: found.to_string(),
            });
        }
        Ok(body)
    }

    /// Streams blob `desc` into `file` while hashing it; fails (without
    /// reading further) as soon as more than `desc.size` bytes arrive, and
    /// at the end unless size and digest match.
    pub async fn blob_to_file(
        &self,
        desc: &Descriptor,
        file: &mut std::fs::File,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), ImageError> {
        let what = format!("layer {}", desc.digest);
        let mut resp = self
            .get(&format!("blobs/{}", desc.digest), None)
            .await?
            .ok_or_else(|| self.fail(format!("{what} not found (404)")))?;
        let mut hasher = Sha256::new();
        let mut done: u64 = 0;
        let mut reported: u64 = 0;
        let report = |done| Progress {
            layer_digest: desc.digest.to_string(),
            done,
            total: desc.size,
        };
        progress(report(0));
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            self.fail(format!(
                "{what}: download interrupted after {done} of {} bytes: {}",
                desc.size,
                transport(&e)
            ))
        })? {
            done += chunk.len() as u64;
            if done > desc.size {
                return Err(ImageError::Size {
                    what,
                    expected: desc.size,
                    found: done,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(|source| ImageError::Store {
                path: "layer download".into(),
                source,
            })?;
            if done - reported >= 1 << 20 {
                reported = done;
                progress(report(done));
            }
        }
        if done != desc.size {
            return Err(ImageError::Size {
                what,
                expected: desc.size,
                found: done,
            });
        }
        let found = Digest::from_sha256(hasher.finalize().into());
        if found != desc.digest {
            return Err(ImageError::Digest {
                what,
                expected: desc.digest.to_string(),
                found: found.to_string(),
            });
        }
        progress(report(done));
        Ok(())
    }

    /// `GET url` outside the registry API (a signature lookaside): the
    /// body, or `None` on 404.
    pub async fn fetch_url(&self, url: &str) -> Result<Option<Vec<u8>>, String> {
        let parsed = reqwest::Url::parse(url).map_err(|_| format!("bad URL {url:?}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{url}: only http and https lookasides are supported"
            ));
        }
        let resp = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", transport(&e)))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        read_limited(resp, MAX_DOCUMENT)
            .await
            .map(Some)
            .map_err(|e| format!("{url}: {e}"))
    }
}

fn is_listed(url: &reqwest::Url, insecure: &[String]) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let hp = match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    insecure.iter().any(|h| *h == hp || *h == host)
}

/// The cause of a transport error, without reqwest's URL-laden wrapper.
fn transport(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        out = format!("{out}: {s}");
        cur = s.source();
    }
    out
}

/// The body, refusing more than `limit` bytes.
async fn read_limited(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("reply larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://a/token",service="reg",scope="repository:x/y:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://a/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:x/y:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn auth_json_lookup_prefers_the_most_specific_key() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let doc = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}},"127.0.0.1:5000/team":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            b64("u1:p1"),
            b64("u2:p:2"),
            b64("hub:h")
        );
        let user = |r: &str| {
            credentials_for(doc.as_bytes(), &r.parse().unwrap())
                .unwrap()
                .map(|c| (c.username, c.password))
        };
        assert_eq!(user("127.0.0.1:5000/app"), Some(("u1".into(), "p1".into())));
        assert_eq!(
            user("127.0.0.1:5000/team/app"),
            Some(("u2".into(), "p:2".into()))
        );
        assert_eq!(user("busybox").unwrap().0, "hub");
        assert_eq!(user("quay.io/x"), None);
        assert!(credentials_for(b"{}", &"a".parse().unwrap()).is_err());
        assert!(credentials_for(
            br#"{"auths":{"docker.io":{"auth":"!!"}}}"#,
            &"a".parse().unwrap()
        )
        .is_err());
    }
}
