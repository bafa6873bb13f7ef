//! One sandbox's lifecycle: state dir, rootfs image, TEE preparation, VM
//! start, agent readiness (with a deadline, kernel-panic and VMM-exit
//! detection) and teardown. Whatever happens, dropping a [`Sandbox`] kills
//! its VM and removes its state dir.
//!
//! [`Sandbox::start`] spawns the VMM on the calling thread, and the VMM dies
//! with that thread (PR_SET_PDEATHSIG): call it from a thread that lives as
//! long as the sandbox, e.g. the main thread of a current-thread runtime.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cloister_tee::{HostBackend, Launch, PrepareError, TeeKind};

use crate::accel::Accel;
use crate::agent::{AgentClient, AgentError};
use crate::console;
use crate::hypervisor::{AgentTransport, Hypervisor, VmHandle, VmSpec};
use crate::qemu::{Qemu, QemuDriver, QemuError, QemuVm};
use crate::rootfs::{self, RootfsError};
use crate::scratch::ScratchDisk;
use crate::state::{self, files, Metadata, StateDir, StateError};
use crate::vhost_user::VsockBackend;
use cloister_protocol::auth::Secret;
use cloister_protocol::Channel;

/// How long one Check over a vsock connection may go unanswered before the
/// runtime connects again (a booted agent answers in milliseconds).
const VSOCK_CHECK_TRY: Duration = Duration::from_secs(8);

/// How often the console is read while waiting for the agent's
/// [`cloister_protocol::channel::SERVING_NOTICE`].
const CONSOLE_POLL: Duration = Duration::from_millis(50);

/// Waits until the console says the agent serves on `channel`, or fails with
/// a timeout at `deadline` (reading only what the console gained each time).
async fn wait_for_serving(
    console: &std::path::Path,
    channel: Channel,
    deadline: Instant,
) -> Result<(), AgentError> {
    let started = Instant::now();
    let mut follow = console::Follow::from_start(console);
    while !follow
        .lines()
        .iter()
        .any(|l| console::says_serving(l, channel))
    {
        if Instant::now() >= deadline {
            return Err(AgentError::Timeout {
                what: "its console line saying it serves",
                after: started.elapsed(),
            });
        }
        tokio::time::sleep(CONSOLE_POLL).await;
    }
    Ok(())
}

/// How many lines of the vhost-user vsock backend's log a timeout shows.
const BACKEND_LOG_TAIL: usize = 4;

/// The last `n` non-empty lines of the vsock backend's log, marked as its.
fn backend_log_tail(log: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("vhost-device-vsock: {l}"))
        .collect()
}

/// How many console lines an error shows.
pub const CONSOLE_TAIL: usize = 12;

/// What a sandbox is made of.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// TEE.
    pub tee: TeeKind,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initramfs: PathBuf,
    /// Host directory to give the container as its rootfs.
    pub rootfs: Option<PathBuf>,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// Accelerator (from [`crate::accel::probe`]).
    pub accel: Accel,
    /// How long the agent may take to answer Check after the VM starts.
    pub agent_timeout: Duration,
    /// Extra kernel command line words.
    pub extra_cmdline: Vec<String>,
    /// The runtime dir holding state dirs.
    pub runtime_dir: PathBuf,
    /// The command (recorded in the metadata for `cloister ps`).
    pub command: Vec<String>,
    /// The agent channel.
    pub channel: ChannelChoice,
    /// The initdata document: its digest goes into the TEE's launch
    /// measurement (RPV, HOST_DATA, MRCONFIGID) and the document to the
    /// agent at CreateSandbox.
    pub initdata: Option<Vec<u8>>,
    /// Guest firmware where the TEE needs one (SNP: an OVMF built from
    /// OvmfPkg/AmdSev; TDX: a TDVF); the launch measurement covers it.
    pub firmware: Option<PathBuf>,
    /// Bytes of encrypted scratch disk for images larger than guest RAM
    /// ([`crate::scratch`]); none without.
    pub scratch_disk: Option<u64>,
}

