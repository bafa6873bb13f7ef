//! The pull: resolve, pin, policy and signatures, config, keys, then
//! layers (download, decrypt, unpack). The order is the security argument:
//!
//! 1. With no signature policy named and `require_policy_or_pin`, an image
//!    initdata does not pin is refused before any request.
//! 2. The manifest is resolved and digest-checked; a pinned reference must
//!    resolve to its pinned digest.
//! 3. The signature policy is checked (signatures fetched from the
//!    lookaside or as cosign attachments) before the config or any layer
//!    is fetched.
//! 4. For an index, the platform's manifest is fetched by digest; then the
//!    config (digest-checked).
//! 5. Every encrypted layer's key is found (`required_keys`, which fetches
//!    nothing) and unwrapped before any layer body is downloaded, so a
//!    missing key stops the pull with nothing downloaded past descriptors.
//! 6. Each layer not already in the store is streamed to a file (size and
//!    digest checked), decrypted (HMAC checked before plaintext is used),
//!    decompressed, unpacked confined to its directory, diff_id checked,
//!    and only then renamed into place.

use std::path::PathBuf;

use crate::error::ImageError;
use crate::manifest::{self, Compression, Descriptor, ImageConfig, Manifest, ParsedConfig};
use crate::ocicrypt;
use crate::platform::Platform;
use crate::reference::{Digest, Reference};
use crate::registry::{self, Registry};
use crate::resources::{ResourcePath, ResourceProvider};
use crate::signature::{self, FetchedSignature, SignatureKind};
use crate::store::{ImageStore, TempGuard};
use crate::unpack::{self, UnpackOptions};

/// How the sandbox pulls images; built by the agent from measured
/// initdata.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// The platform to pick from an index ([`Platform::host`] normally).
    pub platform: Platform,
    /// `HOST:PORT`s reached over plain HTTP; every other registry over
    /// HTTPS (rustls, webpki roots plus `extra_roots`).
    pub insecure_registries: Vec<String>,
    /// Extra trusted CA certificates (PEM, one or more per entry).
    pub extra_roots: Vec<Vec<u8>>,
    /// Host names resolved to these addresses instead of by DNS (a port of
    /// 0 keeps the URL's): a guest reaches other hosts through forwards.
    pub resolve: Vec<(String, std::net::SocketAddr)>,
    /// `REF@sha256:DIGEST` pins: a reference with this name (and tag, if
    /// the pin has one) must resolve to this digest.
    pub pinned: Vec<String>,
    /// The containers-policy.json, as a KBS resource.
    pub signature_policy: Option<ResourcePath>,
    /// Base URL of the simple-signing lookaside (registries.d
    /// `lookaside`), for `signedBy` requirements.
    pub lookaside: Option<String>,
    /// A containers auth.json with the registry credentials, as a KBS
    /// resource.
    pub registry_auth: Option<ResourcePath>,
    /// JWE private keys that may unwrap layer keys (KBS resources).
    pub decryption_keys: Vec<ResourcePath>,
    /// Refuse an image that no policy covers and no pin names (the
    /// default in a TEE guest).
    pub require_policy_or_pin: bool,
    /// Create device nodes from layers.
    pub allow_devices: bool,
    /// Keep setuid/setgid bits from layers.
    pub allow_setuid: bool,
}

impl PullConfig {
    /// A config for this build's platform that refuses unpinned images
    /// without a policy, and nothing else set.
    pub fn new() -> Self {
        PullConfig {
            platform: Platform::host(),
            insecure_registries: Vec::new(),
            extra_roots: Vec::new(),
            resolve: Vec::new(),
            pinned: Vec::new(),
            signature_policy: None,
            lookaside: None,
            registry_auth: None,
            decryption_keys: Vec::new(),
            require_policy_or_pin: true,
            allow_devices: false,
            allow_setuid: false,
        }
    }
}

impl Default for PullConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Download progress of one layer, reported at its start, about every
/// MiB and at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The layer blob's digest (`sha256:…`).
    pub layer_digest: String,
    /// Bytes downloaded so far (`total` for a layer already in the store).
    pub done: u64,
    /// The layer blob's size.
    pub total: u64,
}

