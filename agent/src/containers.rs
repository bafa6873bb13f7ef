//! Containers and their processes, run with youki's libcontainer from an OCI
//! bundle the agent writes under /run/cloister/containers/<id>.
//!
//! Rootfs: the host's read-only rootfs (virtio-blk or 9p) is mounted at
//! `<dir>/lower`; with `writable_overlay` a tmpfs-backed overlay at
//! `<dir>/rootfs` makes it writable in guest memory. libcontainer runs with
//! no_pivot (MS_MOVE + chroot), since pivot_root fails while the current
//! root is the initramfs.
//!
//! A command that does not resolve inside the rootfs gets exit status 127
//! (126 when found but not executable), like a shell, without starting a
//! container process.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cloister_protocol::agent::rootfs::Kind as RootfsKind;
use cloister_protocol::agent::Rootfs;
use cloister_protocol::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as LcContainer;
use libcontainer::oci_spec::runtime::{
    LinuxNamespaceType, MountBuilder, Process as OciProcess, RootBuilder, Spec,
};
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::reaper::{Exit, Reaper};
use crate::stdio::OutputBuf;

/// Where containers live in the guest.
pub const CONTAINERS_DIR: &str = "/run/cloister/containers";
/// libcontainer's state root.
pub const STATE_DIR: &str = "/run/cloister/state";

/// What went wrong, mapped to a ttrpc status by the service.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
}

type Result<T> = std::result::Result<T, ContainerError>;

fn internal(what: &str) -> impl FnOnce(nix::Error) -> ContainerError + '_ {
    move |e| ContainerError::Internal(format!("{what}: {}", e.desc()))
}

fn io_internal(what: String) -> impl FnOnce(std::io::Error) -> ContainerError {
    move |e| ContainerError::Internal(format!("{what}: {e}"))
}

/// One process: its pid (None for a command that was never started),
/// stdio and exit status.
#[derive(Debug)]
pub struct Proc {
    pub pid: Option<i32>,
    pub stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    pub stdout: Arc<OutputBuf>,
    pub stderr: Arc<OutputBuf>,
    pub exit: watch::Receiver<Option<Exit>>,
}

impl Proc {
    /// Waits for the exit.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.clone();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The reaper dropped the sender without a status: cannot
                // happen while the agent runs; report a kill.
                return Exit::Signal(9);
            }
        }
    }

    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// A command that never started: `status`, with `message` on stderr.
    fn never_started(status: i32, message: &str) -> Arc<Proc> {
        let (_tx, rx) = watch::channel(Some(Exit::Code(status)));
        Arc::new(Proc {
            pid: None,
            stdin: tokio::sync::Mutex::new(None),
            stdout: OutputBuf::closed_with(b""),
            stderr: OutputBuf::closed_with(message.as_bytes()),
            exit: rx,
        })
    }
}

#[derive(Debug)]
struct Container {
    dir: PathBuf,
    rootfs: PathBuf,
    /// Mount points to undo, innermost last.
    mounts: Vec<PathBuf>,
    lc: Option<LcContainer>,
    init_exec: String,
    procs: HashMap<String, Arc<Proc>>,
    started: bool,
}

/// All containers of the sandbox.
#[derive(Debug)]
pub struct Containers {
    reaper: Reaper,
    map: std::sync::Mutex<HashMap<String, Container>>,
}

/// Container and exec ids: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn check_id(what: &str, id: &str) -> Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ContainerError::InvalidArgument(format!(
            "bad {what} {id:?}: expected 1 to 64 characters from [A-Za-z0-9_.-], not starting with '.'"
        )))
    }
}

/// How a command resolved inside a rootfs.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    Found(PathBuf),
    NotFound,
    NotExecutable(PathBuf),
}

/// Follows `path` (absolute, inside `root`) through symlinks, treating
/// absolute link targets as relative to `root`. Returns the host path.
fn follow_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut current = PathBuf::from("/");
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&part);
        let host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = std::fs::read_link(&host).ok()?;
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => current = candidate,
            Err(_) => return None,
        }
    }
    Some(root.join(current.strip_prefix("/").unwrap_or(&current)))
}

fn classify_file(host: PathBuf) -> Resolved {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&host) {
        Ok(md) if md.is_file() && md.permissions().mode() & 0o111 != 0 => Resolved::Found(host),
        Ok(_) => Resolved::NotExecutable(host),
        Err(_) => Resolved::NotFound,
    }
}

