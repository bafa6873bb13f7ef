//! Per-sandbox state on the host: a private directory under the runtime dir
//! holding the metadata JSON, pid files, sockets, the console log and the
//! rootfs image. Dropping a [`StateDir`] removes it; [`list`] finds live
//! sandboxes and prunes dead ones.

use std::path::{Path, PathBuf};

/// Why the runtime dir or a sandbox's state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No runtime dir could be chosen.
    #[error("no runtime directory: set CLOISTER_RUNTIME_DIR or XDG_RUNTIME_DIR")]
    NoRuntimeDir,
    /// A file or directory operation failed.
    #[error("{what} {}: set CLOISTER_RUNTIME_DIR to a writable directory", path.display())]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Metadata could not be encoded.
    #[error("encoding sandbox metadata")]
    Encode(#[source] serde_json::Error),
}

/// The runtime dir: `$CLOISTER_RUNTIME_DIR`, else `/run/cloister` for root,
/// else `$XDG_RUNTIME_DIR/cloister`.
pub fn runtime_dir() -> Result<PathBuf, StateError> {
    runtime_dir_from(|k| std::env::var_os(k), crate::sys::euid())
}

fn runtime_dir_from(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
    euid: u32,
) -> Result<PathBuf, StateError> {
    host_dir(
        get,
        euid,
        "CLOISTER_RUNTIME_DIR",
        "/run/cloister",
        &[("XDG_RUNTIME_DIR", "cloister")],
    )
    .ok_or(StateError::NoRuntimeDir)
}

/// A directory of the runtime's on the host: `$override_var` when set and
/// not empty, else `root_dir` for root, else the first `(variable, subpath)`
/// of `user_dirs` whose variable is set, joined with its subpath.
pub(crate) fn host_dir(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
    euid: u32,
    override_var: &str,
    root_dir: &str,
    user_dirs: &[(&str, &str)],
) -> Option<PathBuf> {
    let nonempty = |k: &str| get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = nonempty(override_var) {
        return Some(d);
    }
    if euid == 0 {
        return Some(PathBuf::from(root_dir));
    }
    user_dirs
        .iter()
        .find_map(|(var, sub)| nonempty(var).map(|d| d.join(sub)))
}

/// Whether `path` is named as sandbox `id`'s scratch disk (`ID.img`,
/// [`crate::scratch::ScratchDisk::create`]).
fn is_scratch_of(path: &Path, id: &str) -> bool {
    !id.is_empty() && path.file_name() == Some(std::ffi::OsStr::new(&format!("{id}.img")))
}

/// What `cloister ps` shows about a sandbox; stored as `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// Sandbox id.
    pub id: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The runtime process that owns the sandbox.
    pub runtime_pid: u32,
    /// Its start time (field 22 of /proc/PID/stat), to tell pid reuse apart.
    pub runtime_start: u64,
    /// The VMM's pid, once started.
    pub vmm_pid: Option<u32>,
    /// TEE name.
    pub tee: String,
    /// Accelerator.
    pub accel: String,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// Container rootfs directory on the host.
    pub rootfs: Option<PathBuf>,
    /// The command run in the container.
    pub command: Vec<String>,
    /// The scratch disk file, if any (outside the state dir; removed with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<PathBuf>,
}

/// A sandbox's private directory. Removed on drop.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    id: String,
}

/// File names inside a state dir.
pub mod files {
    /// Metadata JSON.
    pub const METADATA: &str = "metadata.json";
    /// The VMM's pid.
    pub const VMM_PID: &str = "vmm.pid";
    /// The agent's virtio-serial socket.
    pub const AGENT_SOCK: &str = "agent.sock";
    /// The vhost-user vsock backend's socket for QEMU.
    pub const VHOST_USER_SOCK: &str = "vhost-vsock.sock";
    /// The vhost-user vsock backend's socket for the host (`CONNECT <port>`).
    pub const VSOCK_HOST_SOCK: &str = "vsock.sock";
    /// The vhost-user vsock backend's stderr.
    pub const VHOST_USER_LOG: &str = "vhost-vsock.log";
    /// The guest console.
    pub const CONSOLE_LOG: &str = "console.log";
    /// The VMM's stderr.
    pub const VMM_LOG: &str = "qemu.log";
    /// The container rootfs image.
    pub const ROOTFS_IMG: &str = "rootfs.img";
    /// The per-sandbox agent secret (0600; the guest gets it via fw_cfg).
    pub const AGENT_SECRET: &str = "agent-secret";
}

