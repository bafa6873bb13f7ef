//! End-to-end check of the direct-boot kernel, command-line and initrd
//! digests without TDX hardware: boot Cloister's guest kernel with QEMU's
//! `-kernel/-initrd/-append` under Debian's OVMF with a software TPM
//! (swtpm, SHA-256 + SHA-384 banks). OVMF measures the kernel image through
//! the same DxeTpm2MeasureBootLib/Authenticode path it uses for TDX, and the
//! Linux EFI stub measures LoadOptions and the initrd the same way into
//! PCR 9 (TPM) as into RTMR2 (TDX). A tiny busybox initramfs prints the TPM
//! event log on the serial console; the test compares its SHA-384 digests
//! with `direct_boot_digests`.
//!
//! This QEMU (10.0) patches the setup header for every guest that is not
//! SEV, so the same patched image is what a TDX guest's TDVF measures here.
//! TCG, so no KVM is needed; the boot takes a few seconds.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloister_measure::digest::Sha384Digest;
use cloister_measure::qemu_x86::KernelHeader;
use cloister_measure::tdx::{
    direct_boot_digests, DirectBoot, SeparatorLayout, CALLING_EFI_APPLICATION, EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION, EV_EVENT_TAG, EXIT_BOOT_SERVICES_INVOCATION,
    EXIT_BOOT_SERVICES_SUCCEEDED,
};

mod common;
use common::run_ok;

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const BUSYBOX: &str = "/bin/busybox";