/// Resolves `cmd` as a shell would, inside `root`, with the `PATH` of
/// `env` (default: the usual system directories).
pub fn resolve_command(root: &Path, cmd: &str, env: &[String]) -> Resolved {
    if cmd.is_empty() {
        return Resolved::NotFound;
    }
    if cmd.contains('/') {
        let abs = if cmd.starts_with('/') {
            PathBuf::from(cmd)
        } else {
            Path::new("/").join(cmd)
        };
        return match follow_in_root(root, &abs) {
            Some(host) => classify_file(host),
            None => Resolved::NotFound,
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut not_exec = None;
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        if let Some(host) = follow_in_root(root, &Path::new(dir).join(cmd)) {
            match classify_file(host) {
                Resolved::Found(p) => return Resolved::Found(p),
                Resolved::NotExecutable(p) => not_exec = not_exec.or(Some(p)),
                Resolved::NotFound => {}
            }
        }
    }
    not_exec.map_or(Resolved::NotFound, Resolved::NotExecutable)
}

/// The status and stderr message for a command that cannot start, or None.
fn precheck(root: &Path, process: &OciProcess) -> Option<(i32, String)> {
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let cmd = args.first().cloned().unwrap_or_default();
    match resolve_command(root, &cmd, &env) {
        Resolved::Found(_) => None,
        Resolved::NotFound => Some((
            EXIT_NOT_FOUND,
            format!("cloister-agent: {cmd}: command not found\n"),
        )),
        Resolved::NotExecutable(_) => Some((
            EXIT_NOT_EXECUTABLE,
            format!("cloister-agent: {cmd}: permission denied (not an executable file)\n"),
        )),
    }
}

struct Pipes {
    child: (OwnedFd, OwnedFd, OwnedFd),
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}

fn make_pipes() -> Result<Pipes> {
    let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC).map_err(internal("pipe"))?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(internal("pipe"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(internal("pipe"))?;
    let io = |e: std::io::Error| ContainerError::Internal(format!("pipe: {e}"));
    Ok(Pipes {
        child: (in_r, out_w, err_w),
        stdin: pipe::Sender::from_owned_fd(in_w).map_err(io)?,
        stdout: pipe::Receiver::from_owned_fd(out_r).map_err(io)?,
        stderr: pipe::Receiver::from_owned_fd(err_r).map_err(io)?,
    })
}

fn started_proc(
    reaper: &Reaper,
    pid: i32,
    stdin: pipe::Sender,
    out: pipe::Receiver,
    err: pipe::Receiver,
) -> Arc<Proc> {
    let stdout = Arc::new(OutputBuf::default());
    stdout.pump(out);
    let stderr = Arc::new(OutputBuf::default());
    stderr.pump(err);
    Arc::new(Proc {
        pid: Some(pid),
        stdin: tokio::sync::Mutex::new(Some(stdin)),
        stdout,
        stderr,
        exit: reaper.watch(pid),
    })
}

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, Copy)]
pub enum RootSource<'a> {
    /// As the request says (NINEP, BLOCK, GUEST_PATH).
    Request(&'a Rootfs),
    /// An image the agent pulled itself: its unpacked layers (overlayfs
    /// lowerdirs, top first) and its config, under a writable tmpfs.
    Image {
        /// The lowerdirs, top first.
        lowers: &'a [PathBuf],
        /// What the image says to run, for a request that names no command.
        config: &'a cloister_image::ImageConfig,
    },
}

