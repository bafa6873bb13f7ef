//! Persistent state of the KBS behind a small trait, so a shared backend can
//! replace the embedded one. The embedded [`FileStore`] writes each value to
//! a temporary file, fsyncs it, renames it into place and fsyncs the
//! directory: a crash leaves the old or the new value, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Secrets, keyed by `REPO/TYPE/TAG`.
    Resource,
    /// Policies, reference values and trust anchors, keyed by name.
    Config,
}

impl Namespace {
    fn dir(self) -> &'static str {
        match self {
            Namespace::Resource => "resources",
            Namespace::Config => "config",
        }
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on the backing files.
    #[error("store I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Key-value storage of the KBS. Implementations must make each `put` and
/// `delete` atomic and durable before returning.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Read a value.
    fn get(&self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Write a value.
    fn put(&self, ns: Namespace, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Delete a value; `Ok(false)` if it was absent.
    fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError>;
}

/// Files under a directory, one per key (file name = hex of the key).
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FileStore {
    /// Open (creating) a store under `root`. Directories are created 0700
    /// and files 0600: the store holds the secrets.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        for ns in [Namespace::Resource, Namespace::Config] {
            let d = root.join(ns.dir());
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(io(&d))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn path(&self, ns: Namespace, key: &str) -> PathBuf {
        self.root.join(ns.dir()).join(hex::encode(key.as_bytes()))
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

impl Store for FileStore {
    fn get(&self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = self.path(ns, key);
        match fs::read(&p) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    fn put(&self, ns: Namespace, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let p = self.path(ns, key);
        let dir = self.root.join(ns.dir());
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(value)?;
            f.sync_all()?;
            fs::rename(&tmp, &p)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io(&p)(e));
        }
        sync_dir(&dir)
    }

    fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError> {
        let p = self.path(ns, key);
        match fs::remove_file(&p) {
            Ok(()) => {
                sync_dir(&self.root.join(ns.dir()))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&p)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        s.put(Namespace::Resource, "a/b/c", b"one").unwrap();
        s.put(Namespace::Resource, "a/b/c", b"two").unwrap();
        s.put(Namespace::Config, "a/b/c", b"cfg").unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get(Namespace::Resource, "a/b/c").unwrap().unwrap(),
            b"two"
        );
        assert_eq!(s.get(Namespace::Config, "a/b/c").unwrap().unwrap(), b"cfg");
        assert!(s.delete(Namespace::Resource, "a/b/c").unwrap());
        assert!(!s.delete(Namespace::Resource, "a/b/c").unwrap());
        assert!(s.get(Namespace::Resource, "a/b/c").unwrap().is_none());
        // no temporary files left behind
        let left: Vec<_> = fs::read_dir(dir.path().join("resources"))
            .unwrap()
            .collect();
        assert!(left.is_empty());
    }
}
