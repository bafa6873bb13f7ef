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

/// Loads every module of the list at `list_path`, logging each failure, and
/// returns the names of modules now loaded. A missing list is not an error
/// (a kernel with everything built in needs none).
pub fn load_all(list_path: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(list_path) {
        Ok(t) => t,
        Err(e) => {
            crate::log!(
                "no module list at {}: {e}; loading none",
                list_path.display()
            );
            return Vec::new();
        }
    };
    let entries = match parse_list(&text) {
        Ok(e) => e,
        Err(e) => {
            crate::log!("{e}; loading no modules");
            return Vec::new();
        }
    };
    let mut loaded = Vec::new();
    for entry in &entries {
        let name = module_name(&entry.path);
        match classify(entry, load_one(&entry.path)) {
            Outcome::Loaded | Outcome::AlreadyLoaded => loaded.push(name),
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