fn mount_rootfs(dir: &Path, source: RootSource<'_>) -> Result<(PathBuf, Vec<PathBuf>)> {
    let rootfs = match source {
        RootSource::Request(r) => r,
        RootSource::Image { lowers, .. } => return mount_overlay(dir, lowers, Vec::new()),
    };
    let lower = dir.join("lower");
    std::fs::create_dir_all(&lower).map_err(io_internal(format!("mkdir {}", lower.display())))?;
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NODEV;
    let kind = rootfs.kind.enum_value().map_err(|v| {
        ContainerError::InvalidArgument(format!(
            "unknown rootfs kind {v}: expected NINEP, BLOCK, GUEST_PATH or IMAGE"
        ))
    })?;
    let source = rootfs.source.as_str();
    match kind {
        RootfsKind::UNSPECIFIED => {
            return Err(ContainerError::InvalidArgument(
                "rootfs kind is not set: expected NINEP, BLOCK, GUEST_PATH or IMAGE".into(),
            ))
        }
        RootfsKind::NINEP => mount(
            Some(source),
            &lower,
            Some("9p"),
            ro,
            Some("trans=virtio,version=9p2000.L,cache=loose,msize=262144"),
        )
        .map_err(|e| {
            ContainerError::FailedPrecondition(format!(
                "mounting 9p share {source:?}: {} (does the VM have -virtfs ...,mount_tag={source}?)",
                e.desc()
            ))
        })?,
        RootfsKind::BLOCK => {
            let fstype = if rootfs.fstype.is_empty() { "ext4" } else { rootfs.fstype.as_str() };
            mount(Some(source), &lower, Some(fstype), ro, None::<&str>).map_err(|e| {
                ContainerError::FailedPrecondition(format!(
                    "mounting {source} ({fstype}) read-only: {}",
                    e.desc()
                ))
            })?
        }
        RootfsKind::IMAGE => {
            return Err(ContainerError::Internal(
                "an IMAGE rootfs is pulled before it is mounted".into(),
            ))
        }
        RootfsKind::GUEST_PATH => mount(Some(source), &lower, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| ContainerError::FailedPrecondition(format!("bind-mounting {source}: {}", e.desc())))?,
    }
    if !rootfs.writable_overlay {
        return Ok((lower.clone(), vec![lower]));
    }
    mount_overlay(dir, std::slice::from_ref(&lower), vec![lower.clone()])
}

/// A writable overlay (upper on its own tmpfs) over `lowers` (top first);
/// `mounts` are the mounts made so far, to which the overlay's are added.
fn mount_overlay(
    dir: &Path,
    lowers: &[PathBuf],
    mut mounts: Vec<PathBuf>,
) -> Result<(PathBuf, Vec<PathBuf>)> {
    if lowers.is_empty() {
        return Err(ContainerError::InvalidArgument(
            "the image has no layers: expected at least one".into(),
        ));
    }
    let rw = dir.join("rw");
    let merged = dir.join("rootfs");
    for d in [&rw, &merged] {
        std::fs::create_dir_all(d).map_err(io_internal(format!("mkdir {}", d.display())))?;
    }
    mount(
        Some("tmpfs"),
        &rw,
        Some("tmpfs"),
        MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(internal("mounting the overlay's tmpfs"))?;
    mounts.push(rw.clone());
    for d in ["upper", "work"] {
        std::fs::create_dir_all(rw.join(d)).map_err(io_internal(format!("mkdir {d}")))?;
    }
    let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        rw.join("upper").display(),
        rw.join("work").display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| {
        ContainerError::FailedPrecondition(format!(
            "overlay on the rootfs: {} (is the overlay module loaded?)",
            e.desc()
        ))
    })?;
    mounts.push(merged.clone());
    Ok((merged, mounts))
}

/// Fills what the request left open from the image's config, as container
/// runtimes do: the command (Entrypoint + Cmd) when the request names none,
/// the image's Env before the request's, and its WorkingDir when the request
/// keeps the default `/`.
fn apply_image_config(spec: &mut Spec, config: &cloister_image::ImageConfig) -> Result<()> {
    let mut p = spec.process().clone().unwrap_or_default();
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        let args: Vec<String> = config
            .entrypoint
            .iter()
            .chain(config.cmd.iter())
            .cloned()
            .collect();
        if args.is_empty() {
            return Err(ContainerError::InvalidArgument(
                "neither the request nor the image config names a command: expected process.args, or an image with Entrypoint or Cmd".into(),
            ));
        }
        p.set_args(Some(args));
    }
    let mut env = config.env.clone();
    env.extend(p.env().clone().unwrap_or_default());
    p.set_env(Some(env));
    if p.cwd().as_os_str() == "/" && !config.working_dir.is_empty() {
        p.set_cwd(PathBuf::from(&config.working_dir));
    }
    spec.set_process(Some(p));
    Ok(())
}

/// Whether the spec asks for a new PID namespace (whose first process
/// ignores unhandled signals, see [`crate::cinit`]).
fn needs_cinit(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        })
}

/// Runs the command under the agent's container init.
fn add_cinit(spec: &mut Spec, process: &OciProcess) -> Result<()> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/init"));
    let mount = MountBuilder::default()
        .destination(crate::cinit::CINIT_PATH)
        .typ("bind")
        .source(exe)
        .options(vec!["bind".to_string(), "ro".to_string()])
        .build()
        .map_err(|e| ContainerError::Internal(format!("container init mount: {e}")))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    let mut p = process.clone();
    p.set_args(Some(crate::cinit::wrap(
        &process.args().clone().unwrap_or_default(),
    )));
    spec.set_process(Some(p));
    Ok(())
}

