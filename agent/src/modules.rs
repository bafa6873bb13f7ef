//! Kernel modules listed by the initramfs (`/etc/cloister/modules.load`,
//! written by cloister-firmware): one absolute path per line, dependencies
//! first; `#` lines are comments and a `# tee-only` comment marks the next
//! module as one that fails with ENODEV outside its TEE.

use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// Where the initramfs puts the list.
pub const MODULES_LOAD_PATH: &str = "/etc/cloister/modules.load";

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    pub path: PathBuf,
    /// Preceded by `# tee-only`: ENODEV is expected outside the TEE.
    pub tee_only: bool,
}

/// A malformed list.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{MODULES_LOAD_PATH} line {line}: {found:?} is not an absolute path to a .ko file")]
pub struct ListError {
    pub line: usize,
    pub found: String,
}

/// Parses the list.
pub fn parse_list(text: &str) -> Result<Vec<ModuleEntry>, ListError> {
    let mut out = Vec::new();
    let mut tee_only = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if comment.trim() == "tee-only" {
                tee_only = true;
            }
            continue;
        }
        if !line.starts_with('/') || !line.ends_with(".ko") {
            return Err(ListError {
                line: i + 1,
                found: line.to_string(),
            });
        }
        out.push(ModuleEntry {
            path: PathBuf::from(line),
            tee_only,
        });
        tee_only = false;
    }
    Ok(out)
}

/// The module name of a path as the kernel spells it
/// (`/x/virtio-rng.ko` → `virtio_rng`).
pub fn module_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().replace('-', "_"))
        .unwrap_or_default()
}

/// What happened to one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Loaded,
    AlreadyLoaded,
    /// A TEE-only module outside its TEE.
    NotThisTee,
    Failed(String),
}

/// Classifies the result of loading one module.
pub fn classify(entry: &ModuleEntry, result: Result<(), Errno>) -> Outcome {
    match result {
        Ok(()) => Outcome::Loaded,
        Err(Errno::EEXIST) => Outcome::AlreadyLoaded,
        Err(Errno::ENODEV) if entry.tee_only => Outcome::NotThisTee,
        Err(e) => Outcome::Failed(e.desc().to_string()),
    }
}

fn load_one(path: &Path) -> Result<(), Errno> {
    let file = File::open(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let no_params: &CStr = c"";
    finit_module(&file, no_params, ModuleInitFlags::empty())
}

/// What the background loader has done so far.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Names of the modules loaded (or already loaded), in order.
    pub loaded: Vec<String>,
    /// Whether the whole list has been worked through.
    pub done: bool,
}

/// Modules load on a thread of their own while the agent already serves:
/// the host's Check does not wait for them, and each request that needs a
/// module (containers, evidence) waits until the list is done.
#[derive(Debug, Clone)]
pub struct Loader {
    rx: tokio::sync::watch::Receiver<Progress>,
}

impl Loader {
    /// Starts loading the list at `list_path` in the background.
    pub fn spawn(list_path: PathBuf) -> Loader {
        let (tx, rx) = tokio::sync::watch::channel(Progress::default());
        let thread_tx = tx.clone();
        let thread_path = list_path.clone();
        let spawned = std::thread::Builder::new()
            .name("modules".into())
            .spawn(move || load_and_publish(&thread_path, &thread_tx));
        if let Err(e) = spawned {
            crate::log!("cannot start the module loader thread ({e}); loading inline");
            load_and_publish(&list_path, &tx);
        }
        Loader { rx }
    }

    /// A loader with nothing to load (not PID 1, or tests).
    pub fn done() -> Loader {
        let (_tx, rx) = tokio::sync::watch::channel(Progress {
            loaded: Vec::new(),
            done: true,
        });
        Loader { rx }
    }

    /// Waits until the whole list is worked through; returns what loaded.
    pub async fn wait_done(&self) -> Vec<String> {
        self.wait_until(|p| p.done).await.loaded
    }

    /// Waits until module `name` is loaded or the list is done.
    pub async fn wait_for(&self, name: &str) {
        self.wait_until(|p| p.done || p.loaded.iter().any(|n| n == name))
            .await;
    }

    async fn wait_until(&self, cond: impl FnMut(&Progress) -> bool) -> Progress {
        let mut rx = self.rx.clone();
        let waited = rx.wait_for(cond).await.map(|p| p.clone());
        // The sender is gone only after `done` was set (or never existed for
        // `Loader::done`): the last value is final.
        waited.unwrap_or_else(|_| rx.borrow().clone())
    }
}

