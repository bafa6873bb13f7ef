//! Accelerator probe: KVM where the host can run a stock guest kernel, TCG
//! where it cannot, and the reason either way.
//!
//! `/dev/kvm` alone proves little: on some hosts it is backed by `kvm_pvm`
//! (Pagetable-based Virtual Machine), which runs only PVM-enabled guest
//! kernels; a stock kernel hangs under it. The probe looks at which vendor
//! module registered KVM (`/sys/module/kvm_intel`, `kvm_amd`, `kvm_pvm`) and
//! asks the device for its API version.

use std::fmt;
use std::fs::OpenOptions;
use std::path::Path;

/// Which QEMU accelerator a sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

impl Accel {
    /// QEMU's name for it (`-accel NAME`).
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The probe's decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelProbe {
    /// The accelerator to use.
    pub accel: Accel,
    /// Why, in one sentence a user can act on.
    pub reason: String,
}

/// The KVM API version every Linux since 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;

/// Probes this host (`/dev/kvm`, `/sys/module`).
pub fn probe() -> AccelProbe {
    probe_at(Path::new("/dev/kvm"), Path::new("/sys/module"), |dev| {
        let f = OpenOptions::new().read(true).write(true).open(dev)?;
        crate::sys::kvm_api_version(&f)
    })
}

/// The probe with its inputs injected: the device path, the sysfs module
/// directory, and a function that opens the device and returns its API
/// version.
pub fn probe_at(
    dev: &Path,
    sys_module: &Path,
    api_version: impl Fn(&Path) -> std::io::Result<i32>,
) -> AccelProbe {
    let tcg = |reason: String| AccelProbe {
        accel: Accel::Tcg,
        reason,
    };
    if !dev.exists() {
        return tcg(format!(
            "{} does not exist (KVM is not loaded or not exposed to this host)",
            dev.display()
        ));
    }
    match api_version(dev) {
        Err(e) => return tcg(format!("cannot use {}: {e}", dev.display())),
        Ok(v) if v != KVM_API_VERSION => {
            return tcg(format!(
                "{} reports KVM API version {v}, expected {KVM_API_VERSION}",
                dev.display()
            ))
        }
        Ok(_) => {}
    }
    let has = |m: &str| -> bool { sys_module.join(m).exists() };
    let vendor: Vec<&str> = ["kvm_intel", "kvm_amd"]
        .into_iter()
        .filter(|m| has(m))
        .collect();
    if has("kvm_pvm") {
        return tcg(format!(
            "{} is backed by kvm_pvm, which runs only PVM guest kernels; a stock guest kernel \
             hangs under it",
            dev.display()
        ));
    }
    match vendor.first() {
        Some(m) => AccelProbe {
            accel: Accel::Kvm,
            reason: format!(
                "{} is backed by {m} (API version {KVM_API_VERSION})",
                dev.display()
            ),
        },
        None => tcg(format!(
            "{} exists but neither kvm_intel nor kvm_amd is loaded ({} lists no vendor module)",
            dev.display(),
            sys_module.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn host(modules: &[&str], with_dev: bool) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("kvm");
        if with_dev {
            std::fs::write(&dev, b"").unwrap();
        }
        let sys = tmp.path().join("module");
        std::fs::create_dir(&sys).unwrap();
        for m in modules {
            std::fs::create_dir(sys.join(m)).unwrap();
        }
        (tmp, dev, sys)
    }

    #[test]
    fn decisions_as_a_table() {
        let cases: &[(&[&str], bool, i32, Accel, &str)] = &[
            (&["kvm", "kvm_intel"], true, 12, Accel::Kvm, "kvm_intel"),
            (&["kvm", "kvm_amd"], true, 12, Accel::Kvm, "kvm_amd"),
            (&["kvm", "kvm_pvm"], true, 12, Accel::Tcg, "kvm_pvm"),
            (
                &["kvm", "kvm_pvm", "kvm_intel"],
                true,
                12,
                Accel::Tcg,
                "PVM guest",
            ),
            (
                &["kvm"],
                true,
                12,
                Accel::Tcg,
                "neither kvm_intel nor kvm_amd",
            ),
            (&["kvm_intel"], false, 12, Accel::Tcg, "does not exist"),
            (&["kvm_intel"], true, 11, Accel::Tcg, "API version 11"),
        ];
        for (mods, with_dev, ver, want, why) in cases {
            let (_tmp, dev, sys) = host(mods, *with_dev);
            let p = probe_at(&dev, &sys, |_| Ok(*ver));
            assert_eq!(p.accel, *want, "{mods:?}: {}", p.reason);
            assert!(p.reason.contains(why), "{mods:?}: {}", p.reason);
        }
    }

    #[test]
    fn an_unopenable_device_falls_back_to_tcg_with_the_error() {
        let (_tmp, dev, sys) = host(&["kvm_intel"], true);
        let p = probe_at(&dev, &sys, |_| {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        });
        assert_eq!(p.accel, Accel::Tcg);
        assert!(p.reason.contains("cannot use"), "{}", p.reason);
    }

    #[test]
    fn this_host_gets_an_answer_with_a_reason() {
        let p = probe();
        assert!(!p.reason.is_empty());
    }
}
