//! The QEMU driver: finds `qemu-system-x86_64` (10.x or newer), turns a
//! [`VmSpec`] into a command line, and owns the QEMU process, which never
//! outlives the runtime: it gets SIGKILL when the spawning thread dies (even
//! if the runtime is SIGKILLed) and is killed when its handle drops.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::accel::Accel;
use crate::hypervisor::{AgentTransport, Hypervisor, VmHandle, VmSpec};
use cloister_tee::{MemoryBackend, MemoryBackendKind};

/// The QEMU binary name.
pub const QEMU_BIN: &str = "qemu-system-x86_64";
/// The oldest QEMU major version Cloister supports (memfd backends,
/// `sev-snp-guest`).
pub const MIN_MAJOR: u32 = 10;
/// The fix for a missing or old QEMU.
pub const QEMU_FIX: &str = "run scripts/install-deps.sh (installs QEMU 10 from bookworm-backports)";

/// Why QEMU could not be found, configured or started.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// Not in PATH (or `$CLOISTER_QEMU` points nowhere).
    #[error("{QEMU_BIN} not found ({searched}): {QEMU_FIX}")]
    NotFound {
        /// Where it was looked for.
        searched: String,
    },
    /// Too old.
    #[error("{} is QEMU {found}, Cloister needs {MIN_MAJOR}.0 or newer: {QEMU_FIX}", path.display())]
    TooOld {
        /// The binary.
        path: PathBuf,
        /// Its version.
        found: String,
    },
    /// `--version` printed something we do not understand.
    #[error("{} --version printed {output:?}, expected \"QEMU emulator version X.Y.Z\": {QEMU_FIX}", path.display())]
    BadVersion {
        /// The binary.
        path: PathBuf,
        /// The first line it printed.
        output: String,
    },
    /// vhost-user needs shared RAM, which a TEE's private memory is not.
    #[error("the vhost-user vsock channel needs shared guest RAM, but the TEE backend sets its own memory ({0}); use --channel serial with this TEE")]
    VhostUserWithTeeMemory(String),
    /// A TEE memory backend whose id QEMU cannot take.
    #[error(
        "TEE memory backend id {0:?} is empty or holds a comma: expected a plain name like ram0"
    )]
    BadBackendId(String),
    /// Running QEMU failed.
    #[error("cannot run {}", path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A log file could not be created.
    #[error("cannot create {}", path.display())]
    Log {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A QEMU binary whose version was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    /// Path of `qemu-system-x86_64`.
    pub path: PathBuf,
    /// Its version, e.g. `10.0.2`.
    pub version: String,
}

impl Qemu {
    /// Finds QEMU: `$CLOISTER_QEMU` if set, else `qemu-system-x86_64` in
    /// `$PATH`; checks that it is version 10 or newer.
    pub fn find() -> Result<Qemu, QemuError> {
        let path = match std::env::var_os("CLOISTER_QEMU").filter(|v| !v.is_empty()) {
            Some(p) => {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    return Err(QemuError::NotFound {
                        searched: format!("CLOISTER_QEMU={}", p.display()),
                    });
                }
                p
            }
            None => search_path(QEMU_BIN, std::env::var_os("PATH")).ok_or_else(|| {
                QemuError::NotFound {
                    searched: "not in PATH".to_owned(),
                }
            })?,
        };
        let out = Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|source| QemuError::Spawn {
                path: path.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or("").to_owned();
        let (major, version) = parse_version(&first).ok_or_else(|| QemuError::BadVersion {
            path: path.clone(),
            output: first.clone(),
        })?;
        if major < MIN_MAJOR {
            return Err(QemuError::TooOld {
                path,
                found: version,
            });
        }
        Ok(Qemu { path, version })
    }
}

