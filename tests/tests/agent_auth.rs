//! The host channel belongs to the runtime alone (issue 10, section 6), end
//! to end on a real guest: the state dir is 0700 and its sockets and secret
//! 0600; and another local user (`runuser -u nobody`) who reaches the
//! agent's vsock port anyway (here: the vhost-user backend's socket, opened
//! up on purpose as vsock would be on a host with /dev/vhost-vsock) is
//! refused, while the same probe with the sandbox secret is answered.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cloister_e2e::{boot_lock, wait_for, Env};

/// A ttrpc Health.Check probe over the vhost-user vsock socket: prints
/// "ANSWERED" if a response frame comes back, "REFUSED" if the connection
/// is closed without one. With a secret file argument it sends the preamble
/// first.
const PROBE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(b"CONNECT 1024\n")
line = b""
while not line.endswith(b"\n"):
    c = s.recv(1)
    if not c:
        print("NO-VSOCK"); sys.exit(0)
    line += c
if not line.startswith(b"OK"):
    print("NO-VSOCK", line); sys.exit(0)
if len(sys.argv) > 2:
    s.sendall(b"CLSTAUT1" + open(sys.argv[2], "rb").read())
def field(n, b):
    return bytes([n << 3 | 2, len(b)]) + b
req = field(1, b"cloister.agent.v1.Health") + field(2, b"Check") + field(3, b"")
s.sendall(len(req).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([1, 0]) + req)
try:
    data = s.recv(10)
except socket.timeout:
    data = b""
print("ANSWERED" if data else "REFUSED")
"#;

fn mode(p: &Path) -> u32 {
    let ls = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    match std::fs::metadata(p) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) => panic!(
            "stat {}: {e}; the dir holds {:?}",
            p.display(),
            p.parent().map(ls).unwrap_or_default()
        ),
    }
}

fn probe(as_nobody: bool, uds: &Path, secret: Option<&Path>) -> String {
    let mut c = if as_nobody {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", "python3", "-c", PROBE]);
        c
    } else {
        let mut c = Command::new("python3");
        c.args(["-c", PROBE]);
        c
    };
    c.arg(uds);
    if let Some(s) = secret {
        c.arg(s);
    }
    let out = c
        .stdin(Stdio::null())
        .output()
        .expect("running the probe (python3, runuser)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[test]
fn another_local_user_who_reaches_the_agent_port_is_refused() {
    cloister_e2e::cloister_bin();
    cloister_e2e::assets();
    assert!(
        std::env::var_os("CLOISTER_VHOST_USER_VSOCK").is_some(),
        "set CLOISTER_VHOST_USER_VSOCK to vhost-device-vsock (scripts/test.sh installs it)"
    );
    let _lock = boot_lock();
    let env = Env::new();
    let out = env
        .run_cmd(
            &["--detach", "--channel", "vhost-user-vsock"],
            &["sleep", "600"],
        )
        .stdin(Stdio::null())
        .output()
        .expect("cloister run --detach");
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir: PathBuf = env.runtime_dir.path().join(&id);

    // Private by default.
    assert_eq!(mode(&dir), 0o700, "state dir");
    let secret = dir.join("agent-secret");
    let uds = dir.join("vsock.sock");
    // (The vhost-user backend's own socket is gone once QEMU connected.)
    for f in [&secret, &uds, &dir.join("ctl.sock")] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    // As another user, the socket is out of reach.
    let blocked = probe(true, &uds, None);
    assert!(blocked.contains("Permission denied"), "{blocked}");

    // Open it up as vsock is to every local user: still refused.
    for d in [env.runtime_dir.path(), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    std::fs::set_permissions(&uds, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert_eq!(probe(true, &uds, None), "REFUSED");
    // The root-only secret is what makes the difference: the same probe
    // with it is answered.
    assert_eq!(probe(false, &uds, Some(&secret)), "ANSWERED");
    assert_eq!(probe(false, &uds, None), "REFUSED");
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    assert!(console.contains("refused a host connection"), "{console}");

    // And the sandbox still works for its owner.
    let exec = env
        .cloister()
        .args(["exec", &id, "--", "echo", "still mine"])
        .stdin(Stdio::null())
        .output()
        .expect("cloister exec");
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        "still mine\n",
        "{exec:?}"
    );
    let rm = env
        .cloister()
        .args(["rm", &id])
        .output()
        .expect("cloister rm");
    assert!(rm.status.success(), "{rm:?}");
    assert!(
        wait_for(Duration::from_secs(30), || !dir.exists()),
        "the state dir outlived rm"
    );
    env.assert_clean();
}