/// Loads the list, publishing each module as it loads, then `done`.
fn load_and_publish(list_path: &Path, tx: &tokio::sync::watch::Sender<Progress>) {
    let n = load_all_with(list_path, |name| {
        tx.send_modify(|p| p.loaded.push(name.to_owned()))
    });
    crate::log!("loaded {n} modules");
    tx.send_modify(|p| p.done = true);
}

/// Loads every module of the list at `list_path` in order, logging each
/// failure and calling `on_loaded` with each loaded module's name; returns
/// how many loaded. A missing list is not an error (a kernel with everything
/// built in needs none).
fn load_all_with(list_path: &Path, mut on_loaded: impl FnMut(&str)) -> usize {
    let text = match std::fs::read_to_string(list_path) {
        Ok(t) => t,
        Err(e) => {
            crate::log!(
                "no module list at {}: {e}; loading none",
                list_path.display()
            );
            return 0;
        }
    };
    let entries = match parse_list(&text) {
        Ok(e) => e,
        Err(e) => {
            crate::log!("{e}; loading no modules");
            return 0;
        }
    };
    let mut loaded = 0;
    for entry in &entries {
        let name = module_name(&entry.path);
        match classify(entry, load_one(&entry.path)) {
            Outcome::Loaded | Outcome::AlreadyLoaded => {
                on_loaded(&name);
                loaded += 1;
            }
            Outcome::NotThisTee => crate::log!("module {name}: not this TEE (ENODEV), skipped"),
            Outcome::Failed(why) => {
                crate::log!(
                    "module {name} ({}): load failed: {why}",
                    entry.path.display()
                )
            }
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_firmware_format() {
        let text = "# modules for the cloister agent\n\
                    /lib/modules/6.12/kernel/drivers/virtio/virtio_pci.ko\n\
                    \n\
                    # tee-only\n\
                    /lib/modules/6.12/kernel/drivers/virt/coco/sev-guest/sev-guest.ko\n\
                    /lib/modules/6.12/kernel/fs/overlayfs/overlay.ko\n";
        let list = parse_list(text).unwrap();
        assert_eq!(list.len(), 3);
        assert!(!list[0].tee_only);
        assert!(list[1].tee_only);
        assert!(
            !list[2].tee_only,
            "tee-only applies to the next module only"
        );
        assert_eq!(module_name(&list[0].path), "virtio_pci");
        assert_eq!(module_name(&list[1].path), "sev_guest");
    }

    #[test]
    fn rejects_relative_or_non_module_lines() {
        for bad in [
            "virtio_pci.ko",
            "/lib/modules/x/virtio_pci.ko.xz",
            "insmod /a.ko",
        ] {
            let err = parse_list(bad).unwrap_err();
            assert_eq!(err.line, 1);
            assert!(err.to_string().contains("absolute path"), "{err}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn background_loader_finishes_and_wakes_waiters() {
        let dir = tempfile::tempdir().unwrap();
        // A module that cannot load (not a module file) is logged and
        // skipped; the loader still finishes.
        let list = dir.path().join("modules.load");
        std::fs::write(&list, format!("# test\n{}/nope.ko\n", dir.path().display())).unwrap();
        let loader = Loader::spawn(list);
        loader.wait_for("vmw_vsock_virtio_transport").await;
        assert!(loader.wait_done().await.is_empty());
        // A missing list: nothing to load, done at once.
        let loader = Loader::spawn(dir.path().join("absent"));
        assert!(loader.wait_done().await.is_empty());
        assert!(Loader::done().wait_done().await.is_empty());
    }

    #[test]
    fn outcome_mapping() {
        let plain = ModuleEntry {
            path: "/a.ko".into(),
            tee_only: false,
        };
        let tee = ModuleEntry {
            path: "/b.ko".into(),
            tee_only: true,
        };
        assert_eq!(classify(&plain, Ok(())), Outcome::Loaded);
        assert_eq!(classify(&plain, Err(Errno::EEXIST)), Outcome::AlreadyLoaded);
        assert_eq!(classify(&tee, Err(Errno::ENODEV)), Outcome::NotThisTee);
        assert!(matches!(
            classify(&plain, Err(Errno::ENODEV)),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            classify(&tee, Err(Errno::ENOEXEC)),
            Outcome::Failed(_)
        ));
    }
}