fn need(cmd: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{cmd}` not found: install the Debian package {package} (scripts/install-deps.sh)"
    );
}

fn guest_kernel() -> PathBuf {
    let cache = std::env::var_os("CLOISTER_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/cloister")
        });
    let k = cache.join("assets/vmlinuz");
    assert!(
        k.is_file(),
        "guest kernel {} not found: run `cloister assets build`",
        k.display()
    );
    k
}

/// newc cpio of `files` (path, mode, data).
fn cpio(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |name: &str, mode: u32, data: &[u8], ino: usize| {
        let hdr = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(hdr.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, mode, data)) in files.iter().enumerate() {
        entry(name, *mode, data, i + 1);
    }
    entry("TRAILER!!!", 0, &[], 0);
    out
}

struct Event {
    pcr: u32,
    ty: u32,
    sha384: Sha384Digest,
    data: Vec<u8>,
}

fn parse_tpm_log(d: &[u8]) -> Vec<Event> {
    let rd32 = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    let rd16 = |o: usize| u16::from_le_bytes(d[o..o + 2].try_into().unwrap());
    let hs = rd32(28) as usize;
    let spec = 32;
    let n = rd32(spec + 24) as usize;
    let sizes: Vec<(u16, usize)> = (0..n)
        .map(|i| (rd16(spec + 28 + 4 * i), rd16(spec + 30 + 4 * i) as usize))
        .collect();
    let mut off = 32 + hs;
    let mut out = Vec::new();
    while off + 12 <= d.len() {
        let (pcr, ty, cnt) = (rd32(off), rd32(off + 4), rd32(off + 8));
        let mut o = off + 12;
        let mut sha384 = None;
        for _ in 0..cnt {
            let alg = rd16(o);
            let size = sizes.iter().find(|(a, _)| *a == alg).unwrap().1;
            if alg == 0x000c {
                sha384 = Some(Sha384Digest::from_slice(&d[o + 2..o + 2 + size]).unwrap());
            }
            o += 2 + size;
        }
        let es = rd32(o) as usize;
        out.push(Event {
            pcr,
            ty,
            sha384: sha384.expect("the swtpm has a SHA-384 bank"),
            data: d[o + 4..o + 4 + es].to_vec(),
        });
        off = o + 4 + es;
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .unwrap()
}

/// Boots and returns the guest's TPM event log.
fn boot_and_read_event_log(
    dir: &Path,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    memory_mib: u32,
) -> Vec<u8> {
    let tpm = dir.join("tpm");
    std::fs::create_dir_all(&tpm).unwrap();
    run_ok(
        Command::new("swtpm_setup")
            .args([
                "--tpm2",
                "--pcr-banks",
                "sha256,sha384",
                "--overwrite",
                "--tpmstate",
            ])
            .arg(&tpm),
    );
    let sock = dir.join("swtpm.sock");
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", tpm.display()))
        .args(["--ctrl"])
        .arg(format!("type=unixio,path={}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !sock.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let console = dir.join("console.log");
    let out = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m"])
        .arg(format!("{memory_mib}M"))
        .args(["-nodefaults", "-nographic", "-no-reboot", "-bios", OVMF])
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", sock.display()))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
        .args(["-device", "tpm-tis,tpmdev=tpm0"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .output();
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "qemu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&console).unwrap();
    let begin = text
        .find("CLOISTER-LOG-BEGIN")
        .unwrap_or_else(|| panic!("no event log on the console:\n{text}"));
    let rest = &text[begin + "CLOISTER-LOG-BEGIN".len()..];
    let end = rest.find("CLOISTER-LOG-END").unwrap();
    base64_decode(&rest[..end])
}

#[test]
fn ovmf_measures_what_direct_boot_digests_predicts() {
    for (cmd, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("swtpm", "swtpm"),
        ("swtpm_setup", "swtpm-tools"),
    ] {
        need(cmd, pkg);
    }
    assert!(
        Path::new(OVMF).exists() && Path::new(BUSYBOX).exists(),
        "{OVMF} or {BUSYBOX} missing: install Debian's ovmf and busybox-static (scripts/install-deps.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let init = b"#!/bin/busybox sh\n\
        /bin/busybox mkdir -p /proc /sys\n\
        /bin/busybox mount -t proc proc /proc\n\
        /bin/busybox mount -t sysfs sysfs /sys\n\
        /bin/busybox mount -t securityfs securityfs /sys/kernel/security\n\
        echo CLOISTER-LOG-BEGIN\n\
        /bin/busybox base64 /sys/kernel/security/tpm0/binary_bios_measurements\n\
        echo CLOISTER-LOG-END\n\
        /bin/busybox poweroff -f\n";
    let busybox = std::fs::read(BUSYBOX).unwrap();
    let initrd = cpio(&[
        ("bin", 0o040755, b"".as_slice()),
        ("bin/busybox", 0o100755, busybox.as_slice()),
        ("init", 0o100755, init.as_slice()),
    ]);
    let initrd_path = dir.path().join("initrd.cpio");
    std::fs::write(&initrd_path, &initrd).unwrap();
    let kernel_path = guest_kernel();
    let kernel = std::fs::read(&kernel_path).unwrap();
    // Not the default command line, so nothing matches by accident.
    let cmdline = "console=ttyS0 quiet panic=-1 cloister.test=1";
    let log = parse_tpm_log(&boot_and_read_event_log(
        dir.path(),
        &kernel_path,
        &initrd_path,
        cmdline,
        512,
    ));

    let boot = DirectBoot {
        kernel: &kernel,
        initrd: Some(&initrd),
        cmdline,
        header: KernelHeader::QemuPatched {
            memory_bytes: 512 << 20,
        },
        layout: SeparatorLayout::Edk2Stable202411,
    };
    let want = direct_boot_digests(&boot).unwrap();

    let app: Vec<&Event> = log
        .iter()
        .filter(|e| e.ty == EV_EFI_BOOT_SERVICES_APPLICATION)
        .collect();
    assert_eq!(app.len(), 1, "one EFI application: the kernel");
    assert_eq!(app[0].pcr, 4);
    assert_eq!(app[0].sha384, want.kernel, "kernel Authenticode digest");
    // The file as given (QEMU >= 10.2 CoCo behaviour) is not what this
    // QEMU hands the firmware.
    let as_file = direct_boot_digests(&DirectBoot {
        header: KernelHeader::AsFile,
        ..boot
    })
    .unwrap();
    assert_ne!(app[0].sha384, as_file.kernel);

    // 3 GiB: q35 keeps 2 GiB below 4 GiB, so the initrd address QEMU writes
    // into the header (and the kernel digest) moves with it.
    let log3 = parse_tpm_log(&boot_and_read_event_log(
        dir.path(),
        &kernel_path,
        &initrd_path,
        cmdline,
        3072,
    ));
    let app3: Vec<&Event> = log3
        .iter()
        .filter(|e| e.ty == EV_EFI_BOOT_SERVICES_APPLICATION)
        .collect();
    let want3 = direct_boot_digests(&DirectBoot {
        header: KernelHeader::QemuPatched {
            memory_bytes: 3072 << 20,
        },
        ..boot
    })
    .unwrap();
    assert_eq!(app3[0].sha384, want3.kernel, "kernel digest at 3 GiB");
    assert_ne!(want3.kernel, want.kernel);

    let tags: Vec<&Event> = log
        .iter()
        .filter(|e| e.pcr == 9 && e.ty == EV_EVENT_TAG)
        .collect();
    assert_eq!(tags.len(), 2);
    assert!(tags[0].data.ends_with(b"LOADED_IMAGE::LoadOptions\0"));
    assert_eq!(Some(tags[0].sha384), want.load_options, "LoadOptions");
    assert!(tags[1].data.ends_with(b"Linux initrd\0"));
    assert_eq!(Some(tags[1].sha384), want.initrd, "initrd");

    let actions: Vec<&[u8]> = log
        .iter()
        .filter(|e| e.ty == EV_EFI_ACTION)
        .map(|e| e.data.as_slice())
        .collect();
    assert_eq!(
        actions,
        [
            CALLING_EFI_APPLICATION.as_bytes(),
            EXIT_BOOT_SERVICES_INVOCATION.as_bytes(),
            EXIT_BOOT_SERVICES_SUCCEEDED.as_bytes(),
        ]
    );
}
