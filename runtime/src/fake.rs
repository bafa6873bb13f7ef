//! A fake VMM behind the [`Hypervisor`] seam, for tests of the sandbox
//! lifecycle without QEMU. It models what the real one does and how it
//! fails: a guest whose agent serves the real ttrpc API on the agent socket
//! after a boot delay, a guest whose agent never answers, a kernel panic on
//! the console (the VMM then exits, as QEMU does with `panic=-1
//! -no-reboot`), a VMM that dies during boot with a message on its stderr,
//! a VMM that refuses to start, and an agent of an incompatible API.
//!
//! The fake agent runs a tiny command language instead of containers:
//! `echo WORDS...` prints and exits 0, `exit N` exits N, `sleep` runs until
//! signalled (exit 128+sig), `ignore-term` ignores SIGTERM; any other
//! command exits 127 as "not found". Requests about unknown containers or
//! processes answer NOT_FOUND like the real agent.
//!
//! It only serves [`AgentTransport::Serial`] (a unix socket in the state
//! dir); start it with `ChannelChoice::Serial`. Its VM handles must be used
//! inside a tokio runtime.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cloister_protocol::agent as pb;
use cloister_protocol::agent_ttrpc::{create_agent_service, AgentService};
use cloister_protocol::health;
use cloister_protocol::health_ttrpc::{create_health, Health};
use cloister_protocol::ttrpc::{self, r#async::TtrpcContext};
use tokio::sync::{watch, Notify};

use crate::hypervisor::{AgentTransport, Hypervisor, VmHandle, VmSpec};
use cloister_protocol::auth::{Secret, PREAMBLE_LEN};

use crate::sandbox::SandboxError;

/// How the fake guest behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeBoot {
    /// The agent serves after `delay`.
    Serves {
        /// Boot time.
        delay: Duration,
    },
    /// The VMM runs, the agent never answers.
    Silent,
    /// The kernel panics after `delay`; the VMM exits 0.
    KernelPanic {
        /// Boot time until the panic.
        delay: Duration,
    },
    /// The VMM exits with `code` after `delay`, writing `stderr` to its log.
    Dies {
        /// Time until it dies.
        delay: Duration,
        /// Exit code.
        code: i32,
        /// Its last stderr line.
        stderr: String,
    },
    /// `start` fails.
    RefusesStart,
    /// The agent serves but reports API major `major`.
    ApiMajor {
        /// The major version it reports.
        major: u32,
    },
}

/// Why the fake VMM did not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeVmmError {
    /// Told to refuse.
    #[error("the fake VMM was told to refuse to start")]
    Refused,
    /// Only the serial transport is modelled.
    #[error("the fake VMM serves only the serial agent transport, got {0:?}")]
    Transport(AgentTransport),
    /// Writing its files failed.
    #[error("fake VMM file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<FakeVmmError> for SandboxError {
    fn from(e: FakeVmmError) -> Self {
        SandboxError::VmmStart(Box::new(e))
    }
}

/// The fake VMM.
#[derive(Debug, Clone)]
pub struct FakeVmm {
    boot: FakeBoot,
    started: Arc<Mutex<Vec<VmSpec>>>,
}

impl FakeVmm {
    /// A fake VMM whose guests behave as `boot` says.
    pub fn new(boot: FakeBoot) -> FakeVmm {
        FakeVmm {
            boot,
            started: Arc::default(),
        }
    }

