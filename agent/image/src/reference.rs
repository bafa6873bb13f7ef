//! Image references (`[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]`) and
//! content digests, parsed once into types.
//!
//! Names are normalized as Docker and containers/image do: a first path
//! component without `.` or `:` (and not `localhost`) is a Docker Hub
//! repository (`busybox` is `docker.io/library/busybox:latest`).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Docker Hub's name in references and auth.json.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Why a reference or digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad image reference {input:?}: {reason}")]
pub struct BadReference {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A content digest. Only `sha256:` (64 lowercase hex digits) is accepted:
/// it is what every registry and image tool writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// The digest with this raw SHA-256 value.
    pub fn from_sha256(raw: [u8; 32]) -> Self {
        Digest(format!("sha256:{}", hex::encode(raw)))
    }

    /// The 64 hex digits after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// `sha256:HEX`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = BadReference;
    fn from_str(s: &str) -> Result<Self, BadReference> {
        let bad = |reason| BadReference {
            input: s.to_string(),
            reason,
        };
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("the digest must be sha256:HEX"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("a sha256 digest has 64 lowercase hex digits"));
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry as written in references and auth.json (`docker.io`,
    /// `127.0.0.1:5000`, `quay.io`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Digest, when the reference names one.
    pub digest: Option<Digest>,
}

impl Reference {
    /// `REGISTRY/REPOSITORY`, the name that signature policy scopes and
    /// pins match.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host (and port) to send registry API requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest when
    /// there is one (a tag can move, a digest cannot), else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The form containers-policy.json requirements are checked against:
    /// `NAME:TAG` when a tag was given, else `NAME@DIGEST`.
    pub fn docker_reference(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}:{t}", self.name()),
            (None, Some(d)) => format!("{}@{d}", self.name()),
            (None, None) => format!("{}:latest", self.name()),
        }
    }
}

impl Reference {
    /// Parses a reference as written: with neither tag nor digest the tag
    /// stays `None` (containers/image's name-only form, which signature
    /// policy scopes and identity checks need). [`FromStr`] defaults the tag
    /// to `latest`, as a pull does.
    pub fn parse_as_written(s: &str) -> Result<Self, BadReference> {
        let bad = |reason| BadReference {
            input: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("a reference is 1 to 4096 characters"));
        }
        let (rest, digest) = match s.rsplit_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|e| bad(e.reason))?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if tag.is_empty()
                    || tag.len() > 128
                    || !tag
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                    || tag.starts_with(['.', '-'])
                {
                    return Err(bad("a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some(("index.docker.io", path)) => (DOCKER_HUB.to_string(), path.to_string()),
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(bad("the registry is HOST[:PORT]"));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "repository path components are lowercase letters, digits and . _ - separators",
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Whether the reference names neither a tag nor a digest (only
    /// possible from [`Reference::parse_as_written`]).
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// containers-policy.json scopes to try, most specific first: the full
    /// reference, then the repository and each parent namespace up to the
    /// registry, then `*.`-wildcards of the registry host (without port),
    /// longest first.
    pub fn policy_scopes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.is_name_only() {
            out.push(self.to_string());
        }
        let mut name = self.name();
        loop {
            out.push(name.clone());
            match name.rfind('/') {
                Some(i) => name.truncate(i),
                None => break,
            }
        }
        let mut host = self.registry.split(':').next().unwrap_or_default();
        while let Some(i) = host.find('.') {
            host = &host[i + 1..];
            out.push(format!("*.{host}"));
        }
        out
    }
}

impl FromStr for Reference {
    type Err = BadReference;
    fn from_str(s: &str) -> Result<Self, BadReference> {
        let mut r = Self::parse_as_written(s)?;
        if r.is_name_only() {
            r.tag = Some("latest".to_string());
        }
        Ok(r)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_normalize_as_docker_does() {
        // (input, registry, repository, tag, digest)
        type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[Case] = &[
            (
                "busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            ("user/app:1.0", "docker.io", "user/app", Some("1.0"), None),
            (
                "127.0.0.1:5000/app",
                "127.0.0.1:5000",
                "app",
                Some("latest"),
                None,
            ),
            ("localhost/a/b:t", "localhost", "a/b", Some("t"), None),
        ];
        for (input, reg, repo, tag, digest) in cases {
            let r: Reference = input.parse().unwrap();
            assert_eq!(
                (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
                (*reg, *repo, *tag),
                "{input}"
            );
            assert_eq!(r.digest.as_ref().map(|d| d.as_str()), *digest);
        }
        assert!("quay.io/x/y@".parse::<Reference>().is_err());
        let r: Reference = format!("127.0.0.1:5000/app:v1@{D}").parse().unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.docker_reference(), "127.0.0.1:5000/app:v1");
        let r: Reference = format!("app@{D}").parse().unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.docker_reference(), format!("docker.io/library/app@{D}"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn malformed_references_and_digests_are_refused() {
        for bad in [
            "",
            "App",
            "a/B:1",
            "a:",
            "a:-x",
            "a@sha256:12",
            "a@sha512:00",
            "a//b",
            "h:1/a@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_normalises_like_containers_image() {
        let cases = [
            ("busybox", "docker.io/library/busybox"),
            ("busybox:1", "docker.io/library/busybox:1"),
            ("ns/app:v1", "docker.io/ns/app:v1"),
            ("127.0.0.1:5000/ns/app:v1", "127.0.0.1:5000/ns/app:v1"),
            ("localhost/app", "localhost/app"),
            ("index.docker.io/ns/app:v1", "docker.io/ns/app:v1"),
            ("quay.io/a/b/c@sha256:febcf61cd6e1ac9628f6ac14fa40836d16f3c6ddef3b303ff0321606e55ddd0b",
             "quay.io/a/b/c@sha256:febcf61cd6e1ac9628f6ac14fa40836d16f3c6ddef3b303ff0321606e55ddd0b"),
        ];
        for (input, want) in cases {
            assert_eq!(
                Reference::parse_as_written(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        for bad in ["Quay.io/UPPER/x", "a/b:", "a@sha256:12", "x/../y"] {
            assert!(Reference::parse_as_written(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_go_from_reference_to_wildcards() {
        let r = Reference::parse_as_written("registry.access.redhat.com:5000/ns/app:v1").unwrap();
        assert_eq!(
            r.policy_scopes(),
            [
                "registry.access.redhat.com:5000/ns/app:v1",
                "registry.access.redhat.com:5000/ns/app",
                "registry.access.redhat.com:5000/ns",
                "registry.access.redhat.com:5000",
                "*.access.redhat.com",
                "*.redhat.com",
                "*.com",
            ]
        );
    }
}