fn search_path(bin: &str, path: Option<OsString>) -> Option<PathBuf> {
    std::env::split_paths(&path?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Parses `QEMU emulator version 10.0.2 (Debian ...)` into (10, "10.0.2").
pub fn parse_version(line: &str) -> Option<(u32, String)> {
    let rest = line.trim().strip_prefix("QEMU emulator version ")?;
    let version = rest.split_whitespace().next()?;
    let major = version.split('.').next()?.parse().ok()?;
    Some((major, version.to_owned()))
}

/// Escapes a value for a QEMU option list (commas are doubled).
fn esc(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The machine type. Measured under TCG on the 6.12 cloud kernel (see
/// docs/benchmarks.md, "Sandbox boot"): `microvm` was at best 15% faster but
/// hung in 2 of 3 boots (timer calibration without HPET), so q35 it is.
pub const MACHINE: &str = "q35";

/// Builds QEMU's arguments for a spec (without the binary itself).
pub fn qemu_args(spec: &VmSpec) -> Result<Vec<String>, QemuError> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
    push(&["-name", &spec.name]);
    let mut machine = MACHINE.to_owned();
    let mut objects = spec.tee.objects.clone();
    let memory_backend = match (&spec.agent, &spec.tee.memory_backend) {
        // A vhost-user backend maps guest RAM, so RAM must be a shared fd.
        (AgentTransport::VhostUserVsock { .. }, None) => Some(MemoryBackend {
            kind: MemoryBackendKind::Memfd { share: true },
            id: "ram0".to_owned(),
            size_mib: spec.memory_mib,
        }),
        (AgentTransport::VhostUserVsock { .. }, Some(tee)) => {
            return Err(QemuError::VhostUserWithTeeMemory(tee.qemu_object()))
        }
        (_, tee) => tee.clone(),
    };
    if let Some(backend) = &memory_backend {
        if backend.id.is_empty() || backend.id.contains(',') {
            return Err(QemuError::BadBackendId(backend.id.clone()));
        }
        machine.push_str(&format!(",memory-backend={}", backend.id));
        objects.push(backend.qemu_object());
    }
    for prop in &spec.tee.machine_props {
        machine.push(',');
        machine.push_str(prop);
    }
    let cpu = match spec.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    push(&[
        "-machine",
        &machine,
        "-accel",
        spec.accel.as_str(),
        "-cpu",
        cpu,
        "-smp",
        &spec.vcpus.to_string(),
        "-m",
        &format!("{}M", spec.memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-kernel",
        &spec.kernel.display().to_string(),
        "-initrd",
        &spec.initramfs.display().to_string(),
        "-append",
        &spec.cmdline,
        "-chardev",
        &format!("file,id=console,path={}", esc(&spec.console_log)),
        "-serial",
        "chardev:console",
    ]);
    match &spec.agent {
        AgentTransport::Serial { socket } => push(&[
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            &format!("socket,id=agent,path={},server=on,wait=off", esc(socket)),
            "-device",
            &format!(
                "virtserialport,bus=vser0.0,chardev=agent,name={}",
                cloister_protocol::channel::SERIAL_PORT_NAME
            ),
        ]),
        AgentTransport::Vsock { cid, .. } => {
            push(&["-device", &format!("vhost-vsock-pci,guest-cid={cid}")])
        }
        AgentTransport::VhostUserVsock { vmm_socket, .. } => push(&[
            "-chardev",
            &format!("socket,id=vsock0,path={}", esc(vmm_socket)),
            "-device",
            "vhost-user-vsock-pci,chardev=vsock0",
        ]),
    }
    if let Some(img) = &spec.rootfs_image {
        push(&[
            "-drive",
            &format!("file={},if=none,id=rootfs,format=raw,readonly=on", esc(img)),
            "-device",
            "virtio-blk-pci,drive=rootfs,serial=cloister-rootfs",
        ]);
    }
    if let Some(img) = &spec.scratch_image {
        // Sparse; the guest writes only ciphertext, and discards come back
        // as holes.
        push(&[
            "-drive",
            &format!(
                "file={},if=none,id=scratch,format=raw,discard=unmap",
                esc(img)
            ),
            "-device",
            &format!(
                "virtio-blk-pci,drive=scratch,serial={}",
                crate::scratch::SERIAL
            ),
        ]);
    }
    if let Some(secret) = &spec.agent_secret {
        // The file's path is on the command line, its content is not.
        push(&[
            "-fw_cfg",
            &format!(
                "name={},file={}",
                crate::hypervisor::AGENT_SECRET_FW_CFG,
                esc(secret)
            ),
        ]);
    }
    if let Some(net) = &spec.net {
        let args = net.qemu_args();
        push(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for o in &objects {
        push(&["-object", o]);
    }
    a.extend(spec.tee.extra_args.iter().cloned());
    Ok(a)
}

/// The QEMU driver.
#[derive(Debug, Clone)]
pub struct QemuDriver {
    qemu: Qemu,
}

impl QemuDriver {
    /// A driver for a checked QEMU binary.
    pub fn new(qemu: Qemu) -> QemuDriver {
        QemuDriver { qemu }
    }
}

impl Hypervisor for QemuDriver {
    type Vm = QemuVm;
    type Error = QemuError;

    fn start(&self, spec: &VmSpec) -> Result<QemuVm, QemuError> {
        let args = qemu_args(spec)?;
        let log = File::create(&spec.vmm_log).map_err(|source| QemuError::Log {
            path: spec.vmm_log.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.qemu.path);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        crate::sys::kill_child_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| QemuError::Spawn {
            path: self.qemu.path.clone(),
            source,
        })?;
        Ok(QemuVm {
            child,
            exited: None,
            agent: spec.agent.clone(),
            console_log: spec.console_log.clone(),
        })
    }
}

/// A running QEMU. Dropping it kills QEMU.
#[derive(Debug)]
pub struct QemuVm {
    child: Child,
    exited: Option<ExitStatus>,
    agent: AgentTransport,
    console_log: PathBuf,
}

impl VmHandle for QemuVm {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        let s = self.child.wait()?;
        self.exited = Some(s);
        Ok(s)
    }

    fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.try_wait()? {
            return Ok(s);
        }
        // SIGTERM makes QEMU quit cleanly (it flushes the console log).
        let _ = crate::sys::send_signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.wait()
    }

    fn agent(&self) -> &AgentTransport {
        &self.agent
    }

    fn console_log(&self) -> &Path {
        &self.console_log
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_tee::QemuSettings;

    fn spec() -> VmSpec {
        VmSpec {
            name: "cloister-t".into(),
            kernel: "/a/vmlinuz".into(),
            initramfs: "/a/initramfs.cpio".into(),
            cmdline: "console=ttyS0 cloister.channel=serial".into(),
            vcpus: 2,
            memory_mib: 512,
            accel: Accel::Tcg,
            console_log: "/s,x/console.log".into(),
            vmm_log: "/s/qemu.log".into(),
            agent: AgentTransport::Serial {
                socket: "/s/agent.sock".into(),
            },
            rootfs_image: Some("/s/rootfs.img".into()),
            scratch_image: None,
            tee: QemuSettings::default(),
            agent_secret: Some("/s/agent-secret".into()),
            net: None,
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn versions() {
        let cases = [
            (
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)",
                Some((10, "10.0.2")),
            ),
            (
                "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)",
                Some((7, "7.2.15")),
            ),
            ("QEMU emulator version 11.1.0", Some((11, "11.1.0"))),
            ("qemu 10", None),
            ("", None),
        ];
        for (line, want) in cases {
            let got = parse_version(line);
            assert_eq!(got, want.map(|(m, v)| (m, v.to_owned())), "{line}");
        }
    }

    #[test]
    fn command_line_has_the_base_devices() {
        let a = qemu_args(&spec()).unwrap();
        assert_eq!(after(&a, "-machine"), ["q35"]);
        assert_eq!(after(&a, "-accel"), ["tcg"]);
        assert_eq!(after(&a, "-cpu"), ["max"]);
        assert_eq!(after(&a, "-m"), ["512M"]);
        assert!(a.iter().any(|x| x == "-nodefaults") && a.iter().any(|x| x == "-no-reboot"));
        assert_eq!(
            after(&a, "-chardev"),
            [
                "file,id=console,path=/s,,x/console.log",
                "socket,id=agent,path=/s/agent.sock,server=on,wait=off"
            ]
        );
        assert!(after(&a, "-device")
            .contains(&"virtserialport,bus=vser0.0,chardev=agent,name=cloister.agent"));
        assert_eq!(
            after(&a, "-drive"),
            ["file=/s/rootfs.img,if=none,id=rootfs,format=raw,readonly=on"]
        );
        assert_eq!(
            after(&a, "-fw_cfg"),
            ["name=opt/cloister/agent-secret,file=/s/agent-secret"]
        );
    }

    #[test]
    fn scratch_disk_is_a_writable_drive_with_its_serial() {
        let mut s = spec();
        s.scratch_image = Some("/var/s/abc.img".into());
        let a = qemu_args(&s).unwrap();
        assert_eq!(
            after(&a, "-drive")[1],
            "file=/var/s/abc.img,if=none,id=scratch,format=raw,discard=unmap"
        );
        assert!(
            after(&a, "-device").contains(&"virtio-blk-pci,drive=scratch,serial=cloister-scratch")
        );
    }

    #[test]
    fn tee_settings_are_merged() {
        let mut s = spec();
        s.accel = Accel::Kvm;
        s.agent = AgentTransport::Vsock { cid: 7, port: 1024 };
        s.tee = QemuSettings {
            machine_props: vec!["confidential-guest-support=tee0".into()],
            objects: vec!["sev-snp-guest,id=tee0,cbitpos=51".into()],
            memory_backend: Some(MemoryBackend {
                kind: MemoryBackendKind::Memfd { share: false },
                id: "ram0".into(),
                size_mib: 512,
            }),
            extra_args: vec!["-bios".into(), "/ovmf.fd".into()],
            cmdline_extra: vec![],
            ..QemuSettings::default()
        };
        let a = qemu_args(&s).unwrap();
        assert_eq!(
            after(&a, "-machine"),
            ["q35,memory-backend=ram0,confidential-guest-support=tee0"]
        );
        assert_eq!(
            after(&a, "-object"),
            [
                "sev-snp-guest,id=tee0,cbitpos=51",
                "memory-backend-memfd,id=ram0,size=512M,share=off"
            ]
        );
        assert_eq!(after(&a, "-cpu"), ["host"]);
        assert_eq!(after(&a, "-bios"), ["/ovmf.fd"]);
        assert!(after(&a, "-device").contains(&"vhost-vsock-pci,guest-cid=7"));

        s.tee.memory_backend = Some(MemoryBackend {
            kind: MemoryBackendKind::Ram,
            id: "a,b".into(),
            size_mib: 512,
        });
        let err = qemu_args(&s).unwrap_err();
        assert!(err.to_string().contains("\"a,b\""), "{err}");
    }

    #[test]
    fn vhost_user_vsock_gets_shared_ram_and_its_device() {
        let mut s = spec();
        s.agent = AgentTransport::VhostUserVsock {
            vmm_socket: "/s/vhost.sock".into(),
            uds: "/s/vsock.sock".into(),
            cid: 3,
            port: 1024,
        };
        let a = qemu_args(&s).unwrap();
        assert_eq!(after(&a, "-machine"), ["q35,memory-backend=ram0"]);
        assert_eq!(
            after(&a, "-object"),
            ["memory-backend-memfd,id=ram0,size=512M,share=on"]
        );
        assert!(after(&a, "-chardev").contains(&"socket,id=vsock0,path=/s/vhost.sock"));
        assert!(after(&a, "-device").contains(&"vhost-user-vsock-pci,chardev=vsock0"));
        assert!(!after(&a, "-device")
            .iter()
            .any(|d| d.contains("virtserial")));

        s.tee.memory_backend = Some(MemoryBackend {
            kind: MemoryBackendKind::Memfd { share: false },
            id: "ram0".into(),
            size_mib: 512,
        });
        let err = qemu_args(&s).unwrap_err();
        assert!(err.to_string().contains("--channel serial"), "{err}");
    }

    #[test]
    fn errors_name_the_fix() {
        let e = QemuError::TooOld {
            path: "/usr/bin/qemu-system-x86_64".into(),
            found: "7.2.15".into(),
        };
        assert!(e.to_string().contains("scripts/install-deps.sh"), "{e}");
        assert!(e.to_string().contains("7.2.15"), "{e}");
        let e = QemuError::NotFound {
            searched: "not in PATH".into(),
        };
        assert!(e.to_string().contains("scripts/install-deps.sh"), "{e}");
    }
}
