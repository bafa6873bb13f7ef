//! Images pulled inside the guest (issue 9): a container whose rootfs is of
//! kind IMAGE gets it from here, never from the host. The pull follows the
//! sandbox's measured initdata (registries, pins, signature policy, keys)
//! and takes every secret from the KBS the guest attested to; the layers
//! land in guest memory (a tmpfs sized from guest RAM), so the host sees
//! only what the registry serves it: ciphertext for encrypted layers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloister_guest_config::GuestConfig;
use cloister_image::reference::Reference;
use cloister_image::resources::{ResourceError, ResourcePath, ResourceProvider};
use cloister_image::{ImageStore, Progress, PullConfig, PulledImage};
use nix::mount::{mount, MsFlags};
use tokio::sync::OnceCell;

/// Where the layer store lives (its own tmpfs).
const STORE_DIR: &str = "/run/cloister/images";
/// Bytes between two progress lines of one layer.
const PROGRESS_STEP: u64 = 8 << 20;
/// The store's share of guest RAM, in percent (tmpfs `size=`).
const STORE_RAM_PERCENT: u64 = 75;

/// The store's tmpfs `size=`: its share of RAM, plus the encrypted scratch
/// disk when the sandbox has one (set up here, as swap: see
/// [`crate::scratch`]) and may use it: a TEE guest only when the measured
/// initdata allows it, since the host decides whether the disk is there.
fn store_size(config: &GuestConfig, tee: bool) -> Result<String, String> {
    let ram_only = format!("size={STORE_RAM_PERCENT}%");
    let Some(disk) = crate::scratch::find(Path::new("/sys/block")) else {
        return Ok(ram_only);
    };
    if tee && !config.cloister.allow_scratch_disk {
        crate::log!(
            "scratch disk {disk} ignored: the initdata does not set {}",
            cloister_guest_config::ALLOW_SCRATCH_DISK_KEY
        );
        return Ok(ram_only);
    }
    let s = crate::scratch::setup(&disk).map_err(|e| e.to_string())?;
    let ram = nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .map_err(|e| format!("reading the guest's RAM size: {e}"))?;
    let bytes = ram * STORE_RAM_PERCENT / 100 + s.bytes;
    crate::log!(
        "scratch disk {}: {} MiB of encrypted swap on {}; image store {} MiB",
        s.disk.display(),
        s.bytes >> 20,
        s.mapping.display(),
        bytes >> 20
    );
    Ok(format!("size={bytes}"))
}

/// A pull error, with what to do when the store ran out of space.
fn pull_error(reference: &str, chain: String) -> String {
    let hint = if chain.contains("No space left on device") {
        format!(
            " (the image does not fit the guest's image store, {STORE_RAM_PERCENT}% of its RAM \
             plus any scratch disk: run the sandbox with more --memory, or with --scratch-disk SIZE \
             and, in a TEE guest, initdata that sets {})",
            cloister_guest_config::ALLOW_SCRATCH_DISK_KEY
        )
    } else {
        String::new()
    };
    format!("pulling {reference}: {chain}{hint}")
}

/// The sandbox's image store, created (and its tmpfs mounted) on first use.
#[derive(Debug, Default)]
pub struct Images {
    store: OnceCell<Arc<ImageStore>>,
}

/// Stands in for the KBS when initdata names none: every resource is
/// refused, naming why.
struct NoKbs;

#[async_trait::async_trait]
impl ResourceProvider for NoKbs {
    async fn resource(&self, path: &ResourcePath) -> Result<Vec<u8>, ResourceError> {
        Err(ResourceError {
            path: path.to_kbs_uri(),
            reason: "the sandbox's initdata names no KBS (aa.toml [token_configs.kbs] url)".into(),
        })
    }
}

impl Images {
    async fn store(&self, config: &GuestConfig, tee: bool) -> Result<Arc<ImageStore>, String> {
        self.store
            .get_or_try_init(|| async {
                let root = Path::new(STORE_DIR);
                std::fs::create_dir_all(root)
                    .map_err(|e| format!("creating {}: {e}", root.display()))?;
                let size = store_size(config, tee)?;
                mount(
                    Some("tmpfs"),
                    root,
                    Some("tmpfs"),
                    MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                    Some(format!("mode=0700,{size}").as_str()),
                )
                .map_err(|e| format!("mounting the image store's tmpfs: {}", e.desc()))?;
                ImageStore::new(root.to_owned())
                    .map(Arc::new)
                    .map_err(|e| format!("the image store: {e}"))
            })
            .await
            .cloned()
    }