/// A pulled, verified, unpacked image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The normalized reference (`REGISTRY/REPO[:TAG][@DIGEST]`).
    pub reference: String,
    /// The digest the reference resolved to (an index's digest for a
    /// multi-platform image): the one pins and signatures are checked
    /// against.
    pub manifest_digest: String,
    /// Unpacked layer directories, bottom first, in overlayfs format:
    /// stack them as lowerdirs (overlay wants the top first, so reverse).
    pub layers: Vec<PathBuf>,
    /// What to run.
    pub config: ImageConfig,
}

/// A layer as the pull handles it.
struct Layer {
    desc: Descriptor,
    diff_id: Digest,
    compression: Compression,
    encrypted: bool,
}

/// Finds the pins that apply to `r`: same name, and same tag when the pin
/// has one.
fn pins_for(r: &Reference, pinned: &[String]) -> Result<Vec<Digest>, ImageError> {
    let mut out = Vec::new();
    for p in pinned {
        let pin: Reference = p
            .parse()
            .map_err(|_| ImageError::BadPin { pin: p.clone() })?;
        let digest = pin
            .digest
            .clone()
            .ok_or_else(|| ImageError::BadPin { pin: p.clone() })?;
        if pin.registry == r.registry
            && pin.repository == r.repository
            && (pin.tag.is_none() || pin.tag == r.tag)
        {
            out.push(digest);
        }
    }
    Ok(out)
}

