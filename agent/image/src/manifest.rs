//! OCI and Docker v2 schema 2 manifests, indexes and image configs: the
//! parts a pull needs, parsed strictly (unknown media types are refused).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::platform::Platform;
use crate::reference::Digest;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What a pull accepts from a manifest endpoint (the `Accept` header).
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Layer compression, after any decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression of a (decrypted) layer media type, or `None` if the
    /// media type is not a layer we unpack.
    pub fn of_layer(media_type: &str) -> Option<Self> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    pub media_type: String,
    /// Digest of the content.
    #[serde(deserialize_with = "de_digest")]
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (ocicrypt keeps wrapped keys here).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// For index entries: the platform.
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

/// The platform object of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct PlatformJson {
    /// OS.
    pub os: String,
    /// Architecture.
    pub architecture: String,
    /// Variant.
    #[serde(default)]
    pub variant: Option<String>,
}

fn de_digest<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A parsed manifest-endpoint document.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// An index (manifest list): one manifest per platform.
    Index(Vec<Descriptor>),
    /// An image manifest: a config and layers, bottom first.
    Image {
        /// The config blob.
        config: Descriptor,
        /// The layers, bottom first.
        layers: Vec<Descriptor>,
    },
}

impl Manifest {
    /// Parses `body`, served with `content_type` (the body's own
    /// `mediaType` wins when present; they must agree when both are).
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Self, String> {
        let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("not a manifest: {e}"))?;
        if raw.schema_version != 2 {
            return Err(format!(
                "schemaVersion {} (only schema 2 manifests are supported)",
                raw.schema_version
            ));
        }
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].contains(c));
        let media_type = match (raw.media_type.as_deref(), header) {
            (Some(body), Some(h)) if body != h => {
                return Err(format!("mediaType {body} but served as {h}"));
            }
            (Some(body), _) => body.to_string(),
            (None, Some(h)) => h.to_string(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
            (None, None) => OCI_MANIFEST.to_string(),
        };
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => Ok(Manifest::Index(
                raw.manifests.ok_or("an index without manifests")?,
            )),
            OCI_MANIFEST | DOCKER_MANIFEST => Ok(Manifest::Image {
                config: raw.config.ok_or("a manifest without a config")?,
                layers: raw.layers.ok_or("a manifest without layers")?,
            }),
            other => Err(format!("unsupported manifest media type {other}")),
        }
    }
}

/// Picks the entry of an index that runs on `platform` (the first match,
/// as containerd does). `Err` lists what the index offers.
pub fn select<'a>(
    entries: &'a [Descriptor],
    platform: &Platform,
) -> Result<&'a Descriptor, String> {
    entries
        .iter()
        .filter(|d| [OCI_MANIFEST, DOCKER_MANIFEST].contains(&d.media_type.as_str()))
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| platform.matches(&p.os, &p.architecture, p.variant.as_deref()))
        })
        .ok_or_else(|| {
            let offered: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect();
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(", ")
            }
        })
}

/// What a container needs from the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=VALUE`.
    pub env: Vec<String>,
    /// `WorkingDir` (empty: `/`).
    pub working_dir: String,
    /// `User` (`uid[:gid]` or a name; empty: root).
    pub user: String,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    config: Option<RawExec>,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawExec {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(deserialize_with = "de_digests")]
    diff_ids: Vec<Digest>,
}

fn de_digests<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Digest>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// A parsed image config: what to run and the layers' uncompressed digests.
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    /// Run settings.
    pub exec: ImageConfig,
    /// `rootfs.diff_ids`, bottom first.
    pub diff_ids: Vec<Digest>,
    /// `os`, if given.
    pub os: Option<String>,
    /// `architecture`, if given.
    pub architecture: Option<String>,
}

impl ParsedConfig {
    /// Parses an OCI or Docker image config.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_slice(body).map_err(|e| format!("not an image config: {e}"))?;
        if raw.rootfs.kind != "layers" {
            return Err(format!(
                "rootfs.type {:?}, expected \"layers\"",
                raw.rootfs.kind
            ));
        }
        let c = raw.config.unwrap_or_default();
        Ok(ParsedConfig {
            exec: ImageConfig {
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                working_dir: c.working_dir.unwrap_or_default(),
                user: c.user.unwrap_or_default(),
            },
            diff_ids: raw.rootfs.diff_ids,
            os: raw.os,
            architecture: raw.architecture,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        )
    }

    #[test]
    fn index_selects_by_platform_and_lists_offers_when_none_fits() {
        let Manifest::Index(entries) = Manifest::parse(index().as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        let pick = |p: &str| select(&entries, &p.parse().unwrap()).map(|d| d.digest.to_string());
        assert_eq!(pick("linux/amd64").unwrap(), D1);
        assert_eq!(pick("linux/arm64/v8").unwrap(), D2);
        assert_eq!(
            pick("linux/s390x").unwrap_err(),
            "linux/amd64, linux/arm64/v8"
        );
    }

    #[test]
    fn manifests_of_both_formats_parse_and_others_are_refused() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":3}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":4}}]}}"#
        );
        match Manifest::parse(docker.as_bytes(), Some(DOCKER_MANIFEST)).unwrap() {
            Manifest::Image { config, layers } => {
                assert_eq!(config.size, 3);
                assert_eq!(
                    Compression::of_layer(&layers[0].media_type),
                    Some(Compression::Gzip)
                );
            }
            Manifest::Index(_) => panic!("not an image"),
        }
        let cases = [
            (r#"{"schemaVersion":1,"name":"x"}"#.to_string(), None, "schemaVersion 1"),
            (docker.clone(), Some(OCI_MANIFEST), "but served as"),
            (r#"{"schemaVersion":2,"mediaType":"text/plain"}"#.into(), None, "unsupported"),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:12","size":1},"layers":[]}"#.into(),
                None,
                "64 lowercase hex",
            ),
            ("[]".into(), None, "not a manifest"),
        ];
        for (body, ct, want) in cases {
            let err = Manifest::parse(body.as_bytes(), ct).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn config_gives_run_settings_and_diff_ids() {
        let body = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/sh"],"Cmd":["-c","x"],"Env":["A=1"],"WorkingDir":"/w","User":"1:2"}},"rootfs":{{"type":"layers","diff_ids":["{D1}"]}}}}"#
        );
        let c = ParsedConfig::parse(body.as_bytes()).unwrap();
        assert_eq!(c.exec.entrypoint, ["/bin/sh"]);
        assert_eq!(c.exec.user, "1:2");
        assert_eq!(c.diff_ids[0].as_str(), D1);
        assert!(ParsedConfig::parse(br#"{"rootfs":{"type":"x","diff_ids":[]}}"#).is_err());
    }
}
