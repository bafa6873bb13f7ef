//! Docker references, normalised as containers/image does for policy
//! lookups and identity checks: `busybox` is `docker.io/library/busybox`,
//! a first component with a `.` or `:` (or `localhost`) is a registry.

use std::fmt;

/// A parsed, normalised docker reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerReference {
    /// Registry host (with port).
    pub domain: String,
    /// Repository path inside the registry.
    pub path: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), if any.
    pub digest: Option<String>,
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

impl DockerReference {
    /// Parses `[registry/]path[:tag][@digest]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| format!("digest {d:?}: expected sha256:<hex>"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("digest {d:?}: expected sha256:<64 hex>"));
                }
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(name_tag[last_slash + i + 1..].to_string()),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(format!("tag {t:?} is not a valid tag"));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io".to_string()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !path.split('/').all(valid_component) {
            return Err(format!(
                "repository {path:?} is not a valid repository path"
            ));
        }
        if domain.is_empty() {
            return Err("empty registry".into());
        }
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `registry/path`: the repository name.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Whether the reference names a tag or a digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// Policy scopes to try in order: the full reference, then the
    /// repository and each parent namespace up to the registry, then
    /// `*.`-wildcards of the registry host (without port), longest first.
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
        let mut host = self.domain.split(':').next().unwrap_or_default();
        while let Some(i) = host.find('.') {
            host = &host[i + 1..];
            out.push(format!("*.{host}"));
        }
        out
    }
}

impl fmt::Display for DockerReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
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

    #[test]
    fn parse_normalises_like_containers_image() {
        let cases = [
            ("busybox", "docker.io/library/busybox"),
            ("busybox:1", "docker.io/library/busybox:1"),
            ("ns/app:v1", "docker.io/ns/app:v1"),
            ("127.0.0.1:5000/ns/app:v1", "127.0.0.1:5000/ns/app:v1"),
            ("localhost/app", "localhost/app"),
            ("quay.io/a/b/c@sha256:febcf61cd6e1ac9628f6ac14fa40836d16f3c6ddef3b303ff0321606e55ddd0b",
             "quay.io/a/b/c@sha256:febcf61cd6e1ac9628f6ac14fa40836d16f3c6ddef3b303ff0321606e55ddd0b"),
        ];
        for (input, want) in cases {
            assert_eq!(
                DockerReference::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        for bad in ["Quay.io/UPPER/x", "a/b:", "a@sha256:12", "x/../y"] {
            assert!(DockerReference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_go_from_reference_to_wildcards() {
        let r = DockerReference::parse("registry.access.redhat.com:5000/ns/app:v1").unwrap();
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
