//! The host's proof that it is the runtime that launched the guest: every
//! host connection to the agent starts with a preamble of [`MAGIC`] and the
//! per-sandbox secret ([`SECRET_LEN`] random bytes). The runtime keeps the
//! secret in a 0600 file in its 0700 state dir and the VMM hands the guest
//! that file (QEMU: fw_cfg [`crate::channel::AGENT_SECRET_FW_CFG`]), so the
//! secret is never on a command line that `ps` shows. Another local user
//! who reaches the agent's port (vsock is open to every local user) cannot
//! produce it, and the agent drops the connection before ttrpc sees a byte.
//!
//! Both ends use this module: the host builds the preamble, the agent (and
//! the runtime's fake VMM) check it.

/// The kernel command line word by which the runtime tells the agent that
/// it must require the preamble, with the secret from fw_cfg (a flag only:
/// the secret itself never goes on the command line). An agent told so that
/// cannot read the secret refuses to serve.
pub const CMDLINE_FLAG: &str = "cloister.auth=fw_cfg";

/// The preamble's first bytes (a version of the preamble format).
pub const MAGIC: &[u8; 8] = b"CLSTAUT1";
/// The secret's length.
pub const SECRET_LEN: usize = 32;
/// The preamble's length.
pub const PREAMBLE_LEN: usize = MAGIC.len() + SECRET_LEN;

/// A per-sandbox secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret or a preamble was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The secret file has the wrong length.
    #[error("the agent secret is {0} bytes, expected {SECRET_LEN}")]
    Length(usize),
    /// The connection did not start with the preamble.
    #[error(
        "the connection does not start with the {} preamble",
        String::from_utf8_lossy(MAGIC)
    )]
    NoPreamble,
    /// The secret did not match.
    #[error("the connection's secret is not this sandbox's")]
    WrongSecret,
}

impl Secret {
    /// A secret from its bytes (e.g. the fw_cfg file).
    pub fn from_bytes(b: &[u8]) -> Result<Secret, AuthError> {
        let arr: [u8; SECRET_LEN] = b.try_into().map_err(|_| AuthError::Length(b.len()))?;
        Ok(Secret(arr))
    }

    /// The raw bytes (what the host writes to the secret file).
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// The preamble a host sends first on every connection.
    pub fn preamble(&self) -> [u8; PREAMBLE_LEN] {
        let mut p = [0u8; PREAMBLE_LEN];
        p[..MAGIC.len()].copy_from_slice(MAGIC);
        p[MAGIC.len()..].copy_from_slice(&self.0);
        p
    }

    /// Checks a received preamble, comparing the secret in constant time.
    pub fn check(&self, preamble: &[u8; PREAMBLE_LEN]) -> Result<(), AuthError> {
        if &preamble[..MAGIC.len()] != MAGIC {
            return Err(AuthError::NoPreamble);
        }
        let diff = preamble[MAGIC.len()..]
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Ok(())
        } else {
            Err(AuthError::WrongSecret)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_preamble_passes() {
        let s = Secret::from_bytes(&[7; 32]).unwrap();
        assert_eq!(s.check(&s.preamble()), Ok(()));
        let other = Secret::from_bytes(&[8; 32]).unwrap();
        assert_eq!(s.check(&other.preamble()), Err(AuthError::WrongSecret));
        let mut ttrpc_first = [0u8; PREAMBLE_LEN];
        ttrpc_first[..4].copy_from_slice(&[0, 0, 0, 20]);
        assert_eq!(s.check(&ttrpc_first), Err(AuthError::NoPreamble));
        assert_eq!(Secret::from_bytes(&[1; 31]), Err(AuthError::Length(31)));
        assert_eq!(format!("{s:?}"), "Secret(..)", "never printed");
    }
}