    /// Pulls `reference` as the sandbox's settings say; `tee` is whether the
    /// guest has a TEE (then an image no policy covers and no pin names is
    /// refused). Progress goes to the agent's log.
    pub async fn pull(
        &self,
        reference: &str,
        config: &GuestConfig,
        kbs: Option<Arc<crate::kbs::GuestKbs>>,
        tee: bool,
    ) -> Result<PulledImage, String> {
        let store = self.store(config, tee).await?;
        let cfg = pull_config(reference, config, tee)
            .map_err(|e| format!("the endpoints initdata names: {e}"))?;
        // One line at each layer's start and end and every PROGRESS_STEP
        // bytes between (the console is slow under emulation); the host
        // turns them into a progress display (runtime console::Follow).
        let mut logged: Option<(String, u64)> = None;
        let mut progress = |p: Progress| {
            let due = match &logged {
                Some((layer, at)) if *layer == p.layer_digest => {
                    p.done == p.total || p.done >= at + PROGRESS_STEP
                }
                _ => true,
            };
            if due {
                crate::log!("pull {} {}/{} bytes", p.layer_digest, p.done, p.total);
                logged = Some((p.layer_digest.clone(), p.done));
            }
        };
        let r = match &kbs {
            Some(k) => store.pull(reference, &cfg, k.as_ref(), &mut progress).await,
            None => store.pull(reference, &cfg, &NoKbs, &mut progress).await,
        };
        let image = r.map_err(|e| pull_error(reference, e.chain()))?;
        crate::log!(
            "pulled {} ({}, {} layers)",
            image.reference,
            image.manifest_digest,
            image.layers.len()
        );
        Ok(image)
    }
}

/// The pull's configuration from the measured settings.
pub fn pull_config(
    reference: &str,
    c: &GuestConfig,
    tee: bool,
) -> Result<PullConfig, cloister_guest_config::ConfigError> {
    let mut cfg = PullConfig::new();
    cfg.resolve = c.guest_hosts()?;
    cfg.insecure_registries = c
        .cloister
        .insecure_registries
        .iter()
        .map(|h| h.to_string())
        .collect();
    cfg.pinned = c
        .cloister
        .pinned_images
        .iter()
        .map(|p| p.to_string())
        .collect();
    cfg.signature_policy = c.image.security_policy.clone();
    cfg.registry_auth = c.image.registry_auth.clone();
    cfg.decryption_keys = c.cloister.decryption_keys.clone();
    cfg.lookaside = lookaside_for(reference, c);
    cfg.require_policy_or_pin = tee;
    cfg.allow_devices = c.cloister.allow_devices;
    cfg.allow_setuid = c.cloister.allow_setuid;
    Ok(cfg)
}

/// The lookaside whose scope is the longest prefix of the reference's
/// `REGISTRY/REPOSITORY` (registries.d's rule: repository, then
/// namespaces, then registry).
fn lookaside_for(reference: &str, c: &GuestConfig) -> Option<String> {
    let r: Reference = reference.parse().ok()?;
    let name = format!("{}/{}", r.registry, r.repository);
    c.cloister
        .lookaside
        .iter()
        .filter(|(scope, _)| {
            name == **scope
                || name
                    .strip_prefix(scope.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|(scope, _)| scope.len())
        .map(|(_, url)| url.to_string())
}

/// The unpacked layers as overlayfs lowerdirs, top first.
pub fn lowerdirs(image: &PulledImage) -> Vec<PathBuf> {
    image.layers.iter().rev().cloned().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(doc: &str) -> GuestConfig {
        GuestConfig::from_initdata(&format!(
            "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cloister.toml\" = '''\n{doc}'''\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_pull_follows_the_measured_settings() {
        let d = "ab".repeat(32);
        let c = config(&format!(
            "insecure_registries = [\"127.0.0.1:5000\"]\npinned_images = [\"127.0.0.1:5000/app@sha256:{d}\"]\n\
             [lookaside]\n\"127.0.0.1:5000\" = \"http://127.0.0.1:8000/all\"\n\"127.0.0.1:5000/app\" = \"http://127.0.0.1:8000/app\"\n"
        ));
        let cfg = pull_config("127.0.0.1:5000/app:v1", &c, true).unwrap();
        assert_eq!(cfg.insecure_registries, ["127.0.0.1:5000"]);
        assert_eq!(cfg.pinned, [format!("127.0.0.1:5000/app@sha256:{d}")]);
        assert!(cfg.require_policy_or_pin);
        assert!(!cfg.allow_devices && !cfg.allow_setuid);
        // The repository's own scope wins over the registry's.
        assert_eq!(cfg.lookaside.as_deref(), Some("http://127.0.0.1:8000/app"));
        let other = pull_config("127.0.0.1:5000/application:v1", &c, false).unwrap();
        assert_eq!(
            other.lookaside.as_deref(),
            Some("http://127.0.0.1:8000/all")
        );
        assert!(!other.require_policy_or_pin);
        assert_eq!(
            pull_config("quay.io/x/y", &c, true).unwrap().lookaside,
            None
        );
        // Devices and setuid bits only where the measured initdata allows.
        let allowing = config("allow_devices = true\nallow_setuid = true\n");
        let cfg = pull_config("quay.io/x/y", &allowing, true).unwrap();
        assert!(cfg.allow_devices && cfg.allow_setuid);
        // Other hosts are reached by name at their forwards.
        let remote = config(&format!(
            "pinned_images = [\"registry.example/app@sha256:{d}\"]\n"
        ));
        let cfg = pull_config("registry.example/app", &remote, true).unwrap();
        assert_eq!(
            cfg.resolve,
            [(
                "registry.example".to_owned(),
                "10.0.2.101:0".parse().unwrap()
            )]
        );
    }
}
