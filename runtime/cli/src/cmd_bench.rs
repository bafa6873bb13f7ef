//! `cloister bench boot`: boot time and memory of `cloister run` side by
//! side with the same kernel and initramfs booted by a bare QEMU command
//! line, in one run. Prints medians, the ratio and the commands.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cloister_runtime::hypervisor::{AgentTransport, VmSpec};
use cloister_runtime::{accel, qemu, sandbox};

/// Arguments of `cloister bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
enum BenchWhat {
    /// Sandbox boot: `cloister run` vs a bare QEMU boot to /init.
    Boot(BootArgs),
}

#[derive(Debug, clap::Args)]
struct BootArgs {
    /// Runs of each (alternating).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Container rootfs; default: a busybox rootfs built in a temp dir.
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Console text that shows the agent (/init) has started.
    #[arg(long, default_value = "cloister-agent: starting")]
    marker: String,
    /// vCPUs for both.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Memory (MiB) for both.
    #[arg(long, default_value_t = 512)]
    memory: u32,
}

/// VmHWM (peak RSS, KiB) of /proc/PID/status (`self` for this process).
pub fn vm_hwm_kib(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A busybox-static rootfs: /bin/busybox plus applet links.
pub fn busybox_rootfs(dir: &Path) -> anyhow::Result<()> {
    let bb = Path::new("/bin/busybox");
    if !bb.is_file() {
        bail!("/bin/busybox not found: run scripts/install-deps.sh (installs busybox-static)");
    }
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy(bb, dir.join("bin/busybox"))?;
    let out = Command::new(bb).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct OursRun {
    ready: f64,
    output: f64,
    total: f64,
    runtime_hwm: u64,
    qemu_hwm: u64,
}

fn run_ours(args: &BootArgs, rootfs: &Path, rtdir: &Path) -> anyhow::Result<OursRun> {
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .args([
            "run",
            "--cpus",
            &args.cpus.to_string(),
            "--memory",
            &args.memory.to_string(),
        ])
        .arg("--rootfs")
        .arg(rootfs)
        .args(["--", "echo", "bench-ok"])
        .env("CLOISTER_TIMING", "1")
        .env("CLOISTER_RUNTIME_DIR", rtdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = mpsc::channel::<(String, f64)>();
    let mut out = child.stdout.take().context("stdout")?;
    let tx_out = tx.clone();
    let h1 = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        if matches!(out.read(&mut b), Ok(1)) {
            let _ = tx_out.send(("output".into(), t0.elapsed().as_secs_f64()));
        }
        let mut rest = Vec::new();
        let _ = out.read_to_end(&mut rest);
    });
    let err = child.stderr.take().context("stderr")?;
    let h2 = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send((line, t0.elapsed().as_secs_f64()));
        }
    });
    let status = child.wait()?;
    let total = t0.elapsed().as_secs_f64();
    let _ = h1.join();
    let _ = h2.join();
    let mut r = OursRun {
        ready: f64::NAN,
        output: f64::NAN,
        total,
        runtime_hwm: 0,
        qemu_hwm: 0,
    };
    let mut log = Vec::new();
    for (line, t) in rx.try_iter() {
        if line == "output" {
            r.output = t;
        } else if line.starts_with("cloister-timing: ready") {
            r.ready = t;
        } else if let Some(rest) = line.strip_prefix("cloister-timing: rss ") {
            for kv in rest.split_whitespace() {
                match kv.split_once('=') {
                    Some(("runtime_hwm_kib", v)) => r.runtime_hwm = v.parse().unwrap_or(0),
                    Some(("qemu_hwm_kib", v)) => r.qemu_hwm = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
        } else {
            log.push(line);
        }
    }
    if !status.success() || r.ready.is_nan() || r.output.is_nan() {
        bail!("cloister run failed ({status}): {}", log.join("\n"));
    }
    Ok(r)
}

/// Boots the same kernel and initramfs with the same QEMU arguments the
/// driver uses, without the runtime, and times /init's first console line.
fn run_bare(
    q: &qemu::Qemu,
    spec: &VmSpec,
    marker: &str,
) -> anyhow::Result<(f64, u64, Vec<String>)> {
    let _ = std::fs::remove_file(&spec.console_log);
    let args = qemu::qemu_args(spec)?;
    let t0 = Instant::now();
    let mut child = Command::new(&q.path)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id().to_string();
    let deadline = t0 + Duration::from_secs(120);
    let result = loop {
        let text = std::fs::read(&spec.console_log).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains(marker) {
            break Ok(t0.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            break Err(anyhow::anyhow!(
                "bare QEMU never printed {marker:?} on the console within 120 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let hwm = vm_hwm_kib(&pid).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    Ok((result?, hwm, args))
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchWhat::Boot(args) = args.what;
    let q = qemu::Qemu::find()?;
    let assets = cloister_firmware::Assets::locate(None)?;
    let a = accel::probe();
    let tmp = std::env::temp_dir().join(format!("cloister-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let rootfs = match &args.rootfs {
        Some(r) => r.clone(),
        None => {
            let r = tmp.join("rootfs");
            busybox_rootfs(&r)?;
            r
        }
    };
    let rtdir = tmp.join("run");
    let transport = AgentTransport::Serial {
        socket: tmp.join("bare-agent.sock"),
    };
    let spec = VmSpec {
        name: "cloister-bench-bare".into(),
        kernel: assets.kernel.clone(),
        initramfs: assets.initramfs.clone(),
        cmdline: sandbox::base_cmdline(&transport, &[]),
        vcpus: args.cpus,
        memory_mib: args.memory,
        accel: a.accel,
        console_log: tmp.join("bare-console.log"),
        vmm_log: tmp.join("bare-qemu.log"),
        agent: transport,
        rootfs_image: None,
        scratch_image: None,
        tee: Default::default(),
        // The bare boot is timed to /init; it never serves a host.
        agent_secret: None,
        net: None,
    };
    let (mut bare, mut ready, mut output, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut rt_hwm, mut q_hwm, mut bare_hwm) = (vec![], vec![], vec![]);
    let mut bare_args = vec![];
    for i in 0..args.runs {
        let (t, h, a) = run_bare(&q, &spec, &args.marker)?;
        bare.push(t);
        bare_hwm.push(h as f64);
        bare_args = a;
        let r = run_ours(&args, &rootfs, &rtdir)?;
        ready.push(r.ready);
        output.push(r.output);
        total.push(r.total);
        rt_hwm.push(r.runtime_hwm as f64);
        q_hwm.push(r.qemu_hwm as f64);
        eprintln!(
            "run {}: bare /init {:.3}s | cloister ready {:.3}s output {:.3}s exit {:.3}s",
            i + 1,
            t,
            r.ready,
            r.output,
            r.total
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let (b, rd, o, tt) = (
        median(&mut bare),
        median(&mut ready),
        median(&mut output),
        median(&mut total),
    );
    println!(
        "Sandbox boot, {} runs each, accelerator {} ({}), {} vCPU, {} MiB",
        args.runs, a.accel, a.reason, args.cpus, args.memory
    );
    println!("QEMU {}", q.version);
    println!("| measure | median |");
    println!("|---|---|");
    println!(
        "| bare QEMU: start to /init marker ({:?}) | {b:.3} s |",
        args.marker
    );
    println!(
        "| cloister run: start to agent answering Check | {rd:.3} s ({:.2}x bare) |",
        rd / b
    );
    println!(
        "| cloister run: start to command output | {o:.3} s ({:.2}x bare) |",
        o / b
    );
    println!("| cloister run: start to exit (teardown done) | {tt:.3} s |");
    println!(
        "| runtime (cloister) VmHWM | {:.1} MiB |",
        median(&mut rt_hwm) / 1024.0
    );
    println!(
        "| QEMU VmHWM under cloister | {:.1} MiB |",
        median(&mut q_hwm) / 1024.0
    );
    println!(
        "| QEMU VmHWM bare (at /init) | {:.1} MiB |",
        median(&mut bare_hwm) / 1024.0
    );
    println!();
    println!(
        "bare command: {} {}",
        q.path.display(),
        shell_words(&bare_args)
    );
    Ok(())
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
