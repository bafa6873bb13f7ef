//! TDX direct kernel boot: the RTMR1/RTMR2 event construction against the
//! OVMF CCEL vectors, and the Authenticode digest against `pesign` (an
//! independent implementation) on real EFI-stub kernels, unsigned and
//! signed with `sbsign`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cloister_measure::pe::{authenticode_sha256, authenticode_sha384};
use cloister_measure::qemu_x86::{firmware_kernel_image, KernelHeader};
use cloister_measure::tdx::{
    compare_with_log, direct_boot_events, direct_boot_load_options, parse_ccel,
    predict_direct_boot, rtmrs_of, tagged_event_data, CcEvent, DirectBoot, DirectBootDigests,
    SeparatorLayout, EV_EFI_ACTION, EV_EFI_BOOT_SERVICES_APPLICATION, EV_EVENT_TAG, EV_SEPARATOR,
    INITRD_EVENT_TAG_ID, LOAD_OPTIONS_EVENT_TAG_ID,
};

mod common;
use common::{read_tdx as read, run_ok, tdx_vectors as vectors};

fn only(log: &[CcEvent], rtmr: usize, ty: u32) -> Vec<CcEvent> {
    log.iter()
        .filter(|e| e.rtmr == rtmr && e.event_type == ty)
        .cloned()
        .collect()
}

/// trustee's CCEL_data_ovmf is a real TDVF direct boot (kernel loaded from
/// the QemuKernelLoaderFs `File(kernel)`), from a TDVF before
/// edk2-stable202411. Taking the three component digests from the log, our
/// event construction must reproduce the log's RTMR1/RTMR2 events (type,
/// digest, event data) one for one, and the vector's RTMR1/RTMR2 values.
#[test]
fn event_construction_matches_the_ovmf_direct_boot_ccel() {
    let log = parse_ccel(&read("trustee-CCEL_data_ovmf")).unwrap();
    let kernel = only(&log, 1, EV_EFI_BOOT_SERVICES_APPLICATION);
    assert_eq!(kernel.len(), 1);
    // The loaded image's device path ends in File(kernel) (UTF-16 "kernel").
    let file_kernel: Vec<u8> = "kernel"
        .encode_utf16()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    assert!(kernel[0]
        .event_data
        .windows(file_kernel.len())
        .any(|w| w == file_kernel));
    let tags = only(&log, 2, EV_EVENT_TAG);
    assert_eq!(tags.len(), 2);
    let digests = DirectBootDigests {
        kernel: kernel[0].digest,
        load_options: Some(tags[0].digest),
        initrd: Some(tags[1].digest),
    };
    let predicted = direct_boot_events(&digests, SeparatorLayout::Legacy);
    assert_eq!(compare_with_log(&predicted, &log), Vec::<String>::new());
    // Event data, where it does not depend on load addresses.
    let logged: Vec<&CcEvent> = log.iter().filter(|e| e.rtmr == 1 || e.rtmr == 2).collect();
    for (p, l) in predicted.iter().zip(&logged) {
        if p.event_type != EV_EFI_BOOT_SERVICES_APPLICATION {
            assert_eq!(p.event_data, l.event_data, "{}", p.what);
        }
    }
    let r = rtmrs_of(&predicted).unwrap();
    let want = &vectors()["ccel_replays"]["trustee-CCEL_data_ovmf"];
    assert_eq!(r.0[1].to_hex(), want["rtmr1"].as_str().unwrap());
    assert_eq!(r.0[2].to_hex(), want["rtmr2"].as_str().unwrap());
    // The same log does not fit the edk2-stable202411 layout: the
    // separator it puts in RTMR1 is named as the difference.
    let newer = direct_boot_events(&digests, SeparatorLayout::Edk2Stable202411);
    let diff = compare_with_log(&newer, &log);
    assert!(!diff.is_empty());
    assert!(diff[0].contains("separator"), "{diff:?}");
    assert!(newer
        .iter()
        .any(|e| e.rtmr == 1 && e.event_type == EV_SEPARATOR));
    // In the log, that separator went to RTMR0 right after "Calling EFI
    // Application from Boot Option".
    let calling = log
        .iter()
        .position(|e| e.rtmr == 1 && e.event_type == EV_EFI_ACTION)
        .unwrap();
    assert_eq!(log[calling + 1].rtmr, 0);
    assert_eq!(log[calling + 1].event_type, EV_SEPARATOR);
}

