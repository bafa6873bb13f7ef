//! End-to-end test helpers: they locate the real `cloister` binary and the
//! real guest assets (failing with the fix when either is missing), build a
//! busybox-static container rootfs in a temp dir, serialize VM boots across
//! tests and test binaries (2 cores), and inspect the host for leftovers
//! (QEMU processes, sockets, mounts, state dirs).
//!
//! It is not a test framework: each test still asserts what it means.

pub mod kbs_server;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `cloister` binary built next to this test executable
/// (`target/<profile>/cloister`).
pub fn cloister_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("cloister");
    assert!(
        bin.is_file(),
        "{} is missing: build it with cargo build -p cloister-cli",
        bin.display()
    );
    bin
}

/// The built guest assets; fails with the fix when missing.
pub fn assets() -> cloister_firmware::Assets {
    match cloister_firmware::Assets::locate(None) {
        Ok(a) => a,
        Err(e) => panic!("{e} (run cloister assets build)"),
    }
}

/// Holds the machine-wide boot lock: one VM boot at a time across all e2e
/// tests and test binaries.
#[derive(Debug)]
pub struct BootLock(#[allow(dead_code)] File);

/// Takes the boot lock (blocks).
pub fn boot_lock() -> BootLock {
    let path = std::env::temp_dir().join("cloister-e2e-boot.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("opening the boot lock file");
    f.lock().expect("locking the boot lock file");
    BootLock(f)
}

/// A busybox-static container rootfs in a temp dir.
pub fn busybox_rootfs() -> tempfile::TempDir {
    let bb = Path::new("/bin/busybox");
    assert!(
        bb.is_file(),
        "/bin/busybox is missing: run scripts/install-deps.sh (installs busybox-static)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy(bb, root.join("bin/busybox")).expect("copying busybox");
    let out = Command::new(bb)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
    tmp
}

/// A private runtime dir for one test, plus the environment to use it.
#[derive(Debug)]
pub struct Env {
    /// `$CLOISTER_RUNTIME_DIR` for this test.
    pub runtime_dir: tempfile::TempDir,
    /// The container rootfs.
    pub rootfs: tempfile::TempDir,
}

impl Env {
    /// A fresh runtime dir and busybox rootfs.
    pub fn new() -> Env {
        Env {
            runtime_dir: tempfile::tempdir().expect("tempdir"),
            rootfs: busybox_rootfs(),
        }
    }

    /// `cloister ARGS` with this runtime dir.
    pub fn cloister(&self) -> Command {
        let mut c = Command::new(cloister_bin());
        c.env("CLOISTER_RUNTIME_DIR", self.runtime_dir.path())
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        c
    }

    /// `cloister run --rootfs ROOTFS EXTRA... -- CMD...`.
    pub fn run_cmd(&self, extra: &[&str], cmd: &[&str]) -> Command {
        let mut c = self.cloister();
        c.arg("run").arg("--rootfs").arg(self.rootfs.path());
        c.args(extra).arg("--").args(cmd);
        c
    }

    /// Runs `cloister run` with `stdin` and a time limit.
    pub fn run(&self, extra: &[&str], cmd: &[&str], stdin: &[u8]) -> Output {
        let c = self.run_cmd(extra, cmd);
        run_with_input(c, stdin, Duration::from_secs(180))
    }

    /// State dirs left in the runtime dir.
    pub fn state_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.runtime_dir.path())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Asserts nothing of this test is left: no QEMU process, no state dir
    /// (hence no socket), no mount under the runtime dir.
    pub fn assert_clean(&self) {
        let dir = self.runtime_dir.path();
        let pids = qemu_pids_mentioning(dir);
        assert!(pids.is_empty(), "QEMU processes left behind: {pids:?}");
        let pids = pids_mentioning(dir, "vhost-device-vsock");
        assert!(pids.is_empty(), "vsock backends left behind: {pids:?}");
        let left = self.state_dirs();
        assert!(left.is_empty(), "state left in the runtime dir: {left:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(
            !mounts.contains(&dir.display().to_string()),
            "mounts left under {}",
            dir.display()
        );
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Output {
    /// The exit code (panics if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// Runs `c` with `stdin`, killing it after `limit`.
pub fn run_with_input(mut c: Command, stdin: &[u8], limit: Duration) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawning cloister");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut input, &data);
    });
    let (out, err) = collect(&mut child);
    let status = wait_limit(&mut child, limit);
    let _ = writer.join();
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

type Reader = std::thread::JoinHandle<String>;

/// Starts threads draining the child's stdout and stderr.
pub fn collect(child: &mut Child) -> (Reader, Reader) {
    let mut o = child.stdout.take().expect("stdout piped");
    let mut e = child.stderr.take().expect("stderr piped");
    (
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = o.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        }),
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = e.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        }),
    )
}