    /// The specs of the VMs it started, in order.
    pub fn started(&self) -> Vec<VmSpec> {
        self.started.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// What the fake VM's tasks share.
#[derive(Debug, Default)]
struct VmState {
    exited: Option<ExitStatus>,
}

/// A fake VM.
#[derive(Debug)]
pub struct FakeVm {
    state: Arc<Mutex<VmState>>,
    changed: Arc<Notify>,
    agent: AgentTransport,
    console_log: PathBuf,
    task: tokio::task::JoinHandle<()>,
    serving: Arc<std::sync::atomic::AtomicBool>,
}

fn write_file(path: &Path, text: &str, append: bool) -> Result<(), FakeVmmError> {
    use std::io::Write;
    let io = |source| FakeVmmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn exit(state: &Mutex<VmState>, changed: &Notify, status: ExitStatus) {
    if let Ok(mut s) = state.lock() {
        if s.exited.is_none() {
            s.exited = Some(status);
        }
    }
    changed.notify_waiters();
}

fn code_status(code: i32) -> ExitStatus {
    ExitStatus::from_raw((code & 0xff) << 8)
}

impl Hypervisor for FakeVmm {
    type Vm = FakeVm;
    type Error = FakeVmmError;

    fn start(&self, spec: &VmSpec) -> Result<FakeVm, FakeVmmError> {
        if self.boot == FakeBoot::RefusesStart {
            return Err(FakeVmmError::Refused);
        }
        let AgentTransport::Serial { socket } = &spec.agent else {
            return Err(FakeVmmError::Transport(spec.agent.clone()));
        };
        if let Ok(mut v) = self.started.lock() {
            v.push(spec.clone());
        }
        write_file(&spec.console_log, "fake firmware\r\n", false)?;
        write_file(&spec.vmm_log, "", false)?;
        let state = Arc::new(Mutex::new(VmState::default()));
        let changed = Arc::new(Notify::new());
        let (st, ch) = (state.clone(), changed.clone());
        let (boot, socket) = (self.boot.clone(), socket.clone());
        // Like the agent, the fake requires the secret's preamble when the
        // spec hands the guest one.
        let secret = match &spec.agent_secret {
            Some(p) => {
                let bytes = std::fs::read(p).map_err(|source| FakeVmmError::Io {
                    path: p.clone(),
                    source,
                })?;
                Some(Secret::from_bytes(&bytes).map_err(|e| FakeVmmError::Io {
                    path: p.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?)
            }
            None => None,
        };
        let (console, vmm_log) = (spec.console_log.clone(), spec.vmm_log.clone());
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = serving.clone();
        let task = tokio::spawn(async move {
            match boot {
                FakeBoot::Serves { delay } => {
                    tokio::time::sleep(delay).await;
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    serve(
                        &socket,
                        cloister_protocol::API_VERSION.major,
                        secret,
                        st,
                        ch,
                    )
                    .await;
                }
                FakeBoot::ApiMajor { major } => {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    serve(&socket, major, secret, st, ch).await;
                }
                FakeBoot::Silent | FakeBoot::RefusesStart => std::future::pending().await,
                FakeBoot::KernelPanic { delay } => {
                    tokio::time::sleep(delay).await;
                    let _ = write_file(
                        &console,
                        "[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n",
                        true,
                    );
                    exit(&st, &ch, code_status(0));
                }
                FakeBoot::Dies {
                    delay,
                    code,
                    stderr,
                } => {
                    tokio::time::sleep(delay).await;
                    let _ = write_file(&vmm_log, &format!("{stderr}\n"), true);
                    exit(&st, &ch, code_status(code));
                }
            }
        });
        Ok(FakeVm {
            state,
            changed,
            agent: spec.agent.clone(),
            console_log: spec.console_log.clone(),
            task,
            serving,
        })
    }
}

/// Serves the fake agent on `socket` until the VM exits.
async fn serve(
    socket: &Path,
    major: u32,
    secret: Option<Secret>,
    state: Arc<Mutex<VmState>>,
    changed: Arc<Notify>,
) {
    let agent = Arc::new(FakeAgent {
        major,
        procs: Mutex::default(),
        power_off: {
            let (state, changed) = (state.clone(), changed.clone());
            Box::new(move || exit(&state, &changed, code_status(0)))
        },
    });
    let Ok(listener) = tokio::net::UnixListener::bind(socket) else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<tokio::net::UnixStream>>(4);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (tx, secret) = (tx.clone(), secret.clone());
            tokio::spawn(async move {
                if let Some(secret) = secret {
                    let mut pre = [0u8; PREAMBLE_LEN];
                    let ok = tokio::io::AsyncReadExt::read_exact(&mut conn, &mut pre)
                        .await
                        .is_ok()
                        && secret.check(&pre).is_ok();
                    if !ok {
                        return;
                    }
                }
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    let incoming = ttrpc::r#async::transport::Listener::new(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
    }));
    let mut server = ttrpc::r#async::Server::new()
        .add_listener(incoming)
        .register_service(create_health(agent.clone()))
        .register_service(create_agent_service(agent));
    if server.start().await.is_err() {
        return;
    }
    loop {
        let notified = changed.notified();
        if state.lock().map(|s| s.exited.is_some()).unwrap_or(true) {
            break;
        }
        notified.await;
    }
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(socket);
}

impl FakeVm {
    fn exited(&self) -> Option<ExitStatus> {
        self.state.lock().ok().and_then(|s| s.exited)
    }
}

impl VmHandle for FakeVm {
    fn pid(&self) -> u32 {
        // No process of its own; the runtime's pid is what `ps` shows.
        std::process::id()
    }

    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        Ok(self.exited())
    }

    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.exited() {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(&mut self, _grace: Duration) -> std::io::Result<ExitStatus> {
        // SIGTERM ends it at once.
        exit(
            &self.state,
            &self.changed,
            ExitStatus::from_raw(libc::SIGTERM),
        );
        Ok(self.exited().unwrap_or(ExitStatus::from_raw(libc::SIGTERM)))
    }

    fn agent(&self) -> &AgentTransport {
        &self.agent
    }

    fn console_log(&self) -> &Path {
        &self.console_log
    }
}

impl Drop for FakeVm {
    fn drop(&mut self) {
        exit(
            &self.state,
            &self.changed,
            ExitStatus::from_raw(libc::SIGKILL),
        );
        // A serving task shuts its server down on the notification; one
        // still booting (or silent) would never look: cut it short.
        if !self.serving.load(std::sync::atomic::Ordering::SeqCst) {
            self.task.abort();
        }
    }
}

/// One fake process.
#[derive(Debug)]
struct Proc {
    args: Vec<String>,
    started: bool,
    stdout: VecDeque<Vec<u8>>,
    exit: watch::Sender<Option<(i32, u32)>>,
}

impl Proc {
    fn new(args: Vec<String>) -> Proc {
        Proc {
            args,
            started: false,
            stdout: VecDeque::new(),
            exit: watch::channel(None).0,
        }
    }

    /// Runs the command language of the module docs.
    fn start(&mut self) {
        self.started = true;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["echo", rest @ ..] => {
                self.stdout
                    .push_back(format!("{}\n", rest.join(" ")).into_bytes());
                self.exit.send_replace(Some((0, 0)));
            }
            ["exit", n] => {
                let code = n.parse().unwrap_or(1);
                self.exit.send_replace(Some((code, 0)));
            }
            ["sleep", ..] | ["ignore-term"] => {}
            _ => {
                self.exit
                    .send_replace(Some((cloister_protocol::EXIT_NOT_FOUND, 0)));
            }
        }
    }

    fn signal(&mut self, sig: u32) {
        if self.exit.borrow().is_some() {
            return;
        }
        if sig == libc::SIGTERM as u32
            && self.args.first().map(String::as_str) == Some("ignore-term")
        {
            return;
        }
        self.exit.send_replace(Some((128 + sig as i32, sig)));
    }
}

struct FakeAgent {
    major: u32,
    procs: Mutex<HashMap<(String, String), Proc>>,
    power_off: Box<dyn Fn() + Send + Sync>,
}

fn status(code: ttrpc::Code, msg: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

fn not_found(cid: &str, eid: &str) -> ttrpc::Error {
    status(
        ttrpc::Code::NOT_FOUND,
        format!("no process {eid:?} in container {cid:?}"),
    )
}

impl FakeAgent {
    fn with<T>(&self, cid: &str, eid: &str, f: impl FnOnce(&mut Proc) -> T) -> ttrpc::Result<T> {
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| status(ttrpc::Code::INTERNAL, "poisoned".into()))?;
        procs
            .get_mut(&(cid.to_owned(), eid.to_owned()))
            .map(f)
            .ok_or_else(|| not_found(cid, eid))
    }

    fn insert(&self, cid: &str, eid: &str, args: Vec<String>) -> ttrpc::Result<()> {
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| status(ttrpc::Code::INTERNAL, "poisoned".into()))?;
        let key = (cid.to_owned(), eid.to_owned());
        if procs.contains_key(&key) {
            return Err(status(
                ttrpc::Code::ALREADY_EXISTS,
                format!("process {eid:?} in container {cid:?} exists"),
            ));
        }
        procs.insert(key, Proc::new(args));
        Ok(())
    }
}

fn args_of(process: &serde_json::Value) -> Vec<String> {
    process["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait]
impl Health for FakeAgent {
    async fn check(
        &self,
        _: &TtrpcContext,
        _: health::CheckRequest,
    ) -> ttrpc::Result<health::HealthCheckResponse> {
        Ok(health::HealthCheckResponse {
            status: health::health_check_response::ServingStatus::SERVING.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _: &TtrpcContext,
        _: health::VersionRequest,
    ) -> ttrpc::Result<health::VersionResponse> {
        Ok(health::VersionResponse {
            agent_version: "fake".into(),
            api_major: self.major,
            api_minor: cloister_protocol::API_VERSION.minor,
            ..Default::default()
        })
    }
}

#[async_trait]
impl AgentService for FakeAgent {
    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        _: pb::CreateSandboxRequest,
    ) -> ttrpc::Result<pb::Empty> {
        Ok(pb::Empty::default())
    }

    async fn destroy_sandbox(
        &self,
        _: &TtrpcContext,
        _: pb::DestroySandboxRequest,
    ) -> ttrpc::Result<pb::Empty> {
        // Answer first, then power off (like the agent).
        let off = &self.power_off;
        tokio::time::sleep(Duration::from_millis(1)).await;
        off();
        Ok(pb::Empty::default())
    }

    async fn create_container(
        &self,
        _: &TtrpcContext,
        req: pb::CreateContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        let spec: serde_json::Value = serde_json::from_slice(&req.oci_spec)
            .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, format!("oci_spec: {e}")))?;
        self.insert(&req.container_id, "", args_of(&spec["process"]))?;
        Ok(pb::Empty::default())
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        req: pb::StartContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.with(&req.container_id, "", Proc::start)?;
        Ok(pb::Empty::default())
    }

    async fn exec_process(
        &self,
        _: &TtrpcContext,
        req: pb::ExecProcessRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.with(&req.container_id, "", |_| ())?;
        let process: serde_json::Value = serde_json::from_slice(&req.process)
            .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, format!("process: {e}")))?;
        self.insert(&req.container_id, &req.exec_id, args_of(&process))?;
        self.with(&req.container_id, &req.exec_id, Proc::start)?;
        Ok(pb::Empty::default())
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        req: pb::WaitProcessRequest,
    ) -> ttrpc::Result<pb::WaitProcessResponse> {
        let mut rx = self.with(&req.container_id, &req.exec_id, |p| p.exit.subscribe())?;
        let (code, signal) = loop {
            if let Some(e) = *rx.borrow_and_update() {
                break e;
            }
            if rx.changed().await.is_err() {
                return Err(not_found(&req.container_id, &req.exec_id));
            }
        };
        Ok(pb::WaitProcessResponse {
            status: code,
            signal,
            ..Default::default()
        })
    }

    async fn signal_process(
        &self,
        _: &TtrpcContext,
        req: pb::SignalProcessRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.with(&req.container_id, &req.exec_id, |p| p.signal(req.signal))?;
        Ok(pb::Empty::default())
    }

    async fn remove_container(
        &self,
        _: &TtrpcContext,
        req: pb::RemoveContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| status(ttrpc::Code::INTERNAL, "poisoned".into()))?;
        let before = procs.len();
        procs.retain(|(cid, _), p| {
            if *cid == req.container_id {
                p.exit.send_replace(Some((128 + 9, 9)));
                false
            } else {
                true
            }
        });
        if procs.len() == before {
            return Err(not_found(&req.container_id, ""));
        }
        Ok(pb::Empty::default())
    }