/// The grub CCEL's Linux EFI stub events have the same tagged-event shape.
#[test]
fn stub_tagged_events_match_the_grub_ccel() {
    let log = parse_ccel(&read("trustee-eventlog-CCEL_data_grub")).unwrap();
    let tags = only(&log, 2, EV_EVENT_TAG);
    assert_eq!(
        tags[0].event_data,
        tagged_event_data(LOAD_OPTIONS_EVENT_TAG_ID, "LOADED_IMAGE::LoadOptions")
    );
    assert_eq!(
        tags[1].event_data,
        tagged_event_data(INITRD_EVENT_TAG_ID, "Linux initrd")
    );
}

#[test]
fn load_options_are_utf16_with_the_initrd_suffix_and_nul() {
    let o = direct_boot_load_options("console=ttyS0", true).unwrap();
    let want: Vec<u8> = "console=ttyS0 initrd=initrd\0"
        .encode_utf16()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    assert_eq!(o, want);
    let o = direct_boot_load_options("quiet", false).unwrap();
    assert_eq!(o, b"q\0u\0i\0e\0t\0\0\0");
    assert_eq!(direct_boot_load_options("", true).unwrap()[..4], *b" \0i\0");
    assert_eq!(direct_boot_load_options("", false), None);
}

// ---- Authenticode against pesign on real kernels ----

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CLOISTER_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("cloister");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/cloister")
}

/// Cloister's guest kernel plus any /boot/vmlinuz-*.
fn kernels() -> Vec<PathBuf> {
    let ours = cache_dir().join("assets/vmlinuz");
    assert!(
        ours.is_file(),
        "guest kernel {} not found: run `cloister assets build`",
        ours.display()
    );
    let mut v = vec![ours];
    if let Ok(rd) = std::fs::read_dir("/boot") {
        let mut boot: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .collect();
        boot.sort();
        v.extend(boot);
    }
    v
}

fn tool(name: &str, package: &str) -> String {
    let ok = Command::new(name)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty());
    assert!(
        ok,
        "`{name}` not found: install the Debian package {package} (scripts/install-deps.sh)"
    );
    name.to_string()
}