fn unmount_all(mounts: &[PathBuf]) {
    for m in mounts.iter().rev() {
        if let Err(e) = umount2(m, MntFlags::MNT_DETACH) {
            crate::log!("umount {}: {}", m.display(), e.desc());
        }
    }
}

impl Containers {
    pub fn new(reaper: Reaper) -> Self {
        Self {
            reaper,
            map: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Container>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// CreateContainer.
    pub fn create(
        &self,
        id: &str,
        exec_id: &str,
        oci_spec: &[u8],
        source: RootSource<'_>,
    ) -> Result<()> {
        check_id("container_id", id)?;
        let exec_id = if exec_id.is_empty() { id } else { exec_id };
        check_id("exec_id", exec_id)?;
        if self.lock().contains_key(id) {
            return Err(ContainerError::AlreadyExists(format!(
                "container {id} already exists"
            )));
        }
        let mut spec: Spec = serde_json::from_slice(oci_spec).map_err(|e| {
            ContainerError::InvalidArgument(format!(
                "oci_spec is not an OCI runtime-spec config.json: {e}"
            ))
        })?;
        if let RootSource::Image { config, .. } = source {
            apply_image_config(&mut spec, config)?;
        }
        let process = spec.process().clone().ok_or_else(|| {
            ContainerError::InvalidArgument("oci_spec has no process: expected process.args".into())
        })?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(ContainerError::InvalidArgument(
                "oci_spec process.args is empty: expected a command".into(),
            ));
        }
        let dir = Path::new(CONTAINERS_DIR).join(id);
        std::fs::create_dir_all(&dir).map_err(io_internal(format!("mkdir {}", dir.display())))?;
        let (root, mounts) = match mount_rootfs(&dir, source) {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let cleanup = |e: ContainerError| {
            unmount_all(&mounts);
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let root_cfg = RootBuilder::default()
            .path(&root)
            .readonly(false)
            .build()
            .map_err(|e| cleanup(ContainerError::Internal(format!("spec root: {e}"))))?;
        spec.set_root(Some(root_cfg));
        let mut container = Container {
            dir: dir.clone(),
            rootfs: root.clone(),
            mounts: mounts.clone(),
            lc: None,
            init_exec: exec_id.to_string(),
            procs: HashMap::new(),
            started: false,
        };
        if let Some((status, msg)) = precheck(&root, &process) {
            container
                .procs
                .insert(exec_id.to_string(), Proc::never_started(status, &msg));
            self.lock().insert(id.to_string(), container);
            return Ok(());
        }
        if needs_cinit(&spec) {
            let writable = match source {
                RootSource::Request(r) => r.writable_overlay,
                RootSource::Image { .. } => true,
            };
            if writable {
                add_cinit(&mut spec, &process).map_err(cleanup)?;
            } else {
                crate::log!(
                    "container {id}: own PID namespace but read-only rootfs: no container init, \
                     so signals without a handler will not reach the command"
                );
            }
        }
        let config = serde_json::to_vec(&spec)
            .map_err(|e| cleanup(ContainerError::Internal(format!("spec: {e}"))))?;
        std::fs::write(dir.join("config.json"), config).map_err(|e| {
            cleanup(ContainerError::Internal(format!(
                "writing config.json: {e}"
            )))
        })?;
        std::fs::create_dir_all(STATE_DIR)
            .map_err(|e| cleanup(ContainerError::Internal(format!("mkdir {STATE_DIR}: {e}"))))?;
        let Pipes {
            child: (cin, cout, cerr),
            stdin,
            stdout,
            stderr,
        } = make_pipes().map_err(cleanup)?;
        let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(STATE_DIR)
            .and_then(|b| {
                b.with_stdin(cin)
                    .with_stdout(cout)
                    .with_stderr(cerr)
                    .as_init(&dir)
                    .with_systemd(false)
                    .with_detach(true)
                    .with_no_pivot(true)
                    .build()
            });
        let lc = built.map_err(|e| {
            cleanup(ContainerError::Internal(format!(
                "creating container {id}: {e}"
            )))
        })?;
        let pid = lc
            .pid()
            .ok_or_else(|| ContainerError::Internal(format!("container {id} has no init pid")))?
            .as_raw();
        let proc = started_proc(&self.reaper, pid, stdin, stdout, stderr);
        container.lc = Some(lc);
        container.procs.insert(exec_id.to_string(), proc);
        self.lock().insert(id.to_string(), container);
        crate::log!("container {id}: created, init pid {pid}");
        Ok(())
    }

    /// StartContainer.
    pub fn start(&self, id: &str) -> Result<()> {
        let mut map = self.lock();
        let c = map.get_mut(id).ok_or_else(|| not_found_container(id))?;
        if c.started {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is already started"
            )));
        }
        if let Some(lc) = c.lc.as_mut() {
            lc.start()
                .map_err(|e| ContainerError::Internal(format!("starting container {id}: {e}")))?;
        }
        c.started = true;
        Ok(())
    }

