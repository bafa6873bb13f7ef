//! `cloister run`: boots a sandbox, runs one command in a container inside
//! it with stdio forwarded, exits with the command's exit code, and tears
//! everything down. SIGINT/SIGTERM are forwarded to the command, then the
//! sandbox is stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use cloister_runtime::agent::{self, AgentClient};
use cloister_runtime::{accel, qemu::Qemu, state, tee, Sandbox, SandboxConfig};
use cloister_tee::TeeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

/// Arguments of `cloister run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// TEE to run in.
    #[arg(long, default_value = "none")]
    tee: TeeKind,
    /// Host directory holding the container's root filesystem.
    #[arg(long, value_name = "DIR")]
    rootfs: PathBuf,
    /// vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=65536))]
    memory: u32,
    /// Seconds the guest agent may take to answer after the VM starts.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        env = "CLOISTER_AGENT_TIMEOUT"
    )]
    agent_timeout: u64,
    /// Initdata document (TOML, CoCo initdata 0.1.0): its digest is bound
    /// into the TEE launch (RPV, HOST_DATA or MRCONFIGID) and the guest
    /// agent refuses to start unless the TEE reports exactly that digest.
    #[arg(long, value_name = "FILE")]
    initdata: Option<PathBuf>,
    /// Agent channel: auto (vsock when /dev/vhost-vsock opens, else serial),
    /// serial, vsock, or vhost-user-vsock (vsock through vhost-device-vsock).
    #[arg(
        long,
        value_name = "CHANNEL",
        default_value = "auto",
        env = "CLOISTER_CHANNEL"
    )]
    channel: cloister_runtime::ChannelChoice,
    /// Extra guest kernel command line word (repeatable; for debugging and tests).
    #[arg(long = "kernel-arg", value_name = "WORD", hide = true)]
    kernel_args: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

const CONTAINER: &str = "c0";

/// Reads and checks an initdata document (a bad one fails here, before a VM
/// starts, naming what is wrong).
pub fn read_initdata(path: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = path else { return Ok(None) };
    let doc =
        std::fs::read(path).with_context(|| format!("reading initdata {}", path.display()))?;
    cloister_tee::initdata::InitdataDigest::of(&doc)
        .with_context(|| format!("initdata {}", path.display()))?;
    Ok(Some(doc))
}

/// Runs the command; exits the process with its exit code.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let qemu = Qemu::find()?;
    let assets = cloister_firmware::Assets::locate(None)?;
    let initdata = read_initdata(args.initdata.as_deref())?;
    let backend = tee::host_backend(args.tee)?;
    let accel = accel::probe();
    let config = SandboxConfig {
        tee: args.tee,
        kernel: assets.kernel.clone(),
        initramfs: assets.initramfs.clone(),
        rootfs: Some(args.rootfs.clone()),
        vcpus: args.cpus,
        memory_mib: args.memory,
        accel: accel.accel,
        agent_timeout: Duration::from_secs(args.agent_timeout),
        extra_cmdline: args.kernel_args.clone(),
        runtime_dir: state::runtime_dir()?,
        command: args.command.clone(),
        channel: args.channel,
        initdata,
    };
    // A current-thread runtime keeps everything (including the QEMU spawn,
    // whose parent-death signal is tied to the spawning thread) on the main
    // thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = rt.block_on(async move {
        let mut sigs = Signals::new()?;
        let mut sandbox = Sandbox::start(config, &qemu, backend.as_ref())?;
        let client = tokio::select! {
            r = sandbox.wait_ready() => r?,
            s = sigs.next() => {
                sandbox.shutdown().await;
                return Ok(128 + s);
            }
        };
        let timing = Timing::new(started);
        timing.mark("ready");
        let code = run_container(&client, &sandbox, &args.command, &mut sigs, &timing).await;
        timing.report(sandbox.vmm_pid());
        sandbox.shutdown().await;
        code
    });
    // Leave without waiting for the blocking stdin reader thread.
    rt.shutdown_background();
    let code = code?;
    std::process::exit(code)
}

