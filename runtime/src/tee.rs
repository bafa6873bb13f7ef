//! Which host backend serves which TEE. Adding a backend is one match arm.

use cloister_tee::{HostBackend, NoTee, PrepareError, TeeKind};

/// The host backend for `kind`, or why this build cannot launch it.
pub fn host_backend(kind: TeeKind) -> Result<Box<dyn HostBackend>, PrepareError> {
    match kind {
        TeeKind::None => Ok(Box::new(NoTee)),
        other => Err(PrepareError::Unsupported {
            tee: other,
            reason: "no host backend for it is built into this cloister yet; use --tee none"
                .to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_served_and_others_name_the_fix() {
        assert_eq!(host_backend(TeeKind::None).unwrap().kind(), TeeKind::None);
        let err = host_backend(TeeKind::Snp).err().unwrap().to_string();
        assert!(err.contains("snp") && err.contains("--tee none"), "{err}");
    }
}