    async fn write_stdin(
        &self,
        _: &TtrpcContext,
        req: pb::WriteStreamRequest,
    ) -> ttrpc::Result<pb::WriteStreamResponse> {
        // `cat`-like: what goes in comes out.
        let n = req.data.len();
        self.with(&req.container_id, &req.exec_id, |p| {
            p.stdout.push_back(req.data)
        })?;
        Ok(pb::WriteStreamResponse {
            len: n as u32,
            ..Default::default()
        })
    }

    async fn close_stdin(
        &self,
        _: &TtrpcContext,
        req: pb::CloseStdinRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.with(&req.container_id, &req.exec_id, |_| ())?;
        Ok(pb::Empty::default())
    }

    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        req: pb::ReadStreamRequest,
    ) -> ttrpc::Result<pb::ReadStreamResponse> {
        loop {
            let (chunk, mut rx) = self.with(&req.container_id, &req.exec_id, |p| {
                (p.stdout.pop_front(), p.exit.subscribe())
            })?;
            if let Some(data) = chunk {
                return Ok(pb::ReadStreamResponse {
                    data,
                    ..Default::default()
                });
            }
            if rx.borrow_and_update().is_some() {
                return Ok(pb::ReadStreamResponse::default());
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
        }
    }

    async fn read_stderr(
        &self,
        _: &TtrpcContext,
        req: pb::ReadStreamRequest,
    ) -> ttrpc::Result<pb::ReadStreamResponse> {
        let mut rx = self.with(&req.container_id, &req.exec_id, |p| p.exit.subscribe())?;
        while rx.borrow_and_update().is_none() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        Ok(pb::ReadStreamResponse::default())
    }

    async fn get_evidence(
        &self,
        _: &TtrpcContext,
        req: pb::GetEvidenceRequest,
    ) -> ttrpc::Result<pb::GetEvidenceResponse> {
        Ok(pb::GetEvidenceResponse {
            tee: "fake".into(),
            evidence: req.report_data,
            ..Default::default()
        })
    }
}