/// Waits for the child, killing it (and failing) after `limit`.
pub fn wait_limit(child: &mut Child, limit: Duration) -> ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cloister did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of QEMU processes whose command line mentions `path`.
pub fn qemu_pids_mentioning(path: &Path) -> Vec<u32> {
    pids_mentioning(path, "qemu-system")
}

/// Pids of live `program` processes whose command line mentions `path`.
pub fn pids_mentioning(path: &Path, program: &str) -> Vec<u32> {
    let needle = path.display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains(program) && cmd.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until `cond` holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Runs `cloister ARGS` with `$CLOISTER_CONFIG_DIR` set (the sim platform
/// key and other per-host state live there) and collects its output.
pub fn cloister_with_config(config_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(cloister_bin())
        .args(args)
        .env("CLOISTER_CONFIG_DIR", config_dir)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running cloister")
}

/// Asserts `out` succeeded (showing both streams if not); returns stdout.
pub fn stdout_of_success(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sandbox config for a sim guest driven by a test in-process: the real
/// assets, 1 vCPU, 512 MiB, the serial channel (so `cloister measure --tee
/// sim` predicts its command line), no host rootfs, `initdata`, and state
/// under `runtime_dir`.
pub fn sim_sandbox_config(
    runtime_dir: &Path,
    initdata: Vec<u8>,
    command: &str,
) -> cloister_runtime::SandboxConfig {
    let assets = assets();
    std::fs::create_dir_all(runtime_dir).expect("creating the runtime dir");
    cloister_runtime::SandboxConfig {
        tee: cloister_tee::TeeKind::Sim,
        kernel: assets.kernel.clone(),
        initramfs: assets.initramfs.clone(),
        rootfs: None,
        vcpus: 1,
        memory_mib: 512,
        accel: cloister_runtime::accel::probe().accel,
        agent_timeout: Duration::from_secs(240),
        extra_cmdline: vec![],
        runtime_dir: runtime_dir.to_owned(),
        command: vec![command.into()],
        channel: cloister_runtime::ChannelChoice::Serial,
        initdata: Some(initdata),
        firmware: None,
        scratch_disk: None,
    }
}

/// The sim TEE backend with its per-host state in `config_dir`.
pub fn sim_backend(config_dir: &Path) -> Box<dyn cloister_tee::HostBackend> {
    let opts = cloister_tee::host::HostOptions {
        config_dir: config_dir.to_owned(),
    };
    cloister_tee::host::backend(cloister_tee::TeeKind::Sim, &opts)
}

/// Starts a sandbox for `config` with `backend` and waits for its agent;
/// panics (failing the test) if either fails. Call under [`boot_lock`].
pub async fn boot(
    config: cloister_runtime::SandboxConfig,
    backend: &dyn cloister_tee::HostBackend,
) -> (cloister_runtime::Sandbox, cloister_runtime::AgentClient) {
    let qemu = cloister_runtime::Qemu::find().expect("QEMU (scripts/install-deps.sh)");
    let mut sb = cloister_runtime::Sandbox::start(config, &qemu, backend).expect("sandbox");
    let client = sb.wait_ready().await.expect("agent ready");
    (sb, client)
}

/// A current-thread tokio runtime (QEMU's parent-death signal is tied to the
/// thread that spawns it: keep the boot on the test's thread).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