fn pesign_digest(path: &Path) -> String {
    let out = Command::new(tool("pesign", "pesign"))
        .args(["-h", "-i"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pesign -h -i {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .strip_prefix("hash: ")
        .unwrap_or_else(|| panic!("unexpected pesign output {text:?}"))
        .to_string()
}

#[test]
fn authenticode_sha256_equals_pesign_on_real_kernels() {
    for k in kernels() {
        let bytes = std::fs::read(&k).unwrap();
        assert_eq!(
            authenticode_sha256(&bytes).unwrap().to_hex(),
            pesign_digest(&k),
            "{}",
            k.display()
        );
    }
}

/// Bytes after the last section (here 13, not a multiple of 8) are hashed
/// as they are, with no padding, as EDK II and pesign do.
#[test]
fn trailing_data_is_hashed_unpadded_like_pesign() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&kernels()[0]).unwrap();
    let plain = authenticode_sha256(&bytes).unwrap();
    bytes.extend_from_slice(b"abcdefghijklm");
    let p = dir.path().join("trailing");
    std::fs::write(&p, &bytes).unwrap();
    let with_tail = authenticode_sha256(&bytes).unwrap();
    assert_ne!(plain, with_tail);
    assert_eq!(with_tail.to_hex(), pesign_digest(&p));
}

/// The QEMU-patched image (what TDVF measures with QEMU <= 10.1) is still a
/// PE image pesign agrees on, and its digest differs from the file's.
#[test]
fn authenticode_of_the_qemu_patched_kernel_equals_pesign() {
    let dir = tempfile::tempdir().unwrap();
    let k = &kernels()[0];
    let bytes = std::fs::read(k).unwrap();
    let patched = firmware_kernel_image(
        &bytes,
        "console=ttyS0 cloister.channel=serial",
        Some(12_146_224),
        KernelHeader::QemuPatched {
            memory_bytes: 512 << 20,
        },
    )
    .unwrap();
    assert_ne!(patched, bytes);
    let p = dir.path().join("patched");
    std::fs::write(&p, &patched).unwrap();
    assert_eq!(
        authenticode_sha256(&patched).unwrap().to_hex(),
        pesign_digest(&p)
    );
    assert_ne!(
        authenticode_sha384(&patched).unwrap(),
        authenticode_sha384(&bytes).unwrap()
    );
}

/// Signing appends a certificate table and sets the security directory:
/// the Authenticode digest must not change, and pesign must agree on the
/// signed file too.
#[test]
fn signed_kernel_has_the_same_digest_as_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    run_ok(
        Command::new(tool("openssl", "openssl"))
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=cloister test signer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let k = &kernels()[0];
    let signed = dir.path().join("vmlinuz.signed");
    run_ok(
        Command::new(tool("sbsign", "sbsigntool"))
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--output")
            .arg(&signed)
            .arg(k),
    );
    let unsigned = std::fs::read(k).unwrap();
    let signed_bytes = std::fs::read(&signed).unwrap();
    assert!(signed_bytes.len() > unsigned.len());
    assert_eq!(
        authenticode_sha384(&signed_bytes).unwrap(),
        authenticode_sha384(&unsigned).unwrap()
    );
    assert_eq!(
        authenticode_sha256(&signed_bytes).unwrap().to_hex(),
        pesign_digest(&signed)
    );
}

#[test]
fn prediction_for_a_real_kernel_and_clear_error_for_a_non_pe_kernel() {
    let kernel = std::fs::read(&kernels()[0]).unwrap();
    let initrd = b"070701fake-initramfs".to_vec();
    let boot = DirectBoot {
        kernel: &kernel,
        initrd: Some(&initrd),
        cmdline: "console=ttyS0",
        header: KernelHeader::QemuPatched {
            memory_bytes: 512 << 20,
        },
        layout: SeparatorLayout::Edk2Stable202411,
    };
    let p = predict_direct_boot(&boot).unwrap();
    assert_eq!(p.events.len(), 7);
    let (release, (major, minor)) = cloister_measure::qemu_x86::kernel_release(&kernel).unwrap();
    assert!(
        (major, minor) >= (6, 8),
        "{release}: the stub must measure into RTMR2"
    );
    // One byte of the initrd changes RTMR2 only; the memory size changes
    // RTMR1 only (the initrd address QEMU writes into the header).
    let mut initrd2 = initrd.clone();
    initrd2[0] ^= 1;
    let p2 = predict_direct_boot(&DirectBoot {
        initrd: Some(&initrd2),
        ..boot
    })
    .unwrap();
    assert_eq!(p.rtmr1, p2.rtmr1);
    assert_ne!(p.rtmr2, p2.rtmr2);
    let p3 = predict_direct_boot(&DirectBoot {
        header: KernelHeader::QemuPatched {
            memory_bytes: 1 << 30,
        },
        ..boot
    })
    .unwrap();
    assert_ne!(p.rtmr1, p3.rtmr1);
    assert_eq!(p.rtmr2, p3.rtmr2);
    // A bzImage header on a non-PE file: the PE check names what is wrong.
    let mut not_pe = kernel.clone();
    not_pe[0..2].copy_from_slice(b"XY");
    let e = predict_direct_boot(&DirectBoot {
        kernel: &not_pe,
        ..boot
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("expected the DOS signature \"MZ\""), "{msg}");
    assert!(msg.contains("expected an EFI-stub bzImage"), "{msg}");
    // Not a bzImage at all (an ELF vmlinux).
    let e = predict_direct_boot(&DirectBoot {
        kernel: b"\x7fELF\x02\x01\x01",
        ..boot
    })
    .unwrap_err();
    assert!(e.to_string().contains("not a Linux bzImage"), "{e}");
}
