//! Which TEEs this host can launch, and why not: SEV-SNP needs `/dev/sev`
//! and KVM with SNP enabled (`kvm_amd` parameter `sev_snp`); TDX needs KVM
//! with TDX enabled (`kvm_intel` parameter `tdx`); CCA needs an arm64 host
//! whose KVM reports the RMI capability. `sim` and `none` need nothing.

use std::path::{Path, PathBuf};

use crate::{HostProbe, PrepareError, TeeKind};

/// Where the probes look (a root other than `/` in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEnv {
    /// Filesystem root.
    pub root: PathBuf,
    /// CPU architecture (`std::env::consts::ARCH`).
    pub arch: &'static str,
}

impl ProbeEnv {
    /// This host.
    pub fn host() -> Self {
        Self {
            root: PathBuf::from("/"),
            arch: std::env::consts::ARCH,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn param_on(&self, p: &str) -> Option<bool> {
        std::fs::read_to_string(self.path(p))
            .ok()
            .map(|v| matches!(v.trim(), "Y" | "y" | "1"))
    }
}

fn probe(tee: TeeKind, result: Result<String, (String, String)>) -> HostProbe {
    match result {
        Ok(detail) => HostProbe {
            name: format!("TEE {tee}"),
            ok: true,
            detail,
            fix: None,
        },
        Err((detail, fix)) => HostProbe {
            name: format!("TEE {tee}"),
            ok: false,
            detail,
            fix: Some(fix),
        },
    }
}

fn snp(env: &ProbeEnv) -> Result<String, (String, String)> {
    if env.arch != "x86_64" {
        return Err((
            format!("host is {}, SEV-SNP needs x86_64", env.arch),
            "run on an AMD EPYC host".into(),
        ));
    }
    if !env.path("/dev/sev").exists() {
        return Err((
            "/dev/sev is absent".into(),
            "use an AMD EPYC host with SEV-SNP enabled in the BIOS and load ccp/kvm_amd".into(),
        ));
    }
    match env.param_on("/sys/module/kvm_amd/parameters/sev_snp") {
        Some(true) => Ok("/dev/sev present, kvm_amd sev_snp=Y".into()),
        Some(false) => Err((
            "kvm_amd has sev_snp=N".into(),
            "reload kvm_amd with sev_snp=1 (needs SNP firmware and a 6.11+ host kernel)".into(),
        )),
        None => Err((
            "kvm_amd is not loaded or has no sev_snp parameter".into(),
            "load kvm_amd from a 6.11+ kernel".into(),
        )),
    }
}

fn tdx(env: &ProbeEnv) -> Result<String, (String, String)> {
    if env.arch != "x86_64" {
        return Err((
            format!("host is {}, TDX needs x86_64", env.arch),
            "run on an Intel Xeon host with TDX".into(),
        ));
    }
    match env.param_on("/sys/module/kvm_intel/parameters/tdx") {
        Some(true) => Ok("kvm_intel tdx=Y".into()),
        Some(false) => Err((
            "kvm_intel has tdx=N".into(),
            "enable TDX in the BIOS and reload kvm_intel with tdx=1".into(),
        )),
        None => Err((
            "kvm_intel is not loaded or has no tdx parameter".into(),
            "use an Intel Xeon host with a TDX-capable 6.16+ kernel".into(),
        )),
    }
}

fn cca(env: &ProbeEnv) -> Result<String, (String, String)> {
    if env.arch != "aarch64" {
        return Err((
            format!("host is {}, Arm CCA realms need arm64", env.arch),
            "run on an Armv9-A host with RME and an RMM-enabled firmware".into(),
        ));
    }
    if !env.path("/dev/kvm").exists() {
        return Err((
            "/dev/kvm is absent".into(),
            "enable KVM in the host kernel".into(),
        ));
    }
    if env.root != Path::new("/") {
        return Err((
            "RMI capability can only be queried on the real host".into(),
            "run on the host".into(),
        ));
    }
    match super::kvm_rmi::sys::check_rmi_cap() {
        Ok(true) => Ok("KVM reports KVM_CAP_ARM_RMI".into()),
        Ok(false) => Err((
            "KVM does not report KVM_CAP_ARM_RMI".into(),
            format!(
                "boot a host kernel with the {} series and an RMM in firmware",
                super::kvm_rmi::uapi::SERIES
            ),
        )),
        Err(e) => Err((
            format!("KVM_CHECK_EXTENSION failed: {e}"),
            "check /dev/kvm permissions".into(),
        )),
    }
}

/// The TEE probes for `env`.
pub fn tee_probes_in(env: &ProbeEnv) -> Vec<HostProbe> {
    vec![
        probe(TeeKind::Snp, snp(env)),
        probe(TeeKind::Tdx, tdx(env)),
        probe(TeeKind::Cca, cca(env)),
        probe(
            TeeKind::Sim,
            Ok("software RMM; needs nothing from the host".into()),
        ),
    ]
}

/// The TEE probes for this host, as `cloister check` prints them.
pub fn tee_probes() -> Vec<HostProbe> {
    tee_probes_in(&ProbeEnv::host())
}

/// Fails with the probe's reason and fix unless this host can launch `tee`.
pub fn require(tee: TeeKind) -> Result<(), PrepareError> {
    require_in(&ProbeEnv::host(), tee)
}

/// [`require`] under `env`.
pub fn require_in(env: &ProbeEnv, tee: TeeKind) -> Result<(), PrepareError> {
    let r = match tee {
        TeeKind::Snp => snp(env),
        TeeKind::Tdx => tdx(env),
        TeeKind::Cca => cca(env),
        TeeKind::Sim | TeeKind::None => return Ok(()),
    };
    r.map(|_| ())
        .map_err(|(detail, fix)| PrepareError::Unsupported {
            tee,
            reason: format!("{detail}; fix: {fix}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(files: &[(&str, &str)], arch: &'static str) -> (tempfile::TempDir, ProbeEnv) {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = d.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        let root = d.path().to_path_buf();
        (d, ProbeEnv { root, arch })
    }

    #[test]
    fn snp_needs_dev_sev_and_kvm_param() {
        let (_d, e) = env(
            &[
                ("/dev/sev", ""),
                ("/sys/module/kvm_amd/parameters/sev_snp", "Y\n"),
            ],
            "x86_64",
        );
        assert!(require_in(&e, TeeKind::Snp).is_ok());
        let (_d, e) = env(
            &[
                ("/dev/sev", ""),
                ("/sys/module/kvm_amd/parameters/sev_snp", "N\n"),
            ],
            "x86_64",
        );
        let err = require_in(&e, TeeKind::Snp).unwrap_err().to_string();
        assert!(err.contains("sev_snp=N") && err.contains("fix:"), "{err}");
        let (_d, e) = env(&[], "x86_64");
        assert!(require_in(&e, TeeKind::Snp)
            .unwrap_err()
            .to_string()
            .contains("/dev/sev"));
    }

    #[test]
    fn tdx_needs_kvm_intel_tdx() {
        let (_d, e) = env(&[("/sys/module/kvm_intel/parameters/tdx", "Y\n")], "x86_64");
        assert!(require_in(&e, TeeKind::Tdx).is_ok());
        let (_d, e) = env(&[], "x86_64");
        assert!(require_in(&e, TeeKind::Tdx)
            .unwrap_err()
            .to_string()
            .contains("kvm_intel"));
    }

    #[test]
    fn cca_needs_arm64() {
        let (_d, e) = env(&[], "x86_64");
        assert!(require_in(&e, TeeKind::Cca)
            .unwrap_err()
            .to_string()
            .contains("arm64"));
        let probes = tee_probes_in(&e);
        assert_eq!(probes.len(), 4);
        assert!(probes.iter().all(|p| p.ok == p.fix.is_none()));
        assert!(probes.iter().any(|p| p.name == "TEE sim" && p.ok));
    }

    #[test]
    fn this_host_reports_every_tee() {
        // The machines here have no TEE hardware: every hardware TEE must
        // say why not, with a fix.
        let probes = tee_probes();
        for p in &probes {
            if !p.ok {
                assert!(p.fix.is_some(), "{p:?}");
            }
        }
    }
}