async fn run_container(
    client: &AgentClient,
    sandbox: &Sandbox,
    command: &[String],
    sigs: &mut Signals,
    timing: &Timing,
) -> anyhow::Result<i32> {
    client
        .create_sandbox(sandbox.id(), sandbox.initdata())
        .await?;
    client
        .create_container(
            CONTAINER,
            agent::oci_spec(command, "cloister"),
            agent::block_rootfs(),
        )
        .await?;
    client.start_container(CONTAINER).await?;

    let out = tokio::spawn(pump_output(client.clone(), false, timing.clone()));
    let err = tokio::spawn(pump_output(client.clone(), true, timing.clone()));
    let input = tokio::spawn(pump_input(client.clone()));

    // A signal is forwarded to the command; if it has not exited 5 s later
    // (e.g. a container init without a handler ignores SIGTERM), or on a
    // second signal, it is killed.
    let mut kill_at: Option<tokio::time::Instant> = None;
    let status = loop {
        let escalate = async {
            match kill_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = client.wait(CONTAINER, "") => break r?,
            s = sigs.next() => {
                let sig = if kill_at.is_some() { SIGKILL } else { s };
                kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                let _ = client.signal(CONTAINER, "", sig as u32).await;
            }
            _ = escalate => {
                kill_at = None;
                let _ = client.signal(CONTAINER, "", SIGKILL as u32).await;
            }
        }
    };
    input.abort();
    // Drain what the command wrote before it exited.
    for pump in [out, err] {
        let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
    }
    let _ = client.remove_container(CONTAINER, 0).await;
    if status.code == cloister_protocol::EXIT_NOT_FOUND {
        eprintln!(
            "cloister: {}: command not found in the rootfs (exit 127)",
            command.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(status.code)
}

const SIGKILL: i32 = 9;

async fn pump_output(client: AgentClient, stderr: bool, timing: Timing) {
    let mut first = true;
    loop {
        match client.read_output(CONTAINER, "", stderr).await {
            Ok(data) if data.is_empty() => break,
            Ok(data) => {
                if first && !stderr {
                    timing.mark("output");
                    first = false;
                }
                let r = if stderr {
                    let mut e = tokio::io::stderr();
                    e.write_all(&data).await.and(e.flush().await)
                } else {
                    let mut o = tokio::io::stdout();
                    o.write_all(&data).await.and(o.flush().await)
                };
                if r.is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
}

async fn pump_input(client: AgentClient) {
    let mut stdin = tokio::io::stdin();
    // One WriteStdin per chunk of up to 64 KiB (well under ttrpc's 4 MiB
    // frame limit); the agent's port session reads frames spanning many
    // virtio buffers.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = client.close_stdin(CONTAINER, "").await;
                return;
            }
            Ok(n) => {
                let mut off = 0;
                while off < n {
                    match client.write_stdin(CONTAINER, "", &buf[off..n]).await {
                        Ok(0) | Err(_) => return,
                        Ok(w) => off += w,
                    }
                }
            }
        }
    }
}

/// SIGINT and SIGTERM as one stream of signal numbers.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => 2,
            _ = self.term.recv() => 15,
        }
    }
}

/// Timestamps for `cloister bench` (printed to stderr when
/// `CLOISTER_TIMING=1`), relative to the start of `cloister run`.
#[derive(Clone)]
struct Timing {
    start: Instant,
    on: bool,
}

impl Timing {
    fn new(start: Instant) -> Timing {
        Timing {
            start,
            on: std::env::var("CLOISTER_TIMING").is_ok_and(|v| v == "1"),
        }
    }

    fn mark(&self, what: &str) {
        if self.on {
            eprintln!(
                "cloister-timing: {what} {:.3}",
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    fn report(&self, vmm_pid: u32) {
        if self.on {
            let hwm = |pid: &str| crate::cmd_bench::vm_hwm_kib(pid).unwrap_or(0);
            eprintln!(
                "cloister-timing: rss runtime_hwm_kib={} qemu_hwm_kib={}",
                hwm("self"),
                hwm(&vmm_pid.to_string())
            );
        }
    }
}
