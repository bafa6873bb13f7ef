//! End-to-end tests of `cloister run` and the sandbox lifecycle: they boot
//! real guests (TCG on hosts without a usable KVM) with the real assets and
//! the real `cloister` binary, one boot at a time.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use cloister_e2e::{boot_lock, qemu_pids_mentioning, wait_for, wait_limit, Env};

fn prerequisites() {
    cloister_e2e::cloister_bin();
    cloister_e2e::assets();
}

#[test]
fn echo_prints_and_exits_zero() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let out = env.run(&[], &["echo", "hello from the sandbox"], b"");
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout, "hello from the sandbox\n", "{out:?}");
    env.assert_clean();
}

#[test]
fn exit_codes_and_stderr_propagate() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let out = env.run(&[], &["sh", "-c", "echo to-stderr >&2; exit 7"], b"");
    assert_eq!(out.code(), 7, "{out:?}");
    assert!(out.stderr.contains("to-stderr"), "{out:?}");
    env.assert_clean();
}

#[test]
fn stdin_round_trips() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let input: Vec<u8> = (0..2000)
        .map(|i| format!("line {i}\n"))
        .collect::<String>()
        .into_bytes();
    let out = env.run(&[], &["cat"], &input);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout.as_bytes(), &input[..], "stdin came back changed");
    // EOF reaches the command: wc sees all lines and exits.
    let out = env.run(&[], &["wc", "-l"], b"a\nb\nc\n");
    assert_eq!(out.stdout.trim(), "3", "{out:?}");
    env.assert_clean();
}

/// The vsock transport end to end: the guest's virtio-vsock device is served
/// by a vhost-user backend (this host has no /dev/vhost-vsock), the agent
/// listens on vsock, and stdio, exit codes and teardown work as over serial.
#[test]
fn vsock_channel_through_a_vhost_user_backend() {
    prerequisites();
    if let Err(e) = cloister_runtime::vhost_user::locate() {
        panic!("the vsock e2e test needs the backend: {e}");
    }
    let _lock = boot_lock();
    let env = Env::new();
    let input: Vec<u8> = (0..500)
        .map(|i| format!("vsock line {i}\n"))
        .collect::<String>()
        .into_bytes();
    let out = env.run(
        &["--channel", "vhost-user-vsock"],
        &["sh", "-c", "cat; cat /proc/cmdline >&2; exit 7"],
        &input,
    );
    assert_eq!(out.code(), 7, "{out:?}");
    assert_eq!(out.stdout.as_bytes(), &input[..], "stdin came back changed");
    assert!(
        out.stderr.contains("cloister.channel=vsock:1024"),
        "the guest was not told to use vsock: {out:?}"
    );
    // No QEMU, no vhost-device-vsock, no state dir or socket left.
    env.assert_clean();
}

/// `--channel vsock` on a host whose vhost-vsock cannot be opened fails with
/// the fix, before anything starts.
#[test]
fn vsock_channel_without_vhost_vsock_names_the_fix() {
    prerequisites();
    if cloister_runtime::sandbox::vhost_vsock_usable() {
        // The positive case is the other vsock test; here the refusal is the
        // point, and a host with vhost-vsock cannot show it.
        let env = Env::new();
        let out = env.run(&["--channel", "vsock"], &["true"], b"");
        assert_eq!(out.code(), 0, "{out:?}");
        return;
    }
    let env = Env::new();
    let out = env.run(&["--channel", "vsock"], &["true"], b"");
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("modprobe vhost_vsock"), "{out:?}");
    assert!(
        env.state_dirs().is_empty(),
        "state left behind: {:?}",
        env.state_dirs()
    );
}

/// Regression: WriteStdin frames larger than one virtio-serial buffer (a
/// page) used to stall the agent's port session (the host then failed with
/// "channel closed"). 320 KiB go in as 64 KiB frames and must come back
/// byte for byte.
#[test]
fn large_stdin_round_trips_byte_exact() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let input: Vec<u8> = (0u32..)
        .map(|i| format!("{i:08x} {}\n", "0123456789abcdef".repeat(3)))
        .flat_map(String::into_bytes)
        .take(320 * 1024)
        .collect();
    let out = env.run(&[], &["cat"], &input);
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout.len(), input.len(), "stderr: {}", out.stderr);
    assert!(
        out.stdout.as_bytes() == &input[..],
        "stdin came back changed"
    );
    env.assert_clean();
}

#[test]
fn command_not_found_exits_127() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let out = env.run(&[], &["no-such-command"], b"");
    assert_eq!(out.code(), 127, "{out:?}");
    assert!(out.stderr.contains("no-such-command"), "{out:?}");
    env.assert_clean();
}

/// Starts `cloister run` with a command that prints `started` and then
/// sleeps; returns the child once the command runs, and its stdout lines.
fn start_sleeper(env: &Env, script: &str) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut c = env.run_cmd(&[], &["sh", "-c", script]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = c.spawn().expect("spawning cloister");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(120));
    assert_eq!(first.as_deref(), Ok("started"), "the command never started");
    (child, rx)
}

