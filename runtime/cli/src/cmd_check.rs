//! `cloister check`: every host probe with pass/fail and the fix.

use cloister_runtime::{accel, qemu::Qemu, rootfs, sandbox, state};
use cloister_tee::HostProbe;

/// Arguments of `cloister check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

fn probe(name: &str, ok: bool, detail: String, fix: Option<&str>) -> HostProbe {
    HostProbe {
        name: name.to_owned(),
        ok,
        detail,
        fix: if ok { None } else { fix.map(str::to_owned) },
    }
}

/// Runs every probe; the runtime's own first.
pub fn probes() -> Vec<HostProbe> {
    let mut out = Vec::new();
    match Qemu::find() {
        Ok(q) => out.push(probe(
            "qemu",
            true,
            format!("{} version {}", q.path.display(), q.version),
            None,
        )),
        Err(e) => out.push(HostProbe {
            name: "qemu".into(),
            ok: false,
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
        Err(e) => probe(
            "vhost-user vsock backend",
            true,
            format!("not available, --channel vhost-user-vsock will fail: {e}"),
            None,
        ),
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

/// Prints the probes; fails if any failed.
pub fn run(_args: CheckArgs) -> anyhow::Result<()> {
    let probes = probes();
    let width = probes.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in &probes {
        let mark = if p.ok { "ok  " } else { "FAIL" };
        println!("{mark} {:width$}  {}", p.name, p.detail);
        if let Some(fix) = &p.fix {
            println!("     {:width$}  fix: {fix}", "");
        }
    }
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
    let failed: Vec<&str> = probes
        .iter()
        .filter(|p| !p.ok)
        .map(|p| p.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} check(s) failed: {}", failed.len(), failed.join(", "))
    }
}