fn check_digest(what: &str, expected: &Digest, body: &[u8]) -> Result<(), ImageError> {
    let found = Digest::of(body);
    if &found != expected {
        return Err(ImageError::Digest {
            what: what.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }
    Ok(())
}

impl ImageStore {
    /// Pulls `reference` under `cfg` (see the module docs for the order
    /// of checks), unpacking into this store. Secrets (policy, registry
    /// credentials, keys) come from `resources`; `progress` hears about
    /// each layer's download. On error, nothing this pull created is left
    /// in the store.
    pub async fn pull(
        &self,
        reference: &str,
        cfg: &PullConfig,
        resources: &dyn ResourceProvider,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<PulledImage, ImageError> {
        let r: Reference = reference.parse()?;
        let pins = pins_for(&r, &cfg.pinned)?;
        if let (Some(d), false) = (&r.digest, pins.is_empty()) {
            if !pins.contains(d) {
                return Err(ImageError::Pin {
                    reference: r.to_string(),
                    pinned: pins[0].to_string(),
                    found: d.to_string(),
                });
            }
        }
        if cfg.signature_policy.is_none() && cfg.require_policy_or_pin && pins.is_empty() {
            return Err(ImageError::NoPolicyOrPin {
                reference: r.to_string(),
            });
        }
        let policy = match &cfg.signature_policy {
            Some(path) => {
                let bytes = resources.resource(path).await?;
                Some(
                    signature::Policy::parse(&bytes).map_err(|source| ImageError::Policy {
                        resource: path.to_kbs_uri(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let creds = match &cfg.registry_auth {
            Some(path) => {
                let bytes = resources.resource(path).await?;
                registry::credentials_for(&bytes, &r).map_err(|reason| ImageError::AuthFile {
                    resource: path.to_kbs_uri(),
                    reason,
                })?
            }
            None => None,
        };
        let reg = Registry::new(&r, cfg, creds)?;

        // 2. Resolve.
        let what = format!("manifest of {r}");
        let (body, ct) = reg
            .manifest(&r.manifest_ref(), manifest::ACCEPT)
            .await?
            .ok_or_else(|| ImageError::Registry {
                registry: r.registry.clone(),
                reason: format!("{r}: manifest unknown (404)"),
            })?;
        let top_digest = Digest::of(&body);
        if let Some(d) = &r.digest {
            check_digest(&what, d, &body)?;
        }
        if !pins.is_empty() && !pins.contains(&top_digest) {
            return Err(ImageError::Pin {
                reference: r.to_string(),
                pinned: pins[0].to_string(),
                found: top_digest.to_string(),
            });
        }
        let top = Manifest::parse(&body, ct.as_deref()).map_err(|reason| ImageError::Manifest {
            what: what.clone(),
            reason,
        })?;

        // 3. Signature policy, before the config or any layer.
        if let Some(policy) = &policy {
            self.check_signatures(policy, &r, &top_digest, cfg, &reg)
                .await?;
        }

        // 4. Platform manifest and config.
        let (config_desc, layer_descs) = match top {
            Manifest::Image { config, layers } => (config, layers),
            Manifest::Index(entries) => {
                let entry = manifest::select(&entries, &cfg.platform).map_err(|offered| {
                    ImageError::Platform {
                        reference: r.to_string(),
                        wanted: cfg.platform.to_string(),
                        offered,
                    }
                })?;
                let what = format!("manifest of {r} for {}", cfg.platform);
                let (body, ct) = reg
                    .manifest(entry.digest.as_str(), manifest::ACCEPT)
                    .await?
                    .ok_or_else(|| ImageError::Registry {
                        registry: r.registry.clone(),
                        reason: format!("{what} ({}): not found (404)", entry.digest),
                    })?;
                check_digest(&what, &entry.digest, &body)?;
                match Manifest::parse(&body, ct.as_deref()) {
                    Ok(Manifest::Image { config, layers }) => (config, layers),
                    Ok(Manifest::Index(_)) => {
                        return Err(ImageError::Manifest {
                            what,
                            reason: "an index inside an index".into(),
                        })
                    }
                    Err(reason) => return Err(ImageError::Manifest { what, reason }),
                }
            }
        };
        let config_bytes = reg.small_blob(&config_desc, "image config").await?;
        let parsed = ParsedConfig::parse(&config_bytes).map_err(|reason| ImageError::Manifest {
            what: format!("image config of {r}"),
            reason,
        })?;
        if let (Some(os), Some(arch)) = (&parsed.os, &parsed.architecture) {
            if *os != cfg.platform.os || *arch != cfg.platform.architecture {
                return Err(ImageError::Platform {
                    reference: r.to_string(),
                    wanted: cfg.platform.to_string(),
                    offered: format!("{os}/{arch}"),
                });
            }
        }
        if parsed.diff_ids.len() != layer_descs.len() {
            return Err(ImageError::Manifest {
                what: format!("image config of {r}"),
                reason: format!(
                    "{} diff_ids for {} layers",
                    parsed.diff_ids.len(),
                    layer_descs.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in layer_descs.into_iter().zip(parsed.diff_ids) {
            let encrypted = ocicrypt::is_encrypted(&desc.media_type);
            let plain_type = if encrypted {
                ocicrypt::decrypted_media_type(&desc.media_type).unwrap_or("")
            } else {
                desc.media_type.as_str()
            };
            let compression =
                Compression::of_layer(plain_type).ok_or_else(|| ImageError::Manifest {
                    what: format!("manifest of {r}"),
                    reason: format!(
                        "layer {}: unsupported media type {}",
                        desc.digest, desc.media_type
                    ),
                })?;
            layers.push(Layer {
                desc,
                diff_id,
                compression,
                encrypted,
            });
        }

        // 5. Keys, before any layer body.
        let needs_key: Vec<&Layer> = layers
            .iter()
            .filter(|l| l.encrypted && !self.layer_dir(&l.diff_id).is_dir())
            .collect();
        for l in &needs_key {
            ocicrypt::required_keys(&l.desc.annotations, &cfg.decryption_keys).map_err(
                |source| ImageError::Crypt {
                    layer: l.desc.digest.to_string(),
                    source,
                },
            )?;
        }
        let mut keys = std::collections::HashMap::new();
        for l in &needs_key {
            let key =
                ocicrypt::unwrap_layer_key(&l.desc.annotations, &cfg.decryption_keys, resources)
                    .await
                    .map_err(|source| ImageError::Crypt {
                        layer: l.desc.digest.to_string(),
                        source,
                    })?;
            keys.insert(l.desc.digest.clone(), key);
        }

        // 6. Layers.
        let mut claimed: Vec<(Digest, bool)> = Vec::new();
        let result = self
            .fetch_layers(&reg, &layers, &mut keys, cfg, progress, &mut claimed)
            .await;
        match result {
            Ok(dirs) => Ok(PulledImage {
                reference: r.to_string(),
                manifest_digest: top_digest.to_string(),
                layers: dirs,
                config: parsed.exec,
            }),
            Err(e) => {
                for (diff_id, created) in claimed {
                    self.release(&diff_id, created);
                }
                Err(e)
            }
        }
    }

    async fn fetch_layers(
        &self,
        reg: &Registry,
        layers: &[Layer],
        keys: &mut std::collections::HashMap<Digest, ocicrypt::LayerKey>,
        cfg: &PullConfig,
        progress: &mut (dyn FnMut(Progress) + Send),
        claimed: &mut Vec<(Digest, bool)>,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let opts = UnpackOptions {
            allow_devices: cfg.allow_devices,
            allow_setuid: cfg.allow_setuid,
        };
        let mut dirs = Vec::new();
        for l in layers {
            let lock = self.layer_lock(&l.diff_id);
            let _held = lock.lock().await;
            let dir = self.layer_dir(&l.diff_id);
            self.claim(&l.diff_id);
            if dir.is_dir() {
                claimed.push((l.diff_id.clone(), false));
                progress(Progress {
                    layer_digest: l.desc.digest.to_string(),
                    done: l.desc.size,
                    total: l.desc.size,
                });
                dirs.push(dir);
                continue;
            }
            claimed.push((l.diff_id.clone(), false));
            let blob = TempGuard::new(self.temp_path(&format!("blob-{}", l.desc.digest.hex())));
            let mut file =
                std::fs::File::create_new(blob.path()).map_err(|source| ImageError::Store {
                    path: blob.path().display().to_string(),
                    source,
                })?;
            reg.blob_to_file(&l.desc, &mut file, progress).await?;
            drop(file);
            let tmp_dir = TempGuard::new(self.temp_path(&format!("layer-{}", l.diff_id.hex())));
            std::fs::create_dir(tmp_dir.path()).map_err(|source| ImageError::Store {
                path: tmp_dir.path().display().to_string(),
                source,
            })?;
            let key = if l.encrypted {
                keys.remove(&l.desc.digest)
            } else {
                None
            };
            let blob_path = blob.path().to_path_buf();
            let dest = tmp_dir.path().to_path_buf();
            let compression = l.compression;
            let diff_id = l.diff_id.clone();
            let layer = l.desc.digest.to_string();
            let unpacked = tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
                let file = std::fs::File::open(&blob_path).map_err(|source| ImageError::Store {
                    path: blob_path.display().to_string(),
                    source,
                })?;
                let unpack_err = |source| ImageError::Unpack {
                    layer: layer.clone(),
                    source,
                };
                match key {
                    Some(key) => {
                        let plain = ocicrypt::open_layer(file, &key).map_err(|source| {
                            ImageError::Crypt {
                                layer: layer.clone(),
                                source,
                            }
                        })?;
                        unpack::unpack_layer(plain, compression, &diff_id, &dest, opts)
                            .map_err(unpack_err)
                    }
                    None => unpack::unpack_layer(file, compression, &diff_id, &dest, opts)
                        .map_err(unpack_err),
                }
            })
            .await
            .map_err(|e| ImageError::Store {
                path: tmp_dir.path().display().to_string(),
                source: std::io::Error::other(format!("unpack task failed: {e}")),
            })?;
            unpacked?;
            drop(blob);
            std::fs::rename(tmp_dir.path(), &dir).map_err(|source| ImageError::Store {
                path: dir.display().to_string(),
                source,
            })?;
            tmp_dir.keep();
            if let Some(last) = claimed.last_mut() {
                last.1 = true;
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }

    async fn check_signatures(
        &self,
        policy: &signature::Policy,
        r: &Reference,
        digest: &Digest,
        cfg: &PullConfig,
        reg: &Registry,
    ) -> Result<(), ImageError> {
        let docker_reference = r.docker_reference();
        let mut simple: Option<Vec<FetchedSignature>> = None;
        let mut sigstore: Option<Vec<FetchedSignature>> = None;
        for req in policy.requirements(&docker_reference) {
            let sigs: &[FetchedSignature] = match req.needs() {
                SignatureKind::None => &[],
                SignatureKind::SimpleSigning => {
                    if simple.is_none() {
                        simple = Some(self.lookaside_signatures(r, digest, cfg, reg).await?);
                    }
                    simple.as_deref().unwrap_or(&[])
                }
                SignatureKind::Sigstore => {
                    if sigstore.is_none() {
                        sigstore = Some(sigstore_signatures(r, digest, reg).await?);
                    }
                    sigstore.as_deref().unwrap_or(&[])
                }
            };
            req.check(&docker_reference, digest.as_str(), sigs)
                .map_err(|source| ImageError::Signature {
                    reference: docker_reference.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    async fn lookaside_signatures(
        &self,
        r: &Reference,
        digest: &Digest,
        cfg: &PullConfig,
        reg: &Registry,
    ) -> Result<Vec<FetchedSignature>, ImageError> {
        let base = cfg
            .lookaside
            .as_deref()
            .ok_or_else(|| ImageError::Lookaside {
                reference: r.to_string(),
                reason:
                    "the policy requires signedBy signatures and no lookaside URL is configured"
                        .into(),
            })?;
        let mut out = Vec::new();
        for index in 0..MAX_SIGNATURES {
            let url = signature::lookaside_url(base, &r.repository, digest.as_str(), index);
            match reg.fetch_url(&url).await {
                Ok(Some(body)) => out.push(FetchedSignature::SimpleSigning(body)),
                Ok(None) => break,
                Err(reason) => {
                    return Err(ImageError::Lookaside {
                        reference: r.to_string(),
                        reason,
                    })
                }
            }
        }
        Ok(out)
    }
}

/// At most this many signatures are fetched per image.
const MAX_SIGNATURES: usize = 16;

/// cosign attachments: the manifest tagged `sha256-<hex>.sig` in the same
/// repository; each simplesigning layer is a payload whose signature is in
/// its `dev.cosignproject.cosign/signature` annotation.
async fn sigstore_signatures(
    r: &Reference,
    digest: &Digest,
    reg: &Registry,
) -> Result<Vec<FetchedSignature>, ImageError> {
    let tag = format!("sha256-{}.sig", digest.hex());
    let what = format!("signatures of {r} ({tag})");
    let Some((body, ct)) = reg
        .manifest(&tag, "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        .await?
    else {
        return Ok(Vec::new());
    };
    let layers = match Manifest::parse(&body, ct.as_deref()) {
        Ok(Manifest::Image { layers, .. }) => layers,
        Ok(Manifest::Index(_)) => {
            return Err(ImageError::Manifest {
                what,
                reason: "an index, not a signature manifest".into(),
            })
        }
        Err(reason) => return Err(ImageError::Manifest { what, reason }),
    };
    let mut out = Vec::new();
    for l in layers.iter().take(MAX_SIGNATURES) {
        if l.media_type != "application/vnd.dev.cosign.simplesigning.v1+json" {
            continue;
        }
        let Some(sig) = l.annotations.get("dev.cosignproject.cosign/signature") else {
            continue;
        };
        let payload = reg.small_blob(l, "signature payload").await?;
        out.push(FetchedSignature::Sigstore {
            payload,
            signature_b64: sig.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn pins_apply_by_name_and_tag() {
        let pinned = vec![
            format!("127.0.0.1:5000/app:v1@{D1}"),
            format!("127.0.0.1:5000/other@{D2}"),
        ];
        let pins = |r: &str| pins_for(&r.parse().unwrap(), &pinned).unwrap();
        assert_eq!(
            pins("127.0.0.1:5000/app:v1"),
            [D1.parse::<Digest>().unwrap()]
        );
        assert!(pins("127.0.0.1:5000/app:v2").is_empty());
        assert_eq!(pins("127.0.0.1:5000/other:any").len(), 1);
        assert!(pins("127.0.0.1:5001/app:v1").is_empty());
        assert!(pins_for(&"a".parse().unwrap(), &["a:v1".into()]).is_err());
    }
}