#[test]
fn sigterm_stops_the_command_and_the_sandbox() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let (mut child, _rx) = start_sleeper(
        &env,
        "trap 'echo got-term; exit 42' TERM; echo started; while true; do sleep 0.2; done",
    );
    let pid = child.id() as i32;
    assert_eq!(qemu_pids_mentioning(env.runtime_dir.path()).len(), 1);
    // std has no kill(pid, SIGTERM): use kill(1).
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = wait_limit(&mut child, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(42),
        "the command's trap decides the exit code"
    );
    env.assert_clean();
}

#[test]
fn sigkill_of_the_runtime_leaves_no_qemu() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let (mut child, _rx) = start_sleeper(&env, "echo started; sleep 1000");
    let qemu = qemu_pids_mentioning(env.runtime_dir.path());
    assert_eq!(qemu.len(), 1, "one QEMU runs the sandbox");
    child.kill().expect("SIGKILL cloister");
    let _ = child.wait();
    let gone = wait_for(Duration::from_secs(5), || {
        qemu_pids_mentioning(env.runtime_dir.path()).is_empty()
    });
    assert!(gone, "QEMU {qemu:?} outlived the SIGKILLed runtime");
    // The state dir cannot clean itself after SIGKILL; `cloister ps` prunes it.
    assert_eq!(env.state_dirs().len(), 1);
    let ps = env.cloister().arg("ps").output().expect("cloister ps");
    assert!(ps.status.success());
    assert!(String::from_utf8_lossy(&ps.stderr).contains("removed the state of dead sandbox"));
    env.assert_clean();
}

#[test]
fn ps_lists_a_running_sandbox() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let (mut child, _rx) = start_sleeper(&env, "echo started; sleep 1000");
    let ps = env
        .cloister()
        .args(["ps", "--json"])
        .output()
        .expect("cloister ps");
    let text = String::from_utf8_lossy(&ps.stdout);
    assert!(
        text.contains("\"sleep 1000\"") || text.contains("sleep 1000"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"runtime_pid\": {}", child.id())),
        "{text}"
    );
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = wait_limit(&mut child, Duration::from_secs(30));
    // sleep as container init ignores SIGINT; the runtime kills it after 5 s.
    assert!(status.code().is_some(), "{status:?}");
    env.assert_clean();
}

#[test]
fn ten_sandboxes_in_a_row_leave_nothing_behind() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    for i in 0..10 {
        let out = env.run(&[], &["sh", "-c", &format!("echo run-{i}")], b"");
        assert_eq!(out.code(), 0, "run {i}: {out:?}");
        assert_eq!(out.stdout, format!("run-{i}\n"));
        env.assert_clean();
    }
}

#[test]
fn two_processes_in_one_sandbox() {
    use cloister_runtime::agent;
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    let assets = cloister_e2e::assets();
    let qemu = cloister_runtime::Qemu::find().expect("QEMU");
    let config = cloister_runtime::SandboxConfig {
        tee: cloister_tee::TeeKind::None,
        kernel: assets.kernel.clone(),
        initramfs: assets.initramfs.clone(),
        rootfs: Some(env.rootfs.path().to_path_buf()),
        vcpus: 1,
        memory_mib: 512,
        accel: cloister_runtime::accel::probe().accel,
        agent_timeout: Duration::from_secs(90),
        extra_cmdline: vec![],
        runtime_dir: env.runtime_dir.path().to_path_buf(),
        command: vec!["exec-test".into()],
        channel: cloister_runtime::ChannelChoice::Auto,
        initdata: None,
        firmware: None,
        scratch_disk: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sb = cloister_runtime::Sandbox::start(config, &qemu, &cloister_tee::NoTee)
            .expect("starting the sandbox");
        let client = sb.wait_ready().await.expect("agent ready");
        client.create_sandbox(sb.id(), None).await.unwrap();
        let init = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "read line; echo init-got-$line".to_owned(),
        ];
        client
            .create_container("c0", agent::oci_spec(&init, "t"), agent::block_rootfs())
            .await
            .unwrap();
        client.start_container("c0").await.unwrap();
        // A second process in the same container, while the first still runs.
        let second = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "echo second; exit 3".to_owned(),
        ];
        client
            .exec("c0", "e1", agent::process_json(&second))
            .await
            .unwrap();
        let out = client.read_output("c0", "e1", false).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "second\n");
        assert_eq!(client.wait("c0", "e1").await.unwrap().code, 3);
        // The first is still alive and answers its stdin.
        client.write_stdin("c0", "", b"ping\n").await.unwrap();
        client.close_stdin("c0", "").await.unwrap();
        let out = client.read_output("c0", "", false).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "init-got-ping\n");
        assert_eq!(client.wait("c0", "").await.unwrap().code, 0);
        client.remove_container("c0", 0).await.unwrap();
        sb.shutdown().await;
    });
    env.assert_clean();
}