/// Why a sandbox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// State dir trouble.
    #[error(transparent)]
    State(#[from] StateError),
    /// Rootfs trouble.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Scratch disk trouble.
    #[error(transparent)]
    Scratch(#[from] crate::scratch::ScratchError),
    /// The TEE backend refused.
    #[error(transparent)]
    Tee(#[from] PrepareError),
    /// QEMU trouble.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// Another VMM (e.g. the fake one in tests) could not start.
    #[error("the VMM could not start")]
    VmmStart(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The guest kernel panicked.
    #[error("the guest kernel panicked ({line}); the VM was stopped. Last console lines:\n{}", tail.join("\n"))]
    KernelPanic {
        /// The panic line.
        line: String,
        /// The last console lines.
        tail: Vec<String>,
    },
    /// QEMU exited before the agent answered.
    #[error("QEMU exited during boot ({status}): {stderr}. Last console lines:\n{}", tail.join("\n"))]
    VmmExited {
        /// Its exit status.
        status: String,
        /// Its last stderr line.
        stderr: String,
        /// The last console lines.
        tail: Vec<String>,
    },
    /// The agent did not answer in time.
    #[error("the agent did not answer within {}s; the VM was killed (raise --agent-timeout if the host is slow). Last console lines:\n{}", after.as_secs(), tail.join("\n"))]
    AgentTimeout {
        /// The deadline.
        after: Duration,
        /// The last console lines.
        tail: Vec<String>,
    },
    /// The agent answered with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Waiting on QEMU failed.
    #[error("waiting for QEMU")]
    Wait(#[source] std::io::Error),
    /// `--channel vsock` on a host without vhost-vsock.
    #[error("the vsock channel needs /dev/vhost-vsock, which cannot be opened here: run `modprobe vhost_vsock`, or use --channel vhost-user-vsock or serial")]
    NoVhostVsock,
    /// The vhost-user vsock backend failed.
    #[error(transparent)]
    VhostUser(#[from] crate::vhost_user::VhostUserError),
    /// The network the initdata asks for could not be planned.
    #[error("sandbox network")]
    Net(#[from] crate::net::NetError),
}

/// Which agent channel a sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelChoice {
    /// vsock when `/dev/vhost-vsock` can be opened, else virtio-serial.
    #[default]
    Auto,
    /// A virtio-serial port.
    Serial,
    /// virtio-vsock through `/dev/vhost-vsock`.
    Vsock,
    /// virtio-vsock through a vhost-user backend process.
    VhostUserVsock,
}

impl ChannelChoice {
    /// The accepted names, as the CLI spells them.
    pub const NAMES: &'static str = "auto, serial, vsock, vhost-user-vsock";
}

impl std::str::FromStr for ChannelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "serial" => Ok(Self::Serial),
            "vsock" => Ok(Self::Vsock),
            "vhost-user-vsock" => Ok(Self::VhostUserVsock),
            other => Err(format!(
                "unknown agent channel {other:?}: expected one of {}",
                Self::NAMES
            )),
        }
    }
}

impl std::fmt::Display for ChannelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Serial => "serial",
            Self::Vsock => "vsock",
            Self::VhostUserVsock => "vhost-user-vsock",
        })
    }
}

/// The guest CID under a per-sandbox vhost-user backend (it has its own
/// CID space, so every sandbox can use the first unreserved one).
const VHOST_USER_GUEST_CID: u32 = 3;

/// The agent transport for `choice` on this host.
pub fn choose_transport(
    choice: ChannelChoice,
    state_dir: &std::path::Path,
) -> Result<AgentTransport, SandboxError> {
    let port = cloister_protocol::channel::DEFAULT_VSOCK_PORT;
    let vsock = || {
        // Guest CIDs 0-2 are reserved; derive one from our pid so that
        // concurrent sandboxes differ.
        let cid = 3 + (std::process::id() % 0x00ff_ffff);
        AgentTransport::Vsock { cid, port }
    };
    let serial = || AgentTransport::Serial {
        socket: state_dir.join(files::AGENT_SOCK),
    };
    Ok(match choice {
        ChannelChoice::Auto if vhost_vsock_usable() => vsock(),
        ChannelChoice::Auto | ChannelChoice::Serial => serial(),
        ChannelChoice::Vsock if vhost_vsock_usable() => vsock(),
        ChannelChoice::Vsock => return Err(SandboxError::NoVhostVsock),
        ChannelChoice::VhostUserVsock => AgentTransport::VhostUserVsock {
            vmm_socket: state_dir.join(files::VHOST_USER_SOCK),
            uds: state_dir.join(files::VSOCK_HOST_SOCK),
            cid: VHOST_USER_GUEST_CID,
            port,
        },
    })
}

/// Whether `/dev/vhost-vsock` exists and opens read-write.
pub fn vhost_vsock_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vhost-vsock")
        .is_ok()
}

