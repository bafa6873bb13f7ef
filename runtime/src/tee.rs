//! Which host backend serves which TEE: every TEE goes through
//! `cloister_tee::host::backend`; a backend the host cannot launch refuses in
//! `prepare` with the probe's reason.

use cloister_tee::host::{backend, HostOptions};
use cloister_tee::{HostBackend, PrepareError, TeeKind};

/// The host backend for `kind`. Backends check the host when they prepare a
/// launch, so this never fails today; the `Result` leaves room for backends
/// that a build leaves out.
pub fn host_backend(kind: TeeKind) -> Result<Box<dyn HostBackend>, PrepareError> {
    Ok(backend(kind, &HostOptions::from_env()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_tee::Launch;

    #[test]
    fn every_tee_has_a_backend_of_its_kind() {
        for kind in [
            TeeKind::None,
            TeeKind::Sim,
            TeeKind::Cca,
            TeeKind::Snp,
            TeeKind::Tdx,
        ] {
            assert_eq!(host_backend(kind).unwrap().kind(), kind);
        }
    }

    #[test]
    fn a_tee_this_host_lacks_is_refused_with_the_reason() {
        // No machine that runs this suite is an arm64 RME host.
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch {
            kernel: dir.path().join("k"),
            initramfs: dir.path().join("i"),
            cmdline: String::new(),
            vcpus: 1,
            memory_mib: 512,
            initdata: None,
            firmware: None,
        };
        let err = host_backend(TeeKind::Cca)
            .unwrap()
            .prepare(&launch, dir.path())
            .unwrap_err();
        assert!(
            matches!(
                err,
                PrepareError::Unsupported {
                    tee: TeeKind::Cca,
                    ..
                }
            ),
            "{err}"
        );
    }
}
