//! Development check that the modules in a built initramfs really load:
//! copies the initramfs, replaces `/init` with a busybox script that loads
//! every module of `/etc/cloister/modules.load` in order and prints the
//! outcome, then powers off. Boot the result with QEMU:
//!
//! ```text
//! cargo run -p cloister-firmware --example module_check -- OUT.cpio
//! qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot \
//!   -kernel ~/.cache/cloister/assets/vmlinuz -initrd OUT.cpio \
//!   -append 'console=ttyS0 panic=-1' \
//!   -device virtio-rng-pci -device vhost-vsock-pci,guest-cid=3   # optional
//! ```
//!
//! Needs `/bin/busybox` from Debian's busybox-static.

use cloister_firmware::{Assets, Initramfs, MODULES_LOAD_PATH};

const SCRIPT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
echo "module-check: loading $MODULES"
for m in $($B grep -v '^#' MODULES_LOAD); do
  if $B insmod "$m"; then echo "module-check: loaded $m"; else echo "module-check: FAILED $m"; fi
done
$B mkdir -p /sys/kernel/config && $B mount -t configfs none /sys/kernel/config
echo "module-check: /proc/modules:"; $B cat /proc/modules
echo "module-check: configfs-tsm: $($B ls /sys/kernel/config/tsm 2>&1)"
echo "module-check: done"
$B poweroff -f
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: module_check OUT.cpio")?;
    let assets = Assets::locate(None)?;
    let mut fs = Initramfs::from_archive(&std::fs::read(&assets.initramfs)?)?;
    fs.remove("init")?;
    fs.add_file(
        "init",
        0o755,
        SCRIPT.replace("MODULES_LOAD", MODULES_LOAD_PATH),
    )?;
    fs.add_file("bin/busybox", 0o755, std::fs::read("/bin/busybox")?)?;
    std::fs::write(&out, fs.to_bytes())?;
    println!("wrote {out}");
    Ok(())
}