/// The kernel command line before TEE additions.
pub fn base_cmdline(transport: &AgentTransport, extra: &[String]) -> String {
    let mut words = vec![
        "console=ttyS0".to_owned(),
        "panic=-1".to_owned(),
        "quiet".to_owned(),
        transport.guest_channel().cmdline_arg(),
        cloister_protocol::auth::CMDLINE_FLAG.to_owned(),
    ];
    words.extend(extra.iter().cloned());
    words.join(" ")
}

/// A fresh per-sandbox agent secret.
fn new_secret() -> std::io::Result<Secret> {
    let mut b = [0u8; cloister_protocol::auth::SECRET_LEN];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Secret::from_bytes(&b).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Writes `bytes` to a new file that only the owner can read (0600).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// A started sandbox on VM handle `V` (QEMU by default; the fake VMM of
/// [`crate::fake`] in tests). Field order matters: the VM dies before the
/// TEE guard is dropped, and the state dir goes last.
pub struct Sandbox<V: VmHandle = QemuVm> {
    vm: V,
    secret: Secret,
    _vsock_backend: Option<VsockBackend>,
    client: Option<AgentClient>,
    _guard: Option<Box<dyn Send>>,
    config: SandboxConfig,
    meta: Metadata,
    dir: StateDir,
    _scratch: Option<ScratchDisk>,
}

impl<V: VmHandle> std::fmt::Debug for Sandbox<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.dir.id())
            .field("vmm_pid", &self.vm.pid())
            .finish()
    }
}

impl Sandbox<QemuVm> {
    /// Creates the state dir, builds the rootfs image, prepares the TEE and
    /// starts the VM in QEMU. See the module docs for the threading rule.
    pub fn start(
        config: SandboxConfig,
        qemu: &Qemu,
        backend: &dyn HostBackend,
    ) -> Result<Sandbox, SandboxError> {
        Self::start_with(config, &QemuDriver::new(qemu.clone()), backend)
    }
}

impl<V: VmHandle> Sandbox<V> {
    /// Creates the state dir, builds the rootfs image, prepares the TEE and
    /// starts the VM through the hypervisor seam `hv`.
    pub fn start_with<H>(
        config: SandboxConfig,
        hv: &H,
        backend: &dyn HostBackend,
    ) -> Result<Sandbox<V>, SandboxError>
    where
        H: Hypervisor<Vm = V>,
        H::Error: Into<SandboxError>,
    {
        if let Some(dir) = &config.rootfs {
            rootfs::check_dir(dir)?;
        }
        let dir = StateDir::create(&config.runtime_dir)?;
        let mut meta = Metadata {
            id: dir.id().to_owned(),
            created: state::now_unix(),
            runtime_pid: std::process::id(),
            runtime_start: state::process_start_time(std::process::id()).unwrap_or(0),
            vmm_pid: None,
            tee: config.tee.to_string(),
            accel: config.accel.to_string(),
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            rootfs: config.rootfs.clone(),
            command: config.command.clone(),
            scratch: None,
        };
        let scratch = match config.scratch_disk {
            Some(bytes) => Some(ScratchDisk::create(
                &crate::scratch::scratch_dir()?,
                dir.id(),
                bytes,
            )?),
            None => None,
        };
        meta.scratch = scratch.as_ref().map(|s| s.path().to_path_buf());
        dir.write_metadata(&meta)?;
        let rootfs_image = match &config.rootfs {
            Some(src) => {
                let img = dir.file(files::ROOTFS_IMG);
                rootfs::build_image(src, &img)?;
                Some(img)
            }
            None => None,
        };
        let secret = new_secret().map_err(|source| StateError::Io {
            what: "cannot read /dev/urandom for the agent secret of",
            path: dir.path().to_path_buf(),
            source,
        })?;
        let secret_file = dir.file(files::AGENT_SECRET);
        write_private(&secret_file, secret.as_bytes()).map_err(|source| StateError::Io {
            what: "cannot write",
            path: secret_file.clone(),
            source,
        })?;
        let transport = choose_transport(config.channel, dir.path())?;
        let vsock_backend = match &transport {
            AgentTransport::VhostUserVsock {
                vmm_socket,
                uds,
                cid,
                ..
            } => Some(VsockBackend::spawn(
                &crate::vhost_user::locate()?,
                *cid,
                vmm_socket,
                uds,
                &dir.file(files::VHOST_USER_LOG),
                Duration::from_secs(5),
            )?),
            _ => None,
        };
        let launch = Launch {
            kernel: config.kernel.clone(),
            initramfs: config.initramfs.clone(),
            cmdline: base_cmdline(&transport, &config.extra_cmdline),
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            initdata: config.initdata.clone(),
            firmware: config.firmware.clone(),
        };
        let prepared = backend.prepare(&launch, dir.path())?;
        let mut cmdline = launch.cmdline.clone();
        for w in &prepared.qemu.cmdline_extra {
            cmdline.push(' ');
            cmdline.push_str(w);
        }
        let spec = VmSpec {
            name: format!("cloister-{}", dir.id()),
            // A backend that measured the images may pin the exact bytes.
            kernel: prepared.qemu.kernel.clone().unwrap_or(launch.kernel),
            initramfs: prepared.qemu.initramfs.clone().unwrap_or(launch.initramfs),
            cmdline,
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            accel: config.accel,
            console_log: dir.file(files::CONSOLE_LOG),
            vmm_log: dir.file(files::VMM_LOG),
            agent: transport,
            rootfs_image,
            scratch_image: scratch.as_ref().map(|s| s.path().to_path_buf()),
            tee: prepared.qemu,
            agent_secret: Some(secret_file),
            net: crate::net::NetSpec::for_initdata(config.initdata.as_deref())?,
        };
        let vm = hv.start(&spec).map_err(Into::into)?;
        meta.vmm_pid = Some(vm.pid());
        dir.write_metadata(&meta)?;
        let _ = std::fs::write(dir.file(files::VMM_PID), format!("{}\n", vm.pid()));
        Ok(Sandbox {
            vm,
            secret,
            _vsock_backend: vsock_backend,
            client: None,
            _guard: prepared.guard,
            config,
            meta,
            dir,
            _scratch: scratch,
        })
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        self.dir.id()
    }

