//! `cloister run`: boots a sandbox, runs one command in a container inside
//! it with stdio forwarded, exits with the command's exit code, and tears
//! everything down. SIGINT/SIGTERM are forwarded to the command, then the
//! sandbox is stopped. Argument parsing and printing only: the lifecycle is
//! `cloister_runtime`'s ([`Sandbox`], [`Container`], [`Pumps`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use cloister_runtime::container::KILL_GRACE;
use cloister_runtime::control::ControlSocket;
use cloister_runtime::{
    accel, agent, console, qemu::Qemu, state, tee, Container, Pumps, Sandbox, SandboxConfig,
};
use cloister_tee::TeeKind;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Arguments of `cloister run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// TEE to run in.
    #[arg(long, value_enum, default_value = "none")]
    tee: TeeKind,
    /// Host directory holding the container's root filesystem (`--tee none`
    /// only: a confidential guest never takes its rootfs from the host).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    rootfs: Option<PathBuf>,
    /// Image the guest agent pulls, verifies and decrypts itself, as the
    /// measured initdata says (`REGISTRY/REPO@sha256:DIGEST`, or a tag where
    /// the policy allows it). With no CMD the image's Entrypoint and Cmd run.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=65536))]
    memory: u32,
    /// Encrypted scratch disk for images larger than guest RAM (e.g. 4G):
    /// a sparse file on the host that the guest agent encrypts with a key
    /// it makes and never gives out, and pages the image store out to.
    #[arg(long, value_name = "SIZE", value_parser = cloister_runtime::scratch::parse_size)]
    scratch_disk: Option<u64>,
    /// Seconds the guest agent may take to answer after the VM starts.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        env = "CLOISTER_AGENT_TIMEOUT"
    )]
    agent_timeout: u64,
    /// Guest firmware (SNP: an OVMF built from OvmfPkg/AmdSev; TDX: a
    /// TDVF). Must be the file `cloister measure --firmware` was given.
    #[arg(long, value_name = "FILE")]
    firmware: Option<PathBuf>,
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
    /// Start the container and return: print the sandbox id and leave a
    /// background process owning the sandbox; drive it with `cloister
    /// exec`, `kill` and `rm`. The container's output goes to `c0.out` and
    /// `c0.err` in the sandbox's state dir.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Extra guest kernel command line word (repeatable; for debugging and tests).
    #[arg(long = "kernel-arg", value_name = "WORD", hide = true)]
    kernel_args: Vec<String>,
    /// The command and its arguments (may be left out with --image).
    #[arg(last = true, required_unless_present = "image", value_name = "CMD")]
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

/// The sandbox configuration for `args`.
fn config(args: &RunArgs) -> anyhow::Result<SandboxConfig> {
    if args.tee != TeeKind::None && args.rootfs.is_some() {
        anyhow::bail!(
            "--rootfs with --tee {}: a confidential guest never takes its root filesystem from the host; \
             use --image REF with --initdata FILE (see `cloister initdata new`)",
            args.tee
        );
    }
    let assets = cloister_firmware::Assets::locate(None)?;
    Ok(SandboxConfig {
        tee: args.tee,
        kernel: assets.kernel.clone(),
        initramfs: assets.initramfs.clone(),
        rootfs: args.rootfs.clone(),
        vcpus: args.cpus,
        memory_mib: args.memory,
        accel: accel::probe().accel,
        agent_timeout: Duration::from_secs(args.agent_timeout),
        extra_cmdline: args.kernel_args.clone(),
        runtime_dir: state::runtime_dir()?,
        command: args.command.clone(),
        channel: args.channel,
        initdata: read_initdata(args.initdata.as_deref())?,
        firmware: args.firmware.clone(),
        scratch_disk: args.scratch_disk,
    })
}

/// Set in the environment of the background owner of a detached sandbox.
const DETACHED_ENV: &str = "CLOISTER_DETACHED_OWNER";
/// The line the owner prints once the container runs.
const DETACHED_READY: &str = "cloister-detached: ";

/// Runs the command; exits the process with its exit code.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.detach {
        return if std::env::var_os(DETACHED_ENV).is_some() {
            own_detached(args)
        } else {
            spawn_detached()
        };
    }
    let started = Instant::now();
    let qemu = Qemu::find()?;
    let backend = tee::host_backend(args.tee)?;
    let config = config(&args)?;
    // A current-thread runtime keeps everything (including the QEMU spawn,
    // whose parent-death signal is tied to the spawning thread) on the main
    // thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = rt.block_on(async move {
        let mut sigs = forward_signals()?;
        let mut sandbox = Sandbox::start(config, &qemu, backend.as_ref())?;
        let client = tokio::select! {
            r = sandbox.boot() => r?,
            s = sigs.recv() => {
                sandbox.shutdown().await;
                return Ok(128 + s.unwrap_or(15));
            }
        };
        let timing = Timing::new(started);
        timing.mark("ready");
        let code = run_container(&client, &args, &mut sigs, &timing).await;
        timing.report(sandbox.vmm_pid());
        sandbox.shutdown().await;
        code
    });
    // Leave without waiting for the blocking stdin reader thread.
    rt.shutdown_background();
    let code = code?;
    std::process::exit(code)
}