    /// ExecProcess.
    pub fn exec(&self, id: &str, exec_id: &str, process_json: &[u8]) -> Result<()> {
        check_id("exec_id", exec_id)?;
        let process: OciProcess = serde_json::from_slice(process_json).map_err(|e| {
            ContainerError::InvalidArgument(format!(
                "process is not an OCI runtime-spec Process: {e}"
            ))
        })?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(ContainerError::InvalidArgument(
                "process.args is empty: expected a command".into(),
            ));
        }
        let (dir, root) = {
            let map = self.lock();
            let c = map.get(id).ok_or_else(|| not_found_container(id))?;
            if c.procs.contains_key(exec_id) {
                return Err(ContainerError::AlreadyExists(format!(
                    "process {exec_id} already exists in container {id}"
                )));
            }
            if !c.started || c.lc.is_none() {
                return Err(ContainerError::FailedPrecondition(format!(
                    "container {id} is not running: StartContainer first (and its command must exist)"
                )));
            }
            if c.procs.get(&c.init_exec).is_some_and(|p| p.exited()) {
                return Err(ContainerError::FailedPrecondition(format!(
                    "container {id} has exited"
                )));
            }
            (c.dir.clone(), c.rootfs.clone())
        };
        let proc = if let Some((status, msg)) = precheck(&root, &process) {
            Proc::never_started(status, &msg)
        } else {
            let path = dir.join(format!("exec-{exec_id}.json"));
            std::fs::write(&path, process_json)
                .map_err(io_internal(format!("writing {}", path.display())))?;
            let pipes = make_pipes()?;
            let Pipes {
                child: (cin, cout, cerr),
                stdin,
                stdout,
                stderr,
            } = pipes;
            let pid = ContainerBuilder::new(id.to_string(), SyscallType::default())
                .with_root_path(STATE_DIR)
                .and_then(|b| {
                    b.with_stdin(cin)
                        .with_stdout(cout)
                        .with_stderr(cerr)
                        .as_tenant()
                        .with_process(Some(&path))
                        .with_detach(true)
                        .build()
                })
                .map_err(|e| ContainerError::Internal(format!("exec {exec_id} in {id}: {e}")))?
                .as_raw();
            started_proc(&self.reaper, pid, stdin, stdout, stderr)
        };
        let mut map = self.lock();
        let c = map.get_mut(id).ok_or_else(|| not_found_container(id))?;
        c.procs.insert(exec_id.to_string(), proc);
        Ok(())
    }

    /// The process `exec_id` (empty = init) of container `id`.
    pub fn proc(&self, id: &str, exec_id: &str) -> Result<Arc<Proc>> {
        let map = self.lock();
        let c = map.get(id).ok_or_else(|| not_found_container(id))?;
        let exec_id = if exec_id.is_empty() {
            c.init_exec.as_str()
        } else {
            exec_id
        };
        c.procs.get(exec_id).cloned().ok_or_else(|| {
            ContainerError::NotFound(format!("no process {exec_id:?} in container {id}"))
        })
    }

    /// SignalProcess.
    pub fn signal(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| {
                ContainerError::InvalidArgument(format!("bad signal {signal}: expected 1 to 31"))
            })?;
        let p = self.proc(id, exec_id)?;
        match p.pid {
            Some(pid) if !p.exited() => kill(Pid::from_raw(pid), sig).map_err(|e| {
                ContainerError::FailedPrecondition(format!(
                    "signal {sig} to pid {pid}: {}",
                    e.desc()
                ))
            }),
            _ => Err(ContainerError::FailedPrecondition(format!(
                "process {} of container {id} is not running",
                if exec_id.is_empty() { "init" } else { exec_id }
            ))),
        }
    }

    /// RemoveContainer: SIGTERM, SIGKILL after `grace`, then delete and unmount.
    pub async fn remove(&self, id: &str, grace: std::time::Duration) -> Result<()> {
        let procs: Vec<Arc<Proc>> = {
            let map = self.lock();
            let c = map.get(id).ok_or_else(|| not_found_container(id))?;
            c.procs.values().cloned().collect()
        };
        for p in &procs {
            if let (Some(pid), false) = (p.pid, p.exited()) {
                let _ = kill(
                    Pid::from_raw(pid),
                    if grace.is_zero() {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    },
                );
            }
        }
        for p in &procs {
            if p.pid.is_some() && tokio::time::timeout(grace, p.wait()).await.is_err() {
                if let Some(pid) = p.pid {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), p.wait()).await;
            }
        }
        let mut c = self
            .lock()
            .remove(id)
            .ok_or_else(|| not_found_container(id))?;
        if let Some(lc) = c.lc.as_mut() {
            let _ = lc.refresh_status();
            if let Err(e) = lc.delete(true) {
                crate::log!("container {id}: libcontainer delete: {e}");
            }
        }
        unmount_all(&c.mounts);
        let _ = std::fs::remove_dir_all(&c.dir);
        Ok(())
    }

    /// Kills and removes every container (before power-off).
    pub async fn remove_all(&self) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            let _ = self.remove(&id, std::time::Duration::ZERO).await;
        }
    }
}