    /// The initdata document the sandbox was launched with.
    pub fn initdata(&self) -> Option<&[u8]> {
        self.config.initdata.as_deref()
    }

    /// The state dir.
    pub fn state_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The VMM's pid.
    pub fn vmm_pid(&self) -> u32 {
        self.vm.pid()
    }

    /// The metadata as written to the state dir.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The last console lines, cleaned.
    pub fn console_tail(&self, n: usize) -> Vec<String> {
        console::last_lines(&console::read(self.vm.console_log()), n)
    }

    /// Waits until the agent answers Check (within the configured deadline),
    /// watching for a kernel panic or QEMU exiting meanwhile. On failure the
    /// VM is killed. Returns the connected client.
    pub async fn wait_ready(&mut self) -> Result<AgentClient, SandboxError> {
        let deadline = Instant::now() + self.config.agent_timeout;
        let transport = self.vm.agent().clone();
        let console = self.vm.console_log().to_path_buf();
        let secret = self.secret.clone();
        // On vsock a connection exists only once the agent listens, so a
        // Check that goes unanswered means a connection lost on the way:
        // drop it and connect again. A serial port connects at once and its
        // bytes wait for the agent, so there one Check waits for the whole
        // boot.
        let per_try = match transport {
            AgentTransport::Serial { .. } => None,
            _ => Some(VSOCK_CHECK_TRY),
        };
        let ready = async {
            if let AgentTransport::VhostUserVsock { port, .. } = &transport {
                // No connection through the backend before the guest's
                // driver is up (see `SERVING_NOTICE`): one that lands while
                // QEMU is still starting the device kills the backend.
                wait_for_serving(&console, Channel::Vsock { port: *port }, deadline).await?;
            }
            loop {
                let client =
                    AgentClient::connect_authenticated(&transport, deadline, Some(&secret))
                        .await?
                        .with_console(console.clone());
                let try_until = per_try.map_or(deadline, |t| deadline.min(Instant::now() + t));
                match client.wait_ready(try_until).await {
                    Ok(_) => return Ok::<_, AgentError>(client),
                    Err(AgentError::Timeout { .. } | AgentError::Rpc { .. })
                        if per_try.is_some() && Instant::now() < deadline =>
                    {
                        continue
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let outcome = tokio::select! {
            r = ready => match r {
                Ok(c) => Ok(c),
                Err(AgentError::Timeout { .. }) | Err(AgentError::Connect { .. }) => Err(self.timeout_error()),
                Err(e) => Err(self.boot_failure().unwrap_or(SandboxError::Agent(e))),
            },
            e = self.watch_boot(deadline) => Err(e),
        };
        match outcome {
            Ok(c) => {
                self.client = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                let _ = self.vm.stop(Duration::from_millis(500));
                Err(e)
            }
        }
    }

    /// [`Sandbox::wait_ready`], then CreateSandbox with the sandbox's id and
    /// initdata: after this the sandbox takes containers.
    pub async fn boot(&mut self) -> Result<AgentClient, SandboxError> {
        let client = self.wait_ready().await?;
        if let Err(e) = client.create_sandbox(self.id(), self.initdata()).await {
            let _ = self.vm.stop(Duration::from_millis(500));
            return Err(e.into());
        }
        Ok(client)
    }

    fn timeout_error(&mut self) -> SandboxError {
        if let Some(e) = self.boot_failure() {
            return e;
        }
        let mut tail = self.console_tail(CONSOLE_TAIL);
        if matches!(self.vm.agent(), AgentTransport::VhostUserVsock { .. }) {
            // The vsock path runs through the backend: its last words too.
            let log = console::read(&self.dir.file(files::VHOST_USER_LOG));
            tail.extend(backend_log_tail(&log, BACKEND_LOG_TAIL));
        }
        SandboxError::AgentTimeout {
            after: self.config.agent_timeout,
            tail,
        }
    }

    /// A panic on the console or an exited VMM, if either happened.
    fn boot_failure(&mut self) -> Option<SandboxError> {
        let text = console::read(self.vm.console_log());
        if let Some(line) = console::find_panic(&text) {
            return Some(SandboxError::KernelPanic {
                line,
                tail: console::panic_context(&text, CONSOLE_TAIL),
            });
        }
        match self.vm.try_wait() {
            Ok(Some(status)) => {
                let stderr = console::read(&self.dir.file(files::VMM_LOG));
                Some(SandboxError::VmmExited {
                    status: status.to_string(),
                    stderr: stderr
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("no message")
                        .to_owned(),
                    tail: console::last_lines(&text, CONSOLE_TAIL),
                })
            }
            Ok(None) => None,
            Err(e) => Some(SandboxError::Wait(e)),
        }
    }

    /// Resolves when the boot fails (panic, VMM exit) or the deadline passes.
    async fn watch_boot(&mut self, deadline: Instant) -> SandboxError {
        loop {
            if let Some(e) = self.boot_failure() {
                return e;
            }
            if Instant::now() >= deadline {
                return self.timeout_error();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The connected agent client, once [`Sandbox::wait_ready`] succeeded.
    pub fn client(&self) -> Option<&AgentClient> {
        self.client.as_ref()
    }

    /// Kills the VM at once (no DestroySandbox); the state dir stays until
    /// the sandbox is dropped or shut down.
    pub fn kill_vm(&mut self) {
        let _ = self.vm.stop(Duration::ZERO);
    }

    /// Whether QEMU is still running.
    pub fn vm_running(&mut self) -> bool {
        matches!(self.vm.try_wait(), Ok(None))
    }

    /// Stops the sandbox: DestroySandbox (the guest powers off), then waits
    /// for QEMU to exit, killing it if it lingers; removes the state dir.
    pub async fn shutdown(mut self) {
        if let Some(c) = self.client.take() {
            if self.vm_running() {
                let _ = c.destroy_sandbox(Duration::from_secs(3)).await;
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until && self.vm_running() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let _ = self.vm.stop(Duration::from_secs(2));
        // Drop: guard, then the state dir.
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backend_log_tail_keeps_the_last_non_empty_lines() {
        let t = super::backend_log_tail("a\n\nb\n  \nc\n\n", 2);
        assert_eq!(t, ["vhost-device-vsock: b", "vhost-device-vsock: c"]);
        assert_eq!(
            super::backend_log_tail("only\n", 4),
            ["vhost-device-vsock: only"]
        );
        assert!(super::backend_log_tail("", 4).is_empty());
    }

    /// The first vhost-user connection waits for the agent's console line:
    /// before it, nothing; with it, at once; without it, a timeout.
    #[tokio::test]
    async fn the_first_vhost_user_connect_waits_for_the_serving_line() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        let ch = cloister_protocol::Channel::Vsock { port: 1024 };
        std::fs::write(&console, "cloister-agent: starting\n").unwrap();
        let soon = Instant::now() + Duration::from_millis(300);
        let e = super::wait_for_serving(&console, ch, soon)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("serves"), "{e}");
        let writer = {
            let console = console.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let line = cloister_protocol::channel::serving_notice(ch);
                // QEMU appends to the console log.
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&console)
                    .unwrap();
                std::io::Write::write_all(
                    &mut f,
                    format!("x\ncloister-agent: {line} (API 1.3)\n").as_bytes(),
                )
                .unwrap();
            })
        };
        let t0 = Instant::now();
        super::wait_for_serving(&console, ch, t0 + Duration::from_secs(30))
            .await
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(200));
        writer.await.unwrap();
    }
}
