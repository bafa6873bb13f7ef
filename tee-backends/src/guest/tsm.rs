//! Evidence through configfs-tsm (`/sys/kernel/config/tsm/report`, Linux
//! Documentation/ABI/testing/configfs-tsm-report).
//!
//! Per request: create a report directory, read `generation`, write the
//! 64-byte report_data to `inblob`, read `outblob`, read `generation` again.
//! Any write by someone else in between bumps the generation by more than
//! one, so the outblob may reflect their inblob: retry, then give up.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{AttestError, Attester};
use crate::TeeKind;

/// How many times a raced request is retried.
const ATTEMPTS: u32 = 3;

/// The configfs operations the attester needs, drawn from its side.
pub trait ConfigFs: Send + Sync + std::fmt::Debug {
    /// The report directory (for messages).
    fn root(&self) -> &Path;
    /// Creates report entry `entry`.
    fn mkdir(&self, entry: &str) -> io::Result<()>;
    /// Removes report entry `entry`.
    fn rmdir(&self, entry: &str) -> io::Result<()>;
    /// Reads attribute `attr` of `entry`.
    fn read(&self, entry: &str, attr: &str) -> io::Result<Vec<u8>>;
    /// Writes attribute `attr` of `entry`.
    fn write(&self, entry: &str, attr: &str, data: &[u8]) -> io::Result<()>;
}

/// The real configfs, via std::fs.
#[derive(Debug, Clone)]
pub struct RealConfigFs {
    root: PathBuf,
}

impl RealConfigFs {
    /// configfs-tsm's report directory at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
}

impl ConfigFs for RealConfigFs {
    fn root(&self) -> &Path {
        &self.root
    }
    fn mkdir(&self, entry: &str) -> io::Result<()> {
        std::fs::create_dir(self.root.join(entry))
    }
    fn rmdir(&self, entry: &str) -> io::Result<()> {
        std::fs::remove_dir(self.root.join(entry))
    }
    fn read(&self, entry: &str, attr: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.root.join(entry).join(attr))
    }
    fn write(&self, entry: &str, attr: &str, data: &[u8]) -> io::Result<()> {
        std::fs::write(self.root.join(entry).join(attr), data)
    }
}

/// Maps a configfs-tsm provider name to the TEE.
pub fn provider_tee(provider: &str) -> Option<TeeKind> {
    match provider {
        "arm_cca_guest" => Some(TeeKind::Cca),
        "sev_guest" => Some(TeeKind::Snp),
        "tdx_guest" => Some(TeeKind::Tdx),
        _ => None,
    }
}

/// An attester over configfs-tsm.
#[derive(Debug)]
pub struct TsmAttester<F: ConfigFs> {
    fs: F,
    tee: TeeKind,
}

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

fn entry_name() -> String {
    format!(
        "cloister-{}-{}",
        std::process::id(),
        ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn io_err(fs: &impl ConfigFs, what: &str, source: io::Error) -> AttestError {
    AttestError::Io {
        what: format!("configfs-tsm {}: {what}", fs.root().display()),
        source,
    }
}

fn parse_generation(raw: &[u8]) -> io::Result<u64> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "generation is not a number"))
}

impl<F: ConfigFs> TsmAttester<F> {
    /// Finds out which provider backs configfs-tsm.
    pub fn probe(fs: F) -> Result<Self, AttestError> {
        let entry = entry_name();
        fs.mkdir(&entry)
            .map_err(|e| io_err(&fs, "creating a report entry", e))?;
        let provider = fs.read(&entry, "provider");
        // Best effort: a leftover entry is harmless and cannot be helped.
        let _ = fs.rmdir(&entry);
        let provider =
            provider.map_err(|e| io_err(&fs, "reading provider (no TEE driver loaded?)", e))?;
        let name = String::from_utf8_lossy(&provider).trim().to_owned();
        let tee = provider_tee(&name).ok_or(AttestError::UnknownProvider(name))?;
        Ok(Self { fs, tee })
    }