/// Creates the container: from the host rootfs (`--tee none`), or from an
/// image the agent pulls, showing the agent's pull progress meanwhile.
async fn create_container(
    client: &agent::AgentClient,
    args: &RunArgs,
) -> anyhow::Result<Container> {
    let spec = agent::oci_spec(&args.command, "cloister");
    let Some(reference) = &args.image else {
        return Ok(Container::create(client, CONTAINER, spec, agent::block_rootfs()).await?);
    };
    eprintln!("cloister: the guest pulls {reference}");
    let create = Container::create(client, CONTAINER, spec, agent::image_rootfs(reference));
    tokio::pin!(create);
    let mut follow = client.console().map(console::Follow::new);
    let mut show = PullDisplay::new(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let created = loop {
        tokio::select! {
            r = &mut create => break r,
            _ = tick.tick() => show.all(follow.as_mut()),
        }
    };
    show.all(follow.as_mut());
    show.finish();
    Ok(created?)
}

/// Shows pull progress: a bar redrawn in place on a terminal, one plain line
/// per report otherwise.
struct PullDisplay {
    tty: bool,
    open: bool,
    last: Option<console::PullProgress>,
}

impl PullDisplay {
    fn new(tty: bool) -> Self {
        PullDisplay {
            tty,
            open: false,
            last: None,
        }
    }

    fn all(&mut self, follow: Option<&mut console::Follow>) {
        for p in follow.map(console::Follow::progress).unwrap_or_default() {
            self.update(&p);
        }
    }

    fn update(&mut self, p: &console::PullProgress) {
        eprint!("{}", self.render(p));
    }

    /// What one report adds to the display (empty for a repeated report).
    fn render(&mut self, p: &console::PullProgress) -> String {
        const MIB: f64 = 1024.0 * 1024.0;
        // A layer's end can be reported twice (downloaded, then unpacked).
        if self.last.as_ref() == Some(p) {
            return String::new();
        }
        self.last = Some(p.clone());
        let short = p.layer.get(..19).unwrap_or(&p.layer);
        let (done, total) = (p.done as f64 / MIB, p.total as f64 / MIB);
        if !self.tty {
            return format!("cloister: pull {short} {done:.1}/{total:.1} MiB\n");
        }
        let filled = (p.done * 30).checked_div(p.total).unwrap_or(30).min(30) as usize;
        self.open = p.done < p.total;
        format!(
            "\rcloister: pull {short} [{}{}] {done:.1}/{total:.1} MiB{}",
            "#".repeat(filled),
            ".".repeat(30 - filled),
            if self.open { "" } else { "\n" }
        )
    }

    fn finish(&mut self) {
        if self.open {
            eprintln!();
            self.open = false;
        }
    }
}

#[cfg(test)]
mod pull_display_tests {
    use super::*;

    fn report(done: u64, total: u64) -> console::PullProgress {
        console::PullProgress {
            layer: format!("sha256:{}", "ab".repeat(32)),
            done,
            total,
        }
    }

    /// On a terminal one bar is redrawn in place and ends its line when
    /// the layer is done; otherwise each report is a plain line. A
    /// repeated report shows nothing.
    #[test]
    fn a_bar_on_a_terminal_and_plain_lines_otherwise() {
        const MIB: u64 = 1 << 20;
        let mut tty = PullDisplay::new(true);
        assert_eq!(
            tty.render(&report(MIB, 2 * MIB)),
            format!(
                "\rcloister: pull sha256:abababababab [{}{}] 1.0/2.0 MiB",
                "#".repeat(15),
                ".".repeat(15)
            )
        );
        assert!(tty.open, "the bar's line stays open");
        let done = tty.render(&report(2 * MIB, 2 * MIB));
        assert!(
            done.starts_with('\r') && done.ends_with("2.0/2.0 MiB\n"),
            "{done:?}"
        );
        assert!(!tty.open);
        assert_eq!(tty.render(&report(2 * MIB, 2 * MIB)), "", "repeated");

        let mut plain = PullDisplay::new(false);
        let lines: String = [report(0, MIB), report(MIB / 2, MIB), report(MIB, MIB)]
            .iter()
            .map(|p| plain.render(p))
            .collect();
        assert_eq!(
            lines,
            "cloister: pull sha256:abababababab 0.0/1.0 MiB\n\
             cloister: pull sha256:abababababab 0.5/1.0 MiB\n\
             cloister: pull sha256:abababababab 1.0/1.0 MiB\n"
        );
        assert!(!lines.contains('\r'));
    }
}

async fn run_container(
    client: &agent::AgentClient,
    args: &RunArgs,
    sigs: &mut mpsc::Receiver<i32>,
    timing: &Timing,
) -> anyhow::Result<i32> {
    let command = &args.command;
    let container = create_container(client, args).await?;
    let process = container.start().await?;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let pumps = Pumps::start(
        &process,
        tokio::io::stdout(),
        tokio::io::stderr(),
        Some(tokio::io::stdin()),
        Some(first_tx),
    );
    let status = process.wait_forwarding(sigs, KILL_GRACE).await?;
    // Drain what the command wrote before it exited.
    pumps.drain(Duration::from_secs(5)).await;
    if let Ok(at) = first_rx.await {
        timing.mark_at("output", at);
    }
    let _ = container.remove(Duration::ZERO).await;
    if status.code == cloister_protocol::EXIT_NOT_FOUND {
        eprintln!(
            "cloister: {}: command not found in the rootfs (exit 127)",
            command.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(status.code)
}

/// `cloister run --detach`: starts this same command line again as a
/// background owner in its own session, relays its messages until it says
/// the container runs, prints the sandbox id and returns.
fn spawn_detached() -> anyhow::Result<()> {
    use std::io::BufRead;
    let exe = std::env::current_exe().context("finding the cloister binary")?;
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DETACHED_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(writer.try_clone().context("duplicating a pipe")?)
        .stderr(writer)
        .spawn()
        .context("starting the sandbox owner")?;
    for line in std::io::BufReader::new(reader).lines() {
        let line = line.context("reading from the sandbox owner")?;
        if let Some(id) = line.strip_prefix(DETACHED_READY) {
            println!("{id}");
            return Ok(());
        }
        eprintln!("{line}");
    }
    let status = child.wait().context("waiting for the sandbox owner")?;
    anyhow::bail!("the sandbox did not start ({status})")
}

/// The background owner of a detached sandbox: boots it, starts the
/// container with its output in the state dir, reports the id, then serves
/// the control socket until `cloister rm` (or SIGTERM, or the VM's end).
fn own_detached(args: RunArgs) -> anyhow::Result<()> {
    let _ = nix::unistd::setsid();
    let qemu = Qemu::find()?;
    let backend = tee::host_backend(args.tee)?;
    let config = config(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = rt.block_on(async move {
        let mut sigs = forward_signals()?;
        let mut sandbox = Sandbox::start(config, &qemu, backend.as_ref())?;
        let client = match sandbox.boot().await {
            Ok(c) => c,
            Err(e) => {
                sandbox.shutdown().await;
                return Err(anyhow::Error::from(e));
            }
        };
        let dir = sandbox.state_dir().to_path_buf();
        let started = async {
            let container = create_container(&client, &args).await?;
            let process = container.start().await?;
            let out = private_file(&dir.join("c0.out")).await?;
            let err = private_file(&dir.join("c0.err")).await?;
            let pumps = Pumps::start(&process, out, err, None::<tokio::io::Empty>, None);
            Ok::<_, anyhow::Error>((container, pumps))
        }
        .await;
        let (container, _pumps) = match started {
            Ok(c) => c,
            Err(e) => {
                sandbox.shutdown().await;
                return Err(e);
            }
        };
        let ctl = dir.join(cloister_runtime::control::CONTROL_SOCK);
        let ctl = match ControlSocket::bind(&ctl)
            .with_context(|| format!("creating the control socket {}", ctl.display()))
        {
            Ok(c) => c,
            Err(e) => {
                let _ = container.remove(Duration::from_secs(2)).await;
                sandbox.shutdown().await;
                return Err(e);
            }
        };
        println!("{DETACHED_READY}{}", sandbox.id());
        detach_stdio();
        let mut watch = tokio::time::interval(Duration::from_millis(500));
        let serving = ctl.serve(&client, &container);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                _ = &mut serving => break,
                _ = sigs.recv() => {
                    let _ = container.remove(Duration::from_secs(2)).await;
                    break;
                }
                _ = watch.tick() => if !sandbox.vm_running() { break },
            }
        }
        sandbox.shutdown().await;
        Ok(())
    });
    rt.shutdown_background();
    r
}

/// Creates `path` 0600 for a container's output.
async fn private_file(path: &std::path::Path) -> anyhow::Result<tokio::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(tokio::fs::File::from_std(f))
}

/// Points stdout and stderr at /dev/null once the parent has its answer.
fn detach_stdio() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 2);
    }
}

/// SIGINT and SIGTERM as a channel of signal numbers.
pub fn forward_signals() -> anyhow::Result<mpsc::Receiver<i32>> {
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = int.recv() => 2,
                _ = term.recv() => 15,
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
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
        self.mark_at(what, Instant::now());
    }

    fn mark_at(&self, what: &str, at: Instant) {
        if self.on {
            eprintln!(
                "cloister-timing: {what} {:.3}",
                at.saturating_duration_since(self.start).as_secs_f64()
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
