//! Initdata digests, as the Trustee/CoCo initdata specification defines them.
//!
//! Initdata is a TOML document (`version = "0.1.0"`, `algorithm = "sha256" |
//! "sha384" | "sha512"`, a `[data]` table). Its digest is the named hash over
//! the document's exact bytes. The digest is bound into a TEE field of fixed
//! size: zero-padded when shorter, truncated when longer — SNP HOST_DATA
//! (32 B), TDX MRCONFIGID (48 B), CCA Realm Personalization Value (64 B).

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::TeeKind;

/// The only initdata specification version there is.
pub const INITDATA_VERSION: &str = "0.1.0";

/// A hash algorithm initdata may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl HashAlgo {
    /// The name used in initdata and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha384 => "sha384",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlgo::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlgo::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlgo::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// Output size in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha384 => 48,
            HashAlgo::Sha512 => 64,
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown hash algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash algorithm {0:?}: expected sha256, sha384 or sha512")]
pub struct UnknownHashAlgo(pub String);

impl FromStr for HashAlgo {
    type Err = UnknownHashAlgo;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" | "sha-256" => Ok(HashAlgo::Sha256),
            "sha384" | "sha-384" => Ok(HashAlgo::Sha384),
            "sha512" | "sha-512" => Ok(HashAlgo::Sha512),
            other => Err(UnknownHashAlgo(other.to_owned())),
        }
    }
}

/// Why an initdata document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitdataError {
    /// Not UTF-8 TOML, or a required field is missing or mistyped.
    #[error("initdata is not valid TOML with `version`, `algorithm` and `[data]`: {0}")]
    Toml(String),
    /// A version other than 0.1.0.
    #[error("initdata version {0:?} is not supported: expected \"0.1.0\"")]
    Version(String),
    /// An algorithm other than sha256/384/512.
    #[error("initdata algorithm: {0}")]
    Algorithm(#[from] UnknownHashAlgo),
}

#[derive(serde::Deserialize)]
struct Header {
    version: String,
    algorithm: String,
    #[allow(dead_code)]
    data: toml::Table,
}

/// The digest of an initdata document, before fitting to a TEE field.
#[derive(Clone, PartialEq, Eq)]
pub struct InitdataDigest {
    algo: HashAlgo,
    bytes: Vec<u8>,
}

impl fmt::Debug for InitdataDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InitdataDigest({}:{})", self.algo, hex(&self.bytes))
    }
}

impl InitdataDigest {
    /// Parses `doc` (checking version and algorithm) and hashes its bytes
    /// with the algorithm it names.
    pub fn of(doc: &[u8]) -> Result<Self, InitdataError> {
        let text =
            std::str::from_utf8(doc).map_err(|e| InitdataError::Toml(format!("not UTF-8: {e}")))?;
        let header: Header =
            toml::from_str(text).map_err(|e| InitdataError::Toml(e.message().to_owned()))?;
        if header.version != INITDATA_VERSION {
            return Err(InitdataError::Version(header.version));
        }
        let algo: HashAlgo = header.algorithm.parse()?;
        Ok(Self {
            algo,
            bytes: algo.digest(doc),
        })
    }

    /// The algorithm the document named.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The digest fitted to `len` bytes: zero-padded or truncated.
    pub fn fitted(&self, len: usize) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.resize(len, 0);
        out
    }

    /// The value the TEE reports for this initdata: HOST_DATA (SNP, 32 B),
    /// MRCONFIGID (TDX, 48 B) or RPV (CCA and sim, 64 B). `None` has no field.
    pub fn for_tee(&self, tee: TeeKind) -> Option<Vec<u8>> {
        tee_field_len(tee).map(|len| self.fitted(len))
    }
}

/// The size of the TEE field initdata is bound into, if the TEE has one.
pub fn tee_field_len(tee: TeeKind) -> Option<usize> {
    match tee {
        TeeKind::None => None,
        TeeKind::Snp => Some(32),
        TeeKind::Tdx => Some(48),
        TeeKind::Cca | TeeKind::Sim => Some(64),
    }
}

/// The TEE field value when a launch has no initdata: all zeros.
pub fn empty_field(tee: TeeKind) -> Option<Vec<u8>> {
    tee_field_len(tee).map(|len| vec![0; len])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "algorithm = \"sha384\"\nversion = \"0.1.0\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\n'''\n";

    #[test]
    fn digest_is_over_exact_bytes_with_named_algorithm() {
        let d = InitdataDigest::of(DOC.as_bytes()).unwrap();
        assert_eq!(d.algo(), HashAlgo::Sha384);
        assert_eq!(d.as_bytes(), &sha2::Sha384::digest(DOC.as_bytes())[..]);
        // A whitespace change is a different document.
        let other = InitdataDigest::of(format!("{DOC}\n").as_bytes()).unwrap();
        assert_ne!(d, other);
    }

    #[test]
    fn fitted_pads_and_truncates_per_tee() {
        let d = InitdataDigest::of(DOC.as_bytes()).unwrap();
        let snp = d.for_tee(TeeKind::Snp).unwrap();
        assert_eq!(snp, d.as_bytes()[..32]);
        let tdx = d.for_tee(TeeKind::Tdx).unwrap();
        assert_eq!(tdx, d.as_bytes());
        let cca = d.for_tee(TeeKind::Cca).unwrap();
        assert_eq!(&cca[..48], d.as_bytes());
        assert_eq!(&cca[48..], &[0u8; 16]);
        assert_eq!(d.for_tee(TeeKind::None), None);
    }

    #[test]
    fn rejects_bad_documents_with_reason() {
        let cases: &[(&str, &str)] = &[
            ("algorithm = \"md5\"\nversion = \"0.1.0\"\n[data]\n", "md5"),
            (
                "algorithm = \"sha256\"\nversion = \"0.2.0\"\n[data]\n",
                "0.2.0",
            ),
            ("algorithm = \"sha256\"\n[data]\n", "version"),
            ("not toml [", "TOML"),
        ];
        for (doc, needle) in cases {
            let err = InitdataDigest::of(doc.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{doc:?}: {err}");
        }
    }

    #[test]
    fn all_algorithms() {
        for (name, len) in [("sha256", 32), ("sha384", 48), ("sha512", 64)] {
            let doc = format!("algorithm = \"{name}\"\nversion = \"0.1.0\"\n[data]\n");
            let d = InitdataDigest::of(doc.as_bytes()).unwrap();
            assert_eq!(d.as_bytes().len(), len);
            assert_eq!(d.algo().output_len(), len);
        }
    }
}