    fn attempt(&self, entry: &str, report_data: &[u8; 64]) -> Result<Option<Vec<u8>>, AttestError> {
        let fs = &self.fs;
        let g0 = fs
            .read(entry, "generation")
            .and_then(|g| parse_generation(&g))
            .map_err(|e| io_err(fs, "reading generation", e))?;
        fs.write(entry, "inblob", report_data)
            .map_err(|e| io_err(fs, "writing inblob", e))?;
        let out = fs
            .read(entry, "outblob")
            .map_err(|e| io_err(fs, "reading outblob", e))?;
        let g1 = fs
            .read(entry, "generation")
            .and_then(|g| parse_generation(&g))
            .map_err(|e| io_err(fs, "reading generation", e))?;
        Ok((g1 == g0 + 1).then_some(out))
    }
}

impl<F: ConfigFs> Attester for TsmAttester<F> {
    fn tee(&self) -> TeeKind {
        self.tee
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError> {
        let entry = entry_name();
        self.fs
            .mkdir(&entry)
            .map_err(|e| io_err(&self.fs, "creating a report entry", e))?;
        let mut result = Err(AttestError::Race {
            path: self.fs.root().join(&entry),
            attempts: ATTEMPTS,
        });
        for _ in 0..ATTEMPTS {
            match self.attempt(&entry, report_data) {
                Ok(Some(out)) => {
                    result = Ok(out);
                    break;
                }
                Ok(None) => continue,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let _ = self.fs.rmdir(&entry);
        result
    }

    fn extend(&self, _index: u32, _data: &[u8]) -> Result<(), AttestError> {
        Err(AttestError::Unsupported {
            tee: self.tee,
            what: "extend runtime measurements through configfs-tsm",
        })
    }
}

/// Produces an outblob from an inblob.
type ReportFn = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// A configfs-tsm stand-in over a plain directory that behaves like the
/// kernel's: `mkdir` populates an entry, every `inblob` write increments
/// `generation`, `outblob` is produced from the current inblob by `report`,
/// and `racer` may write inblob "concurrently" just before an outblob read.
pub struct FakeConfigFs {
    root: PathBuf,
    provider: String,
    report: ReportFn,
    races_left: std::sync::Mutex<u32>,
}

impl std::fmt::Debug for FakeConfigFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeConfigFs")
            .field("root", &self.root)
            .field("provider", &self.provider)
            .finish()
    }
}

impl FakeConfigFs {
    /// A fake tree at `root` (created) for `provider`, producing outblobs
    /// with `report(inblob)`.
    pub fn new(
        root: &Path,
        provider: &str,
        report: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            provider: provider.to_owned(),
            report: Box::new(report),
            races_left: std::sync::Mutex::new(0),
        })
    }

    /// The next `n` outblob reads are preceded by a foreign inblob write.
    pub fn inject_races(&self, n: u32) {
        if let Ok(mut r) = self.races_left.lock() {
            *r = n;
        }
    }

    fn bump(&self, entry: &str) -> io::Result<()> {
        let path = self.root.join(entry).join("generation");
        let g = parse_generation(&std::fs::read(&path)?)?;
        std::fs::write(path, format!("{}\n", g + 1))
    }
}

