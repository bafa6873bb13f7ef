//! `cloister check`: every host probe with its status and the fix.
//!
//! Three statuses: `ok` (present and working), `--` (optional and missing:
//! only the feature named in the detail needs it) and `FAIL` (required and
//! missing). The exit status is non-zero exactly when something required
//! failed.

use std::fmt::Write as _;

use cloister_runtime::{accel, qemu::Qemu, rootfs, sandbox, state};
use cloister_tee::HostProbe;

/// Arguments of `cloister check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Present and working.
    Ok,
    /// Not present, but only an optional feature needs it.
    Optional,
    /// Required and missing or broken.
    Fail,
}

impl Status {
    /// The word `cloister check` prints in its first column.
    pub fn mark(self) -> &'static str {
        match self {
            Status::Ok => "ok  ",
            Status::Optional => "--  ",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of `cloister check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it is not ok.
    pub fix: Option<String>,
}

impl From<HostProbe> for Check {
    fn from(p: HostProbe) -> Self {
        Check {
            name: p.name,
            status: if p.ok { Status::Ok } else { Status::Fail },
            detail: p.detail,
            fix: p.fix,
        }
    }
}

fn probe(name: &str, ok: bool, detail: String, fix: Option<&str>) -> Check {
    Check {
        name: name.to_owned(),
        status: if ok { Status::Ok } else { Status::Fail },
        detail,
        fix: if ok { None } else { fix.map(str::to_owned) },
    }
}

/// Runs every probe; the runtime's own first.
pub fn probes() -> Vec<Check> {
    let mut out = Vec::new();
    match Qemu::find() {
        Ok(q) => out.push(probe(
            "qemu",
            true,
            format!("{} version {}", q.path.display(), q.version),
            None,
        )),
        Err(e) => out.push(Check {
            name: "qemu".into(),
            status: Status::Fail,
            detail: e.to_string(),
            fix: Some(cloister_runtime::qemu::QEMU_FIX.into()),
        }),
    }
    let a = accel::probe();
    // TCG is a working fallback, so the probe passes either way; it says why.
    out.push(probe(
        "accelerator",
        true,
        format!("{}: {}", a.accel, a.reason),
        None,
    ));
    match cloister_firmware::Assets::locate(None) {
        Ok(assets) => out.push(probe(
            "guest assets",
            true,
            format!(
                "{} (kernel {})",
                assets.dir.display(),
                assets.kernel_release()
            ),
            None,
        )),
        Err(e) => out.push(probe(
            "guest assets",
            false,
            e.to_string(),
            Some("run `cloister assets build`"),
        )),
    }
    let vsock = sandbox::vhost_vsock_usable();
    out.push(probe(
        "agent channel",
        true,
        if vsock {
            "vsock (/dev/vhost-vsock is usable)".to_owned()
        } else {
            "virtio-serial (no usable /dev/vhost-vsock; vsock needs `modprobe vhost_vsock`)"
                .to_owned()
        },
        None,
    ));
    out.push(match cloister_runtime::vhost_user::locate() {
        Ok(p) => probe(
            "vhost-user vsock backend",
            true,
            format!("{} (for --channel vhost-user-vsock)", p.display()),
            None,
        ),
        // Optional: only --channel vhost-user-vsock needs it.
        Err(e) => Check {
            name: "vhost-user vsock backend".into(),
            status: Status::Optional,
            detail: format!("not available; only --channel vhost-user-vsock needs it: {e}"),
            fix: Some(format!(
                "cargo install --locked vhost-device-vsock --version 0.3.0, then put it on PATH or set ${}",
                cloister_runtime::vhost_user::BINARY_ENV
            )),
        },
    });
    out.push(match rootfs::find_mke2fs() {
        Some(p) => probe("mke2fs", true, p.display().to_string(), None),
        None => probe(
            "mke2fs",
            false,
            "not found (needed to hand a --rootfs DIR to the guest)".into(),
            Some("run scripts/install-deps.sh (installs e2fsprogs)"),
        ),
    });
    out.push(match state::runtime_dir() {
        Ok(dir) => match writable(&dir) {
            Ok(()) => probe("runtime dir", true, dir.display().to_string(), None),
            Err(e) => probe(
                "runtime dir",
                false,
                format!("{}: {e}", dir.display()),
                Some("set CLOISTER_RUNTIME_DIR to a writable directory"),
            ),
        },
        Err(e) => probe(
            "runtime dir",
            false,
            e.to_string(),
            Some("set CLOISTER_RUNTIME_DIR to a writable directory"),
        ),
    });
    out
}

fn writable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".check-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Renders checks as `cloister check` prints them.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(out, "{} {:width$}  {}", c.status.mark(), c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "     {:width$}  fix: {fix}", "");
        }
    }
    if checks.iter().any(|c| c.status == Status::Optional) {
        let _ = writeln!(
            out,
            "(--: optional and not present; only the feature named needs it)"
        );
    }
    out
}

/// The names of the required checks that failed.
pub fn failed(checks: &[Check]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.as_str())
        .collect()
}

/// Prints the probes; fails if a required one failed.
pub fn run(_args: CheckArgs) -> anyhow::Result<()> {
    let checks = probes();
    print!("{}", render(&checks));
    // Which TEEs this host can launch. Informational: `none` and `sim` run
    // everywhere, so a host without TEE hardware is not a failed check.
    let tees = cloister_tee::host::probe::tee_probes();
    let tee_width = tees.iter().map(|p| p.name.len()).max().unwrap_or(0);
    println!("TEE launch support (none and sim run on every host):");
    for p in &tees {
        let mark = if p.ok { "yes " } else { "no  " };
        println!("{mark} {:tee_width$}  {}", p.name, p.detail);
        if let Some(fix) = &p.fix {
            println!("     {:tee_width$}  to enable: {fix}", "");
        }
    }
    let failed = failed(&checks);
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} required check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: Status, fix: Option<&str>) -> Check {
        Check {
            name: name.into(),
            status,
            detail: format!("{name} detail"),
            fix: fix.map(str::to_owned),
        }
    }

    #[test]
    fn three_statuses_print_three_marks_and_only_fail_fails() {
        let checks = vec![
            check("qemu", Status::Ok, None),
            check("backend", Status::Optional, Some("install it")),
            check("mke2fs", Status::Fail, Some("apt-get install e2fsprogs")),
        ];
        let text = render(&checks);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ok   qemu"), "{text}");
        assert!(lines[1].starts_with("--   backend"), "{text}");
        assert!(lines[2].contains("fix: install it"), "{text}");
        assert!(lines[3].starts_with("FAIL mke2fs"), "{text}");
        assert!(
            lines[4].contains("fix: apt-get install e2fsprogs"),
            "{text}"
        );
        assert!(text.contains("--: optional"), "{text}");
        assert_eq!(failed(&checks), vec!["mke2fs"]);
    }

    #[test]
    fn optional_alone_does_not_fail_and_ok_has_no_legend() {
        let ok = vec![check("qemu", Status::Ok, None)];
        assert!(failed(&ok).is_empty());
        assert!(!render(&ok).contains("optional"));
        let opt = vec![
            check("qemu", Status::Ok, None),
            check("backend", Status::Optional, None),
        ];
        assert!(failed(&opt).is_empty());
    }

    #[test]
    fn a_missing_vhost_user_backend_is_optional_not_ok() {
        // The probe reads $CLOISTER_VHOST_USER_VSOCK; point it at nothing.
        let var = cloister_runtime::vhost_user::BINARY_ENV;
        let saved = std::env::var_os(var);
        std::env::set_var(var, "/nonexistent/vhost-device-vsock");
        let checks = probes();
        match saved {
            Some(v) => std::env::set_var(var, v),
            None => std::env::remove_var(var),
        }
        let c = checks
            .iter()
            .find(|c| c.name == "vhost-user vsock backend")
            .expect("the backend is checked");
        assert_eq!(c.status, Status::Optional, "{c:?}");
        assert!(c
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("vhost-device-vsock"));
    }
}
