//! The README's demo, step by step: the key-broker step releases its secret
//! and leaves no Cloister process behind (the server used to outlive the
//! demo, because `cloister … &` backgrounded a shell function's subshell).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloister_e2e::{cloister_bin, pids_mentioning, run_with_input, wait_for};

fn demo_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh")
}

#[test]
fn demo_kbs_step_releases_the_secret_and_leaves_no_server_running() {
    // Every temp file of the demo (its work dir, hence the KBS data dir on
    // the server's command line) lives under this dir.
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tempfile::tempdir().expect("tempdir");
    let mut c = Command::new("bash");
    c.arg(demo_script())
        .arg("kbs")
        .env("CLOISTER_DEMO_SETUP", "0")
        .env("CLOISTER_BIN", cloister_bin())
        .env("CLOISTER_CONFIG_DIR", config.path())
        .env("TMPDIR", tmp.path())
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE");
    let out = run_with_input(c, b"", Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "demo kbs step failed:\nstdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("released: the demo secret"),
        "no secret released:\n{}",
        out.stdout
    );
    let gone = wait_for(Duration::from_secs(3), || {
        pids_mentioning(tmp.path(), "cloister").is_empty()
    });
    let left = pids_mentioning(tmp.path(), "cloister");
    for pid in &left {
        // Don't leave a stray server running past the test.
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    assert!(
        gone,
        "processes of the demo still running after it exited: {left:?}"
    );
}

#[test]
fn demo_refuses_an_unknown_step_by_name() {
    let mut c = Command::new("bash");
    c.arg(demo_script())
        .arg("nosuchstep")
        .env("CLOISTER_DEMO_SETUP", "0")
        .env("CLOISTER_BIN", cloister_bin());
    let out = run_with_input(c, b"", Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown step nosuchstep"),
        "{}",
        out.stderr
    );
}
