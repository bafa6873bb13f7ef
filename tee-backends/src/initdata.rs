//! Initdata: the one parser and digest of the Trustee/CoCo initdata document,
//! used by the runtime (to set the TEE launch field), the agent (to check it
//! against what the TEE reports and read the policy from it) and the KBS (to
//! compare it with the evidence). There is no second implementation.
//!
//! The rule (Trustee's `kbs/docs/initdata.md` and its KBS/AS code, Kata's
//! `kata-types` initdata module):
//!
//! - The document is TOML with `version = "0.1.0"`, `algorithm` one of
//!   exactly `sha256`, `sha384` or `sha512` (lower case; there is no default:
//!   Trustee's KBS fails to parse a document without it), and a `[data]`
//!   table whose values are strings (file name → file text, e.g.
//!   `"policy.rego"`, `"aa.toml"`, `"cdh.toml"`).
//! - The digest is the named hash over the document's exact bytes as given
//!   (never over a re-serialisation).
//! - The digest is bound into a TEE field of fixed size: zero-padded when
//!   shorter, truncated when longer — SNP HOST_DATA (32 B), TDX MRCONFIGID
//!   (48 B), CCA Realm Personalization Value (64 B; the sim backend is CCA).
//! - Kata passes initdata in the pod annotation
//!   `io.katacontainers.config.hypervisor.cc_init_data` as base64 (standard
//!   alphabet) of the gzip of the TOML text; [`Initdata::from_annotation`]
//!   decodes that form (host side).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::TeeKind;

/// The only initdata specification version there is.
pub const INITDATA_VERSION: &str = "0.1.0";

/// The `[data]` entry that carries the agent policy (Rego text).
pub const POLICY_KEY: &str = "policy.rego";

/// The Kubernetes pod annotation Kata reads initdata from.
pub const CC_INIT_DATA_ANNOTATION: &str = "io.katacontainers.config.hypervisor.cc_init_data";

/// Largest initdata document accepted (decoded), 1 MiB: bounds what a gzip
/// annotation may expand to. Kubernetes limits all annotations of an object
/// to 256 KiB, so a real document is far smaller.
pub const MAX_INITDATA_LEN: usize = 1 << 20;

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

    /// Exactly the names Trustee accepts (`kbs_types::HashAlgorithm`'s serde
    /// names, minus `sm3`): `sha-256` or `SHA256` are refused, since a KBS
    /// would refuse them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(HashAlgo::Sha256),
            "sha384" => Ok(HashAlgo::Sha384),
            "sha512" => Ok(HashAlgo::Sha512),
            other => Err(UnknownHashAlgo(other.to_owned())),
        }
    }
}