fn not_found_container(id: &str) -> ContainerError {
    ContainerError::NotFound(format!("no container {id:?}: CreateContainer first"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn exe(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"#!").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn ids() {
        for ok in ["a", "c1", "sandbox_1.exec-2", &"x".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn resolves_like_a_shell_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        exe(&root.join("bin/busybox"));
        // Absolute symlink: must resolve inside the root, not on the host.
        symlink("/bin/busybox", root.join("bin/sh")).unwrap();
        symlink("busybox", root.join("bin/echo")).unwrap();
        std::fs::write(root.join("bin/data"), b"x").unwrap();
        let env = vec!["PATH=/usr/bin:/bin".to_string()];
        assert_eq!(
            resolve_command(root, "sh", &env),
            Resolved::Found(root.join("bin/busybox"))
        );
        assert_eq!(
            resolve_command(root, "echo", &env),
            Resolved::Found(root.join("bin/busybox"))
        );
        assert_eq!(
            resolve_command(root, "/bin/sh", &[]),
            Resolved::Found(root.join("bin/busybox"))
        );
        assert_eq!(resolve_command(root, "nope", &env), Resolved::NotFound);
        assert_eq!(resolve_command(root, "/bin/nope", &env), Resolved::NotFound);
        assert_eq!(resolve_command(root, "", &env), Resolved::NotFound);
        assert_eq!(
            resolve_command(root, "data", &env),
            Resolved::NotExecutable(root.join("bin/data"))
        );
        // A PATH without /bin does not find sh.
        assert_eq!(
            resolve_command(root, "sh", &["PATH=/usr/bin".into()]),
            Resolved::NotFound
        );
        // Escaping with .. stays inside the root.
        assert_eq!(
            resolve_command(root, "/../../bin/sh", &[]),
            Resolved::Found(root.join("bin/busybox"))
        );
    }

    #[test]
    fn symlink_loops_do_not_hang() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("bin")).unwrap();
        symlink("/bin/b", t.path().join("bin/a")).unwrap();
        symlink("/bin/a", t.path().join("bin/b")).unwrap();
        assert_eq!(resolve_command(t.path(), "a", &[]), Resolved::NotFound);
    }

    #[test]
    fn precheck_maps_to_127_and_126() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("bin")).unwrap();
        std::fs::write(t.path().join("bin/data"), b"x").unwrap();
        let p: OciProcess = serde_json::from_value(serde_json::json!({
            "args": ["nosuchcmd"], "cwd": "/", "user": {"uid": 0, "gid": 0}
        }))
        .unwrap();
        let (status, msg) = precheck(t.path(), &p).unwrap();
        assert_eq!(status, 127);
        assert!(msg.contains("nosuchcmd: command not found"), "{msg}");
        let p: OciProcess = serde_json::from_value(serde_json::json!({
            "args": ["/bin/data"], "cwd": "/", "user": {"uid": 0, "gid": 0}
        }))
        .unwrap();
        assert_eq!(precheck(t.path(), &p).unwrap().0, 126);
    }
}
