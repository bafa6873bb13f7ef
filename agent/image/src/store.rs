//! [`ImageStore`]: the content-addressed directory that pulled layers are
//! unpacked into, shared by every container of a sandbox.
//!
//! Layout under the root:
//! - `layers/<diff_id hex>/`: one unpacked layer (overlayfs format, see
//!   [`crate::unpack`]), named by the digest of its uncompressed tar, so a
//!   layer two images share is pulled and unpacked once;
//! - `tmp/`: downloads and unpacks in progress. A layer directory appears
//!   under `layers/` only (by rename) after its blob digest and diff_id
//!   have been checked. `tmp/` is emptied when the store is opened.
//!
//! A failed pull removes its temporary files and the layers it created
//! that no other pull uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::ImageError;
use crate::reference::Digest;

/// The store. Cheap to share behind an `Arc`; pulls may run concurrently.
#[derive(Debug)]
pub struct ImageStore {
    pub(crate) root: PathBuf,
    /// One lock per layer (diff_id), so two pulls of a layer unpack it once.
    locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// How many pulls (running or done) use each layer.
    users: Mutex<HashMap<Digest, usize>>,
    next: AtomicU64,
}

fn store_err(path: &Path) -> impl Fn(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Store {
        path: path.display().to_string(),
        source,
    }
}

impl ImageStore {
    /// Opens (creating) a store at `root`, e.g. a tmpfs mount in the
    /// guest, and removes leftovers of interrupted pulls.
    pub fn new(root: PathBuf) -> Result<Self, ImageError> {
        for d in [root.join("layers"), root.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(store_err(&d))?;
        }
        let tmp = root.join("tmp");
        for ent in std::fs::read_dir(&tmp).map_err(store_err(&tmp))? {
            let ent = ent.map_err(store_err(&tmp))?;
            remove_any(&ent.path()).map_err(store_err(&ent.path()))?;
        }
        Ok(ImageStore {
            root,
            locks: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        })
    }

    /// The directory of the layer with this diff_id (whether or not it
    /// exists yet).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// A fresh path under `tmp/`.
    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}.{}.{n}", std::process::id()))
    }

    pub(crate) fn layer_lock(&self, diff_id: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(diff_id.clone()).or_default().clone()
    }

    /// Records that a pull uses this layer.
    pub(crate) fn claim(&self, diff_id: &Digest) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        *users.entry(diff_id.clone()).or_default() += 1;
    }

    /// Undoes [`claim`](Self::claim) for a failed pull; removes the layer
    /// if this pull `created` it and no other pull uses it.
    pub(crate) fn release(&self, diff_id: &Digest, created: bool) {
        let unused = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let n = users.entry(diff_id.clone()).or_default();
            *n = n.saturating_sub(1);
            *n == 0
        };
        if created && unused {
            let _ = remove_any(&self.layer_dir(diff_id));
        }
    }

    /// Paths under `tmp/` (tests check a failed pull leaves none).
    pub fn temp_entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.join("tmp"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// The unpacked layers present, as diff_id hex names.
    pub fn layers(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("layers"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Removes a file or a directory tree (never following symlinks).
pub(crate) fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes its path when dropped, unless [`keep`](TempGuard::keep) was
/// called: no temporary file outlives a failed step.
pub(crate) struct TempGuard(Option<PathBuf>);

impl TempGuard {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempGuard(Some(path))
    }
    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = remove_any(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_clears_leftovers_and_release_removes_only_unused_created_layers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp/old.dir/x")).unwrap();
        let store = ImageStore::new(dir.path().to_path_buf()).unwrap();
        assert!(store.temp_entries().is_empty());
        let d = Digest::of(b"layer");
        std::fs::create_dir_all(store.layer_dir(&d)).unwrap();
        store.claim(&d);
        store.claim(&d);
        store.release(&d, true);
        assert!(store.layer_dir(&d).is_dir(), "still used by the other pull");
        store.release(&d, true);
        assert!(!store.layer_dir(&d).exists());
        let g = TempGuard::new(store.temp_path("blob"));
        std::fs::write(g.path(), b"x").unwrap();
        drop(g);
        assert!(store.temp_entries().is_empty());
    }
}
