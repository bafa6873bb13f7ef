//! Fixed-size digest newtypes shared by the calculators.
//!
//! A `Digest<N>` is exactly `N` bytes; it prints as lower-case hex and parses
//! from hex, rejecting any other length with a reason.

use std::fmt;
use std::str::FromStr;

/// Errors from parsing a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    /// The text is not hexadecimal.
    #[error("not hexadecimal: {0}")]
    NotHex(String),
    /// The text decodes to the wrong number of bytes.
    #[error("wrong digest length: expected {expected} bytes, found {found}")]
    Length {
        /// Bytes the digest type holds.
        expected: usize,
        /// Bytes found in the input.
        found: usize,
    },
}

/// A digest of exactly `N` bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest<const N: usize>(pub [u8; N]);

/// SHA-256 digest (32 bytes).
pub type Sha256Digest = Digest<32>;
/// SHA-384 digest (48 bytes): SNP launch digest, TDX MRTD/RTMR.
pub type Sha384Digest = Digest<48>;
/// SHA-512 digest (64 bytes).
pub type Sha512Digest = Digest<64>;

impl<const N: usize> Digest<N> {
    /// All-zero value (initial state of an RTMR or REM).
    pub const ZERO: Self = Self([0; N]);

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse from bytes of exactly `N`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DigestParseError> {
        let arr: [u8; N] = bytes.try_into().map_err(|_| DigestParseError::Length {
            expected: N,
            found: bytes.len(),
        })?;
        Ok(Self(arr))
    }
}

impl<const N: usize> Default for Digest<N> {
    fn default() -> Self {
        Self::ZERO
    }
}

impl<const N: usize> fmt::Display for Digest<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<const N: usize> fmt::Debug for Digest<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest<{N}>({})", self.to_hex())
    }
}

impl<const N: usize> FromStr for Digest<N> {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s.trim()).map_err(|e| DigestParseError::NotHex(e.to_string()))?;
        Self::from_slice(&bytes)
    }
}

impl<const N: usize> AsRef<[u8]> for Digest<N> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_hex() {
        let d: Sha256Digest = "00"
            .repeat(31)
            .chars()
            .chain("ff".chars())
            .collect::<String>()
            .parse()
            .unwrap();
        assert_eq!(d.0[31], 0xff);
        assert_eq!(d.to_string().len(), 64);
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        assert_eq!(
            "abcd".parse::<Sha384Digest>(),
            Err(DigestParseError::Length {
                expected: 48,
                found: 2
            })
        );
        assert!(matches!(
            "zz".parse::<Sha256Digest>(),
            Err(DigestParseError::NotHex(_))
        ));
    }
}