impl StateDir {
    /// Creates a new state dir with a fresh id under `runtime_dir`.
    /// The runtime dir is created 0700 if missing; the state dir is always
    /// created 0700 (other local users cannot reach its sockets or secret).
    pub fn create(runtime_dir: &Path) -> Result<StateDir, StateError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runtime_dir)
            .map_err(|source| StateError::Io {
                what: "cannot create runtime dir",
                path: runtime_dir.to_path_buf(),
                source,
            })?;
        let id = new_id();
        let path = runtime_dir.join(&id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .and_then(|()| restrict(&path, 0o700))
            .map_err(|source| StateError::Io {
                what: "cannot create sandbox dir",
                path: path.clone(),
                source,
            })?;
        Ok(StateDir { path, id })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sandbox id (the directory's name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A file inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes the metadata atomically.
    pub fn write_metadata(&self, m: &Metadata) -> Result<(), StateError> {
        let text = serde_json::to_string_pretty(m).map_err(StateError::Encode)?;
        let tmp = self.file("metadata.json.tmp");
        let dst = self.file(files::METADATA);
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &dst))
            .map_err(|source| StateError::Io {
                what: "cannot write",
                path: dst,
                source,
            })
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Sets `path`'s permission bits to `mode` (whatever the umask made them).
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// A fresh 12-hex-digit sandbox id.
fn new_id() -> String {
    let mut bytes = [0u8; 6];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mix = t ^ (u128::from(std::process::id()) << 64);
        bytes.copy_from_slice(&mix.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Start time of a process (field 22 of `/proc/PID/stat`), if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether the VMM with this pid is the one of sandbox `id` and still runs.
fn vmm_alive(pid: u32, id: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .any(|w| w == format!("cloister-{id}").as_bytes())
        })
        .unwrap_or(false)
}

/// Whether the sandbox's owner or VMM is still alive.
pub fn is_alive(m: &Metadata) -> bool {
    process_start_time(m.runtime_pid) == Some(m.runtime_start)
        || m.vmm_pid.is_some_and(|p| vmm_alive(p, &m.id))
}

/// The live sandboxes under `runtime_dir`, oldest first. State dirs whose
/// runtime and VMM are both gone are removed (and their ids returned in the
/// second list).
pub fn list(runtime_dir: &Path) -> Result<(Vec<Metadata>, Vec<String>), StateError> {
    let mut live = Vec::new();
    let mut pruned = Vec::new();
    let entries = match std::fs::read_dir(runtime_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((live, pruned)),
        Err(source) => {
            return Err(StateError::Io {
                what: "cannot read runtime dir",
                path: runtime_dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let meta = std::fs::read(path.join(files::METADATA))
            .ok()
            .and_then(|b| serde_json::from_slice::<Metadata>(&b).ok());
        match meta {
            Some(m) if is_alive(&m) => live.push(m),
            Some(m) => {
                let _ = std::fs::remove_dir_all(&path);
                // Only a file named as this sandbox's scratch disk: the
                // path comes from a file, not from this process.
                if let Some(s) = m.scratch.as_ref().filter(|s| is_scratch_of(s, &m.id)) {
                    let _ = std::fs::remove_file(s);
                }
                pruned.push(m.id);
            }
            None => {
                // Unreadable metadata: prune only if old enough that it is not
                // being written right now.
                let old = entry
                    .metadata()
                    .and_then(|md| md.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 60);
                if old {
                    let _ = std::fs::remove_dir_all(&path);
                    pruned.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    live.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok((live, pruned))
}

#[cfg(test)]
mod tests {
    /// `ps` removes a dead sandbox's scratch disk only by its own name: a
    /// metadata file naming another path removes nothing.
    #[test]
    fn only_a_file_named_as_the_sandboxs_scratch_disk_is_removed() {
        assert!(super::is_scratch_of(
            Path::new("/var/lib/cloister/scratch/ab12.img"),
            "ab12"
        ));
        assert!(!super::is_scratch_of(Path::new("/etc/shadow"), "ab12"));
        assert!(!super::is_scratch_of(Path::new("/x/ab12.img.bak"), "ab12"));
        assert!(!super::is_scratch_of(Path::new("/x/cd34.img"), "ab12"));
        assert!(!super::is_scratch_of(Path::new("/x/.img"), ""));
    }

    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn runtime_dir_precedence() {
        let all = [("CLOISTER_RUNTIME_DIR", "/c"), ("XDG_RUNTIME_DIR", "/x")];
        assert_eq!(
            runtime_dir_from(env(&all), 1000).unwrap(),
            PathBuf::from("/c")
        );
        assert_eq!(
            runtime_dir_from(env(&all[1..]), 0).unwrap(),
            PathBuf::from("/run/cloister")
        );
        assert_eq!(
            runtime_dir_from(env(&all[1..]), 1000).unwrap(),
            PathBuf::from("/x/cloister")
        );
        assert!(runtime_dir_from(env(&[]), 1000).is_err());
    }

    fn meta(id: &str, pid: u32, start: u64) -> Metadata {
        Metadata {
            id: id.into(),
            created: now_unix(),
            runtime_pid: pid,
            runtime_start: start,
            vmm_pid: None,
            tee: "none".into(),
            accel: "tcg".into(),
            vcpus: 1,
            memory_mib: 256,
            rootfs: None,
            command: vec!["true".into()],
            scratch: None,
        }
    }

    #[test]
    fn list_keeps_live_sandboxes_and_prunes_dead_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        let live = StateDir::create(tmp.path()).unwrap();
        live.write_metadata(&meta(live.id(), me, start)).unwrap();
        // Same pid but another start time: a reused pid, so dead.
        let dead = StateDir::create(tmp.path()).unwrap();
        dead.write_metadata(&meta(dead.id(), me, start + 1))
            .unwrap();
        let dead_path = dead.path().to_path_buf();
        let dead_id = dead.id().to_owned();
        std::mem::forget(dead);

        let (l, pruned) = list(tmp.path()).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].id, live.id());
        assert_eq!(pruned, [dead_id]);
        assert!(!dead_path.exists());

        let live_path = live.path().to_path_buf();
        drop(live);
        assert!(!live_path.exists(), "drop removes the state dir");
    }

    #[test]
    fn ids_are_distinct_hex() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_missing_runtime_dir_lists_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (l, p) = list(&tmp.path().join("nope")).unwrap();
        assert!(l.is_empty() && p.is_empty());
    }
}