impl ConfigFs for FakeConfigFs {
    fn root(&self) -> &Path {
        &self.root
    }
    fn mkdir(&self, entry: &str) -> io::Result<()> {
        let dir = self.root.join(entry);
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join("provider"), format!("{}\n", self.provider))?;
        std::fs::write(dir.join("generation"), "0\n")?;
        std::fs::write(dir.join("inblob"), b"")?;
        std::fs::write(dir.join("outblob"), b"")
    }
    fn rmdir(&self, entry: &str) -> io::Result<()> {
        std::fs::remove_dir_all(self.root.join(entry))
    }
    fn read(&self, entry: &str, attr: &str) -> io::Result<Vec<u8>> {
        let dir = self.root.join(entry);
        if attr == "outblob" {
            let race = match self.races_left.lock() {
                Ok(mut r) if *r > 0 => {
                    *r -= 1;
                    true
                }
                _ => false,
            };
            if race {
                self.write(entry, "inblob", &[0xEE; 64])?;
            }
            let inblob = std::fs::read(dir.join("inblob"))?;
            let out = (self.report)(&inblob);
            std::fs::write(dir.join("outblob"), &out)?;
            return Ok(out);
        }
        std::fs::read(dir.join(attr))
    }
    fn write(&self, entry: &str, attr: &str, data: &[u8]) -> io::Result<()> {
        let dir = self.root.join(entry);
        match attr {
            "inblob" => {
                if data.len() > 64 {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
                std::fs::write(dir.join("inblob"), data)?;
                self.bump(entry)
            }
            "privlevel" => {
                std::fs::write(dir.join(attr), data)?;
                self.bump(entry)
            }
            _ => Err(io::Error::from_raw_os_error(libc::EACCES)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::snp_layout;

    fn snp_report(inblob: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; snp_layout::REPORT_LEN];
        r[snp_layout::REPORT_DATA..snp_layout::REPORT_DATA + inblob.len()].copy_from_slice(inblob);
        r
    }

    fn fake(provider: &str) -> (tempfile::TempDir, FakeConfigFs) {
        let dir = tempfile::tempdir().unwrap();
        let fs = FakeConfigFs::new(&dir.path().join("tsm/report"), provider, snp_report).unwrap();
        (dir, fs)
    }

    #[test]
    fn providers_map_to_tees() {
        for (p, tee) in [
            ("arm_cca_guest", TeeKind::Cca),
            ("sev_guest", TeeKind::Snp),
            ("tdx_guest", TeeKind::Tdx),
        ] {
            let (_d, fs) = fake(p);
            assert_eq!(TsmAttester::probe(fs).unwrap().tee(), tee);
        }
        let (_d, fs) = fake("sgx_guest");
        let err = TsmAttester::probe(fs).unwrap_err().to_string();
        assert!(err.contains("sgx_guest"), "{err}");
    }

    #[test]
    fn outblob_reflects_inblob_and_entries_are_removed() {
        let (_d, fs) = fake("sev_guest");
        let root = fs.root().to_path_buf();
        let a = TsmAttester::probe(fs).unwrap();
        let out = a.evidence(&[0x42; 64]).unwrap();
        assert_eq!(
            &out[snp_layout::REPORT_DATA..snp_layout::REPORT_DATA + 64],
            &[0x42; 64]
        );
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
    }

    #[test]
    fn one_race_is_retried() {
        let (_d, fs) = fake("sev_guest");
        let a = TsmAttester::probe(fs).unwrap();
        a.fs.inject_races(1);
        let out = a.evidence(&[0x42; 64]).unwrap();
        assert_eq!(
            &out[snp_layout::REPORT_DATA..snp_layout::REPORT_DATA + 64],
            &[0x42; 64]
        );
    }

    #[test]
    fn persistent_race_is_detected() {
        let (_d, fs) = fake("tdx_guest");
        let a = TsmAttester::probe(fs).unwrap();
        a.fs.inject_races(ATTEMPTS);
        let err = a.evidence(&[0x42; 64]).unwrap_err();
        assert!(
            matches!(
                err,
                AttestError::Race {
                    attempts: ATTEMPTS,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("generation"));
    }

    #[test]
    fn missing_tree_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = TsmAttester::probe(RealConfigFs::new(&dir.path().join("nope"))).unwrap_err();
        assert!(err.to_string().contains("creating a report entry"), "{err}");
    }

    #[test]
    fn fake_rejects_oversized_inblob_like_the_kernel() {
        let (_d, fs) = fake("sev_guest");
        fs.mkdir("e").unwrap();
        assert!(fs.write("e", "inblob", &[0; 65]).is_err());
        assert!(fs.write("e", "provider", b"x").is_err());
    }

    #[test]
    fn extend_is_unsupported() {
        let (_d, fs) = fake("arm_cca_guest");
        let a = TsmAttester::probe(fs).unwrap();
        assert!(matches!(
            a.extend(0, b"x"),
            Err(AttestError::Unsupported { .. })
        ));
    }
}