/// Why an initdata document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitdataError {
    /// Not UTF-8.
    #[error("initdata is not UTF-8: {0}")]
    NotUtf8(String),
    /// Not TOML.
    #[error("initdata is not TOML: {0}")]
    Toml(String),
    /// A required top-level field is missing or not a string/table.
    #[error("initdata field `{field}` is missing or not {expected}")]
    Field {
        /// `version`, `algorithm` or `data`.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// A version other than 0.1.0.
    #[error("initdata version {0:?} is not supported: expected \"0.1.0\"")]
    Version(String),
    /// An algorithm other than sha256/384/512.
    #[error("initdata algorithm: {0}")]
    Algorithm(#[from] UnknownHashAlgo),
    /// A `[data]` value that is not a string.
    #[error("initdata [data] entry {0:?} is not a string (entries are file texts)")]
    DataValue(String),
    /// Larger than [`MAX_INITDATA_LEN`].
    #[error("initdata is larger than {MAX_INITDATA_LEN} bytes")]
    TooLarge,
    /// The annotation is not base64.
    #[error("cc_init_data annotation is not base64: {0}")]
    Base64(String),
    /// The annotation is not gzip.
    #[error("cc_init_data annotation is not gzip: {0}")]
    Gzip(String),
}

/// A parsed initdata document: its exact bytes, its digest and its `[data]`
/// entries. Built only by [`Initdata::parse`] (or the annotation decoder), so
/// holding one means the document was valid.
#[derive(Clone, PartialEq, Eq)]
pub struct Initdata {
    raw: Vec<u8>,
    digest: InitdataDigest,
    data: BTreeMap<String, String>,
}

impl fmt::Debug for Initdata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initdata")
            .field("len", &self.raw.len())
            .field("digest", &self.digest)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Initdata {
    /// Parses a document: checks version, algorithm and `[data]`, and hashes
    /// the bytes as given.
    pub fn parse(raw: impl Into<Vec<u8>>) -> Result<Self, InitdataError> {
        let raw = raw.into();
        if raw.len() > MAX_INITDATA_LEN {
            return Err(InitdataError::TooLarge);
        }
        let text = std::str::from_utf8(&raw).map_err(|e| InitdataError::NotUtf8(e.to_string()))?;
        let doc: toml::Table =
            toml::from_str(text).map_err(|e| InitdataError::Toml(e.message().to_owned()))?;
        let field = |name: &'static str| {
            doc.get(name)
                .and_then(toml::Value::as_str)
                .ok_or(InitdataError::Field {
                    field: name,
                    expected: "a string",
                })
        };
        let version = field("version")?;
        if version != INITDATA_VERSION {
            return Err(InitdataError::Version(version.to_owned()));
        }
        let algo: HashAlgo = field("algorithm")?.parse()?;
        let table =
            doc.get("data")
                .and_then(toml::Value::as_table)
                .ok_or(InitdataError::Field {
                    field: "data",
                    expected: "a table",
                })?;
        let mut data = BTreeMap::new();
        for (k, v) in table {
            let v = v
                .as_str()
                .ok_or_else(|| InitdataError::DataValue(k.clone()))?;
            data.insert(k.clone(), v.to_owned());
        }
        let digest = InitdataDigest {
            algo,
            bytes: algo.digest(&raw),
        };
        Ok(Self { raw, digest, data })
    }

    /// The document's exact bytes.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The digest of the exact bytes.
    pub fn digest(&self) -> &InitdataDigest {
        &self.digest
    }

    /// The `[data]` entries.
    pub fn data(&self) -> &BTreeMap<String, String> {
        &self.data
    }

    /// One `[data]` entry.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// A new document (`version = "0.1.0"`, `algorithm`, `[data]` with
    /// `entries` as strings), parsed back so it obeys the same rule.
    pub fn build(
        algo: HashAlgo,
        entries: &BTreeMap<String, String>,
    ) -> Result<Self, InitdataError> {
        let mut data = toml::Table::new();
        for (k, v) in entries {
            data.insert(k.clone(), toml::Value::String(v.clone()));
        }
        let mut doc = toml::Table::new();
        doc.insert(
            "version".into(),
            toml::Value::String(INITDATA_VERSION.into()),
        );
        doc.insert(
            "algorithm".into(),
            toml::Value::String(algo.as_str().into()),
        );
        doc.insert("data".into(), toml::Value::Table(data));
        let text = toml::to_string(&doc).map_err(|e| InitdataError::Toml(e.to_string()))?;
        Self::parse(text)
    }

    /// The agent policy (`[data] "policy.rego"`), if the document has one.
    pub fn policy(&self) -> Option<&str> {
        self.get(POLICY_KEY)
    }
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
    /// Parses `doc` (see [`Initdata::parse`]) and hashes its bytes with the
    /// algorithm it names.
    pub fn of(doc: &[u8]) -> Result<Self, InitdataError> {
        Initdata::parse(doc).map(|d| d.digest)
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

/// Kata's annotation form (host side): base64 of the gzip of the TOML text.
#[cfg(feature = "host")]
impl Initdata {
    /// Decodes the value of the `cc_init_data` annotation and parses the
    /// document in it. The digest is over the decompressed TOML bytes, as
    /// Kata computes it.
    pub fn from_annotation(value: &str) -> Result<Self, InitdataError> {
        use base64::Engine as _;
        use std::io::Read as _;
        let gz = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| InitdataError::Base64(e.to_string()))?;
        let mut doc = Vec::new();
        let limit = u64::try_from(MAX_INITDATA_LEN).unwrap_or(u64::MAX) + 1;
        flate2::read::GzDecoder::new(gz.as_slice())
            .take(limit)
            .read_to_end(&mut doc)
            .map_err(|e| InitdataError::Gzip(e.to_string()))?;
        Self::parse(doc)
    }

    /// The `cc_init_data` annotation value for this document.
    pub fn to_annotation(&self) -> String {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let _ = gz.write_all(&self.raw);
        let bytes = gz.finish().unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
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
            // Trustee's own reject cases (trustee kbs initdata tests):
            // missing algorithm, unsupported algorithm, not TOML.
            ("version = \"0.1.0\"\n[data]\nkey = \"val\"\n", "algorithm"),
            ("this is not valid toml :::", "TOML"),
            // No default algorithm, and only Trustee's spelling.
            (
                "algorithm = \"sha-256\"\nversion = \"0.1.0\"\n[data]\n",
                "sha-256",
            ),
            (
                "algorithm = \"SHA384\"\nversion = \"0.1.0\"\n[data]\n",
                "SHA384",
            ),
            ("algorithm = \"sha384\"\nversion = \"0.1.0\"\n", "data"),
            (
                "algorithm = \"sha384\"\nversion = \"0.1.0\"\n[data]\nn = 1\n",
                "\"n\"",
            ),
        ];
        for (doc, needle) in cases {
            let err = InitdataDigest::of(doc.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{doc:?}: {err}");
        }
    }

    /// Trustee's accept cases (kbs initdata tests, rstest cases "sha256" and
    /// "sha384"): the document parses, the digest has the algorithm's
    /// length, is the hash of the exact text, and `[data]` is readable.
    /// A document, its digest length, and one `[data]` entry it holds.
    type AcceptCase<'a> = (&'a str, usize, Option<(&'a str, &'a str)>);

    #[test]
    fn trustee_accept_cases() {
        let cases: &[AcceptCase] = &[
            (
                "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\nkey1 = \"value1\"\nkey2 = \"value2\"\n",
                32,
                Some(("key1", "value1")),
            ),
            (
                "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\nfoo = \"bar\"\n",
                48,
                None,
            ),
        ];
        for (doc, len, entry) in cases {
            let d = Initdata::parse(doc.as_bytes()).unwrap();
            assert_eq!(d.digest().as_bytes().len(), *len);
            assert_eq!(
                d.digest().as_bytes(),
                d.digest().algo().digest(doc.as_bytes())
            );
            assert_eq!(d.raw(), doc.as_bytes());
            if let Some((k, v)) = entry {
                assert_eq!(d.get(k), Some(*v));
            }
        }
    }

    /// Known answer: sha256 over the exact bytes of a fixed document,
    /// computed independently with `sha256sum` (printf '%s' DOC | sha256sum).
    #[test]
    fn known_answer_sha256() {
        let doc = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\nkey1 = \"value1\"\nkey2 = \"value2\"\n";
        let d = InitdataDigest::of(doc.as_bytes()).unwrap();
        assert_eq!(hex(d.as_bytes()), KAT_SHA256);
        // SNP takes it whole; TDX and CCA pad with zeros.
        assert_eq!(hex(&d.for_tee(TeeKind::Snp).unwrap()), KAT_SHA256);
        let tdx = d.for_tee(TeeKind::Tdx).unwrap();
        assert_eq!(tdx.len(), 48);
        assert_eq!(&tdx[32..], &[0u8; 16]);
        let sha512 = InitdataDigest::of(doc.replace("sha256", "sha512").as_bytes()).unwrap();
        // SNP truncates a 64-byte digest to its first 32 bytes.
        assert_eq!(
            sha512.for_tee(TeeKind::Snp).unwrap(),
            sha512.as_bytes()[..32]
        );
        assert_eq!(sha512.for_tee(TeeKind::Cca).unwrap(), sha512.as_bytes());
    }

    const KAT_SHA256: &str = "4af951f07ce6524d29b26365b981b21be33d2436a735de88483c1fb4274f0349";

    #[test]
    fn built_documents_parse_and_keep_entries() {
        let text = "package agent_policy\nx := \"'''\"\n".to_owned();
        let entries = BTreeMap::from([(POLICY_KEY.to_owned(), text)]);
        let d = Initdata::build(HashAlgo::Sha512, &entries).unwrap();
        assert_eq!(d.data(), &entries);
        assert_eq!(d.digest().algo(), HashAlgo::Sha512);
    }

    #[test]
    fn policy_entry_is_read_from_data() {
        let d = Initdata::parse(DOC.as_bytes()).unwrap();
        assert_eq!(d.policy(), Some("package agent_policy\n"));
        assert_eq!(d.data().len(), 1);
    }

    #[cfg(feature = "host")]
    #[test]
    fn annotation_round_trip_and_errors() {
        let d = Initdata::parse(DOC.as_bytes()).unwrap();
        let back = Initdata::from_annotation(&d.to_annotation()).unwrap();
        assert_eq!(back, d);
        let err = Initdata::from_annotation("not base64!").unwrap_err();
        assert!(matches!(err, InitdataError::Base64(_)), "{err}");
        use base64::Engine as _;
        let plain = base64::engine::general_purpose::STANDARD.encode(DOC);
        let err = Initdata::from_annotation(&plain).unwrap_err();
        assert!(matches!(err, InitdataError::Gzip(_)), "{err}");
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
