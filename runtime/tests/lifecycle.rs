//! The sandbox and container lifecycle driven through the hypervisor seam by
//! the fake VMM: start, agent timeout, kernel panic, VMM death, API
//! mismatch, containers with stdio and signals, and teardown.

use std::time::Duration;

use cloister_runtime::agent::{self, AgentError};
use cloister_runtime::container::{Container, Pumps, KILL_GRACE, SIGTERM};
use cloister_runtime::fake::{FakeBoot, FakeVm, FakeVmm};
use cloister_runtime::{accel::Accel, ChannelChoice, Sandbox, SandboxConfig, SandboxError};
use cloister_tee::{NoTee, TeeKind};

fn config(runtime_dir: &std::path::Path, timeout: Duration) -> SandboxConfig {
    SandboxConfig {
        tee: TeeKind::None,
        kernel: "/fake/vmlinuz".into(),
        initramfs: "/fake/initramfs".into(),
        rootfs: None,
        vcpus: 1,
        memory_mib: 256,
        accel: Accel::Tcg,
        agent_timeout: timeout,
        extra_cmdline: vec!["x=1".into()],
        runtime_dir: runtime_dir.to_path_buf(),
        command: vec!["echo".into(), "hi".into()],
        channel: ChannelChoice::Serial,
        initdata: None,
        firmware: None,
        scratch_disk: None,
    }
}

fn start(
    dir: &std::path::Path,
    boot: FakeBoot,
    timeout: Duration,
) -> (FakeVmm, Result<Sandbox<FakeVm>, SandboxError>) {
    let vmm = FakeVmm::new(boot);
    let sb = Sandbox::start_with(config(dir, timeout), &vmm, &NoTee);
    (vmm, sb)
}

fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "current_thread")]
async fn a_booting_guest_becomes_ready_and_teardown_removes_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let (vmm, sb) = start(
        tmp.path(),
        FakeBoot::Serves {
            delay: Duration::from_millis(100),
        },
        Duration::from_secs(10),
    );
    let mut sb = sb.unwrap();
    let spec = &vmm.started()[0];
    assert!(spec.cmdline.contains("cloister.channel=serial") && spec.cmdline.ends_with("x=1"));
    assert_eq!(spec.name, format!("cloister-{}", sb.id()));
    assert!(sb.state_dir().join("metadata.json").is_file());
    let client = sb.boot().await.unwrap();
    assert!(sb.client().is_some());
    let (tee, ev) = client
        .get_evidence([7; 64], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((tee.as_str(), ev[0]), ("fake", 7));
    let dir = sb.state_dir().to_path_buf();
    sb.shutdown().await;
    assert!(!dir.exists(), "the state dir is removed");
    assert_eq!(entries(tmp.path()), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_agent_times_out_and_the_vm_is_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (_vmm, sb) = start(tmp.path(), FakeBoot::Silent, Duration::from_millis(300));
    let mut sb = sb.unwrap();
    let err = sb.wait_ready().await.unwrap_err();
    assert!(
        matches!(err, SandboxError::AgentTimeout { after, .. } if after == Duration::from_millis(300)),
        "{err}"
    );
    assert!(!sb.vm_running(), "the VM was stopped");
    assert!(
        err.to_string().contains("fake firmware"),
        "console tail: {err}"
    );
    drop(sb);
    assert_eq!(entries(tmp.path()), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_kernel_panic_is_reported_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (_vmm, sb) = start(
        tmp.path(),
        FakeBoot::KernelPanic {
            delay: Duration::from_millis(50),
        },
        Duration::from_secs(10),
    );
    let err = sb.unwrap().wait_ready().await.unwrap_err();
    match err {
        SandboxError::KernelPanic { line, .. } => {
            assert!(line.contains("Unable to mount root fs"), "{line}")
        }
        other => panic!("expected a kernel panic, got {other}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_vmm_that_dies_during_boot_is_reported_with_its_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let (_vmm, sb) = start(
        tmp.path(),
        FakeBoot::Dies {
            delay: Duration::from_millis(50),
            code: 1,
            stderr: "qemu: cannot set up guest memory 'pc.ram'".into(),
        },
        Duration::from_secs(10),
    );
    let err = sb.unwrap().wait_ready().await.unwrap_err();
    match &err {
        SandboxError::VmmExited { status, stderr, .. } => {
            assert!(status.contains('1'), "{status}");
            assert!(stderr.contains("guest memory"), "{stderr}");
        }
        other => panic!("expected VmmExited, got {other}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_vmm_that_refuses_to_start_leaves_no_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (_vmm, sb) = start(tmp.path(), FakeBoot::RefusesStart, Duration::from_secs(1));
    let err = sb.unwrap_err();
    assert!(matches!(err, SandboxError::VmmStart(_)), "{err}");
    assert_eq!(entries(tmp.path()), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn an_agent_of_another_api_major_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let major = cloister_protocol::API_VERSION.major + 1;
    let (_vmm, sb) = start(
        tmp.path(),
        FakeBoot::ApiMajor { major },
        Duration::from_secs(5),
    );
    let err = sb.unwrap().wait_ready().await.unwrap_err();
    assert!(
        matches!(err, SandboxError::Agent(AgentError::Version(_))),
        "{err}"
    );
}

async fn ready(tmp: &std::path::Path) -> (Sandbox<FakeVm>, agent::AgentClient) {
    let (_vmm, sb) = start(
        tmp,
        FakeBoot::Serves {
            delay: Duration::ZERO,
        },
        Duration::from_secs(10),
    );
    let mut sb = sb.expect("the fake VMM starts");
    let c = sb.boot().await.expect("the fake guest boots");
    (sb, c)
}

#[tokio::test(flavor = "current_thread")]
async fn a_container_runs_with_its_output_and_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let (sb, client) = ready(tmp.path()).await;
    let args = vec!["echo".to_owned(), "hello".to_owned()];
    let c = Container::create(
        &client,
        "c0",
        agent::oci_spec(&args, "h"),
        agent::block_rootfs(),
    )
    .await
    .unwrap();
    let p = c.start().await.unwrap();
    let (out_w, mut out_r) = tokio::io::duplex(1024);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let pumps = Pumps::start(
        &p,
        out_w,
        tokio::io::sink(),
        None::<tokio::io::Empty>,
        Some(first_tx),
    );
    let (_tx, mut sigs) = tokio::sync::mpsc::channel(1);
    let st = p.wait_forwarding(&mut sigs, KILL_GRACE).await.unwrap();
    assert_eq!(st.code, 0);
    pumps.drain(Duration::from_secs(2)).await;
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut out_r, &mut out)
        .await
        .unwrap();
    assert_eq!(out, "hello\n");
    assert!(first_rx.await.is_ok(), "first output was timed");

    // An exec in the same container; a second one with the same id is refused.
    let e = c
        .exec("e1", agent::process_json(&["exit".into(), "3".into()]))
        .await
        .unwrap();
    assert_eq!(e.wait().await.unwrap().code, 3);
    assert!(c
        .exec("e1", agent::process_json(&["true".into()]))
        .await
        .is_err());
    assert!(c
        .exec("", agent::process_json(&["true".into()]))
        .await
        .is_err());
    c.remove(Duration::ZERO).await.unwrap();
    // Gone: a second remove is NOT_FOUND from the agent.
    let err = c.remove(Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    sb.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_forwarded_signal_that_is_ignored_escalates_to_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (sb, client) = ready(tmp.path()).await;
    let c = Container::create(
        &client,
        "c0",
        agent::oci_spec(&["ignore-term".into()], "h"),
        agent::block_rootfs(),
    )
    .await
    .unwrap();
    let p = c.start().await.unwrap();
    let (tx, mut sigs) = tokio::sync::mpsc::channel(1);
    tx.send(SIGTERM).await.unwrap();
    let st = tokio::time::timeout(
        Duration::from_secs(5),
        p.wait_forwarding(&mut sigs, Duration::from_millis(200)),
    )
    .await
    .expect("escalated within the grace period")
    .unwrap();
    assert_eq!((st.code, st.signal), (137, 9));

    // A plain sleeper ends on the forwarded SIGTERM itself.
    let s = c
        .exec("s", agent::process_json(&["sleep".into()]))
        .await
        .unwrap();
    tx.send(SIGTERM).await.unwrap();
    let st = s.wait_forwarding(&mut sigs, KILL_GRACE).await.unwrap();
    assert_eq!((st.code, st.signal), (143, 15));
    sb.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_vm_that_dies_under_a_running_container_fails_the_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut sb, client) = ready(tmp.path()).await;
    let c = Container::create(
        &client,
        "c0",
        agent::oci_spec(&["sleep".into()], "h"),
        agent::block_rootfs(),
    )
    .await
    .unwrap();
    let p = c.start().await.unwrap();
    let waiter = tokio::spawn(async move { p.wait().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Drop the VM under the container (what a killed QEMU looks like).
    let dir = sb.state_dir().to_path_buf();
    assert!(sb.vm_running());
    drop(client);
    sb.kill_vm();
    let r = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the wait ends when the VM dies")
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    assert!(!sb.vm_running());
    sb.shutdown().await;
    assert!(!dir.exists());
}

#[tokio::test(flavor = "current_thread")]
async fn the_state_dir_is_private_and_a_client_without_the_secret_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (sb, _client) = ready(tmp.path()).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(sb.state_dir()), 0o700);
    let secret = sb
        .state_dir()
        .join(cloister_runtime::state::files::AGENT_SECRET);
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(std::fs::read(&secret).unwrap().len(), 32);
    // Someone who reaches the agent's socket without the secret.
    let transport = cloister_runtime::AgentTransport::Serial {
        socket: sb
            .state_dir()
            .join(cloister_runtime::state::files::AGENT_SOCK),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let intruder = agent::AgentClient::connect(&transport, deadline)
        .await
        .unwrap();
    assert!(intruder.wait_ready(deadline).await.is_err());
    let wrong = cloister_protocol::auth::Secret::from_bytes(&[0; 32]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let intruder = agent::AgentClient::connect_authenticated(&transport, deadline, Some(&wrong))
        .await
        .unwrap();
    assert!(intruder.wait_ready(deadline).await.is_err());
    sb.shutdown().await;
}

/// A TEE backend that records the launch it was asked to prepare.
#[derive(Default)]
struct RecordingBackend(std::sync::Mutex<Vec<cloister_tee::Launch>>);

impl cloister_tee::HostBackend for RecordingBackend {
    fn kind(&self) -> TeeKind {
        TeeKind::Snp
    }

    fn prepare(
        &self,
        launch: &cloister_tee::Launch,
        _state_dir: &std::path::Path,
    ) -> Result<cloister_tee::Prepared, cloister_tee::PrepareError> {
        if let Ok(mut launches) = self.0.lock() {
            launches.push(launch.clone());
        }
        Ok(cloister_tee::Prepared {
            qemu: Default::default(),
            guard: None,
        })
    }
}

/// The firmware the caller names (`cloister run --firmware`) is what the
/// TEE backend measures and launches.
#[tokio::test(flavor = "current_thread")]
async fn the_firmware_reaches_the_tee_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let vmm = FakeVmm::new(FakeBoot::Serves {
        delay: Duration::from_millis(10),
    });
    let backend = RecordingBackend::default();
    let mut cfg = config(tmp.path(), Duration::from_secs(10));
    cfg.firmware = Some("/fw/OVMF.amdsev.fd".into());
    let sb = Sandbox::start_with(cfg, &vmm, &backend).unwrap();
    let launches = backend.0.lock().unwrap().clone();
    assert_eq!(launches.len(), 1);
    assert_eq!(
        launches[0].firmware.as_deref(),
        Some(std::path::Path::new("/fw/OVMF.amdsev.fd"))
    );
    sb.shutdown().await;
}
