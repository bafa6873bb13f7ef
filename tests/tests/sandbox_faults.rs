//! End-to-end fault tests of `cloister run`: each fault gives a one-line
//! error naming the cause and the fix, and leaves no QEMU process and no
//! state dir behind. Boots are real (TCG where KVM is unusable).

use std::time::Duration;

use cloister_e2e::{boot_lock, run_with_input, Env};

fn prerequisites() {
    cloister_e2e::cloister_bin();
    cloister_e2e::assets();
}

// ---- Faults: each a one-line error naming cause and fix, nothing left ----

#[test]
fn missing_rootfs_dir_is_named() {
    prerequisites();
    let env = Env::new();
    let mut c = env.cloister();
    c.args(["run", "--rootfs", "/nonexistent/rootfs", "--", "true"]);
    let out = run_with_input(c, b"", Duration::from_secs(30));
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr.contains("/nonexistent/rootfs does not exist"),
        "{out:?}"
    );
    assert!(out.stderr.contains("--rootfs DIR"), "{out:?}");
    env.assert_clean();
}

#[test]
fn missing_vhost_user_backend_names_the_fix() {
    prerequisites();
    let env = Env::new();
    let mut c = env.run_cmd(&["--channel", "vhost-user-vsock"], &["true"]);
    c.env(
        "CLOISTER_VHOST_USER_VSOCK",
        "/nonexistent/vhost-device-vsock",
    );
    let out = run_with_input(c, b"", Duration::from_secs(30));
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr
            .contains("/nonexistent/vhost-device-vsock, which is not a file"),
        "{out:?}"
    );
    assert!(out.stderr.contains("cargo install"), "{out:?}");
    env.assert_clean();
}

#[test]
fn missing_assets_name_the_fix() {
    prerequisites();
    let env = Env::new();
    let empty = tempfile::tempdir().unwrap();
    let mut c = env.run_cmd(&[], &["true"]);
    c.env("CLOISTER_CACHE_DIR", empty.path());
    let out = run_with_input(c, b"", Duration::from_secs(30));
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr.contains("run `cloister assets build`"),
        "{out:?}"
    );
    env.assert_clean();
}

#[test]
fn missing_or_old_qemu_names_the_fix() {
    prerequisites();
    let env = Env::new();
    let mut c = env.run_cmd(&[], &["true"]);
    c.env("CLOISTER_QEMU", "/nonexistent/qemu-system-x86_64");
    let out = run_with_input(c, b"", Duration::from_secs(30));
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("scripts/install-deps.sh"), "{out:?}");

    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("qemu-system-x86_64");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)'\n",
    )
    .unwrap();
    let mut perm = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&fake, perm).unwrap();
    let mut c = env.run_cmd(&[], &["true"]);
    c.env("CLOISTER_QEMU", &fake);
    let out = run_with_input(c, b"", Duration::from_secs(30));
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr.contains("7.2.15") && out.stderr.contains("10.0 or newer"),
        "{out:?}"
    );
    assert!(out.stderr.contains("scripts/install-deps.sh"), "{out:?}");
    env.assert_clean();
}

#[test]
fn guest_kernel_panic_is_reported_with_console_lines() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    // No such init in the initramfs: the kernel cannot mount a root either
    // and panics.
    let out = env.run(&["--kernel-arg", "rdinit=/no-such-init"], &["true"], b"");
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("guest kernel panicked"), "{out:?}");
    assert!(out.stderr.contains("Kernel panic - not syncing"), "{out:?}");
    assert!(out.stderr.contains("Last console lines"), "{out:?}");
    env.assert_clean();
}

#[test]
fn agent_deadline_kills_the_vm() {
    prerequisites();
    let _lock = boot_lock();
    let env = Env::new();
    // No guest boots to its agent in 1 s: the deadline passes.
    let out = env.run(&["--agent-timeout", "1"], &["true"], b"");
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("did not answer within 1s"), "{out:?}");
    assert!(out.stderr.contains("VM was killed"), "{out:?}");
    env.assert_clean();
}
