//! PID 1 duties: the basic file systems, hostname, and powering off.

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};

struct Fs {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

fn basic_mounts() -> Vec<Fs> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    vec![
        Fs {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: nosuid_nodev_noexec,
            data: None,
        },
        Fs {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: nosuid_nodev_noexec,
            data: None,
        },
        Fs {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        Fs {
            source: "devpts",
            target: "/dev/pts",
            fstype: "devpts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("mode=0620,ptmxmode=0666"),
        },
        Fs {
            source: "tmpfs",
            target: "/dev/shm",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777"),
        },
        Fs {
            source: "tmpfs",
            target: "/run",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=0755"),
        },
        Fs {
            source: "tmpfs",
            target: "/tmp",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777"),
        },
    ]
}

/// Which cgroup hierarchy the kernel offers, by `/proc/filesystems`.
pub fn cgroup_kind(filesystems: &str) -> &'static str {
    let has = |name: &str| {
        filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some(name))
    };
    if has("cgroup2") {
        "v2"
    } else if has("cgroup") {
        "v1"
    } else {
        "none"
    }
}

fn mount_one(fs: &Fs) -> Result<(), Errno> {
    std::fs::create_dir_all(fs.target)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    match mount(
        Some(fs.source),
        fs.target,
        Some(fs.fstype),
        fs.flags,
        fs.data,
    ) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Mounts /proc, /sys, /dev, /run, /tmp and the cgroup hierarchy. Returns the
/// cgroup kind mounted ("v2" or "none"). Failures are logged, not fatal: the
/// agent can still answer the host and say what is wrong.
pub fn mount_basics() -> &'static str {
    for fs in basic_mounts() {
        if let Err(e) = mount_one(&fs) {
            crate::log!("mount {} on {}: {}", fs.fstype, fs.target, e.desc());
        }
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let kind = cgroup_kind(&filesystems);
    if kind == "v2" {
        let cg = Fs {
            source: "cgroup2",
            target: "/sys/fs/cgroup",
            fstype: "cgroup2",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: Some("nsdelegate"),
        };
        if let Err(e) = mount_one(&cg) {
            crate::log!("mount cgroup2: {}", e.desc());
            return "none";
        }
        // Let containers use every controller the kernel has.
        if let Ok(ctrls) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
            let enable: String = ctrls.split_whitespace().map(|c| format!("+{c} ")).collect();
            if let Err(e) = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", enable.trim()) {
                crate::log!("enabling cgroup controllers: {e}");
            }
        }
        return "v2";
    }
    crate::log!("kernel has no cgroup2; containers run without cgroups");
    "none"
}

/// Sets the hostname (best effort).
pub fn set_hostname(name: &str) {
    if let Err(e) = nix::unistd::sethostname(name) {
        crate::log!("sethostname {name}: {}", e.desc());
    }
}

/// Whether this process is the guest's init.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Syncs and powers the guest off. Never returns when PID 1 in a guest.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let Err(e) = reboot(RebootMode::RB_POWER_OFF);
    crate::log!("power off failed: {}", e.desc());
    // reboot() only returns on failure; exiting PID 1 makes the kernel panic,
    // which with panic=-1 at least ends the VM.
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_kind_from_proc_filesystems() {
        let v2 = "nodev\tsysfs\nnodev\tcgroup\nnodev\tcgroup2\n\text4\n";
        let v1 = "nodev\tsysfs\nnodev\tcgroup\n";
        assert_eq!(cgroup_kind(v2), "v2");
        assert_eq!(cgroup_kind(v1), "v1");
        assert_eq!(cgroup_kind("nodev\tsysfs\n\text4\n"), "none");
        assert_eq!(cgroup_kind("nodev\tcgroup2x\n"), "none");
    }
}
