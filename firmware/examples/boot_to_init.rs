//! Bench command: boots the built kernel + initramfs with a bare QEMU (TCG)
//! N times and reports the median time to `/init` — host wall clock until the
//! kernel's "Run /init" console line, and the guest's own timestamp on it —
//! next to the same kernel with a minimal initramfs (only `/init` and
//! `/dev/console`, no modules) measured in the same run.
//!
//! ```text
//! cargo run --release -p cloister-firmware --example boot_to_init -- [RUNS]
//! ```
//!
//! The guest is killed as soon as the line appears, so the agent's behaviour
//! after that does not matter.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloister_firmware::{cpio, Assets, Initramfs};

fn boot(kernel: &std::path::Path, initrd: &std::path::Path) -> Result<(f64, f64), String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}: run scripts/install-deps.sh"))?;
    let t0 = Instant::now();
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let result = loop {
        let n = out.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 || t0.elapsed() > Duration::from_secs(120) {
            break Err("guest never reached /init".to_string());
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        // The timestamp comes before the text on the same line.
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("Run /init as init process"))
        {
            let wall = t0.elapsed().as_secs_f64();
            let guest = line
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .and_then(|(t, _)| t.trim().parse::<f64>().ok())
                .ok_or("no timestamp on the Run /init line")?;
            break Ok((wall, guest));
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let assets = Assets::locate(None)?;
    let full = std::fs::read(&assets.initramfs)?;
    let mut minimal = Initramfs::new();
    for e in cpio::parse(&full)? {
        if e.path == "init" {
            minimal.add_file("init", 0o755, e.data)?;
        }
    }
    minimal.add_char_device("dev/console", 0o600, 5, 1)?;
    let dir = tempfile_dir()?;
    let minimal_path = dir.join("minimal.cpio");
    std::fs::write(&minimal_path, minimal.to_bytes())?;

    let (mut fw, mut fg, mut mw, mut mg) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        // Interleave so that load on the machine hits both alike.
        let (w, g) = boot(&assets.kernel, &assets.initramfs)?;
        fw.push(w);
        fg.push(g);
        let (w, g) = boot(&assets.kernel, &minimal_path)?;
        mw.push(w);
        mg.push(g);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (fw, fg, mw, mg) = (
        median(&mut fw),
        median(&mut fg),
        median(&mut mw),
        median(&mut mg),
    );
    println!(
        "kernel {} ({}), initramfs {} bytes, {runs} runs, TCG",
        assets.kernel_release(),
        assets.kernel_version(),
        full.len()
    );
    println!("cloister initramfs: median wall {fw:.3} s to Run /init, guest clock {fg:.3} s");
    println!("minimal initramfs:  median wall {mw:.3} s to Run /init, guest clock {mg:.3} s");
    println!(
        "ratio cloister/minimal: wall {:.3}, guest {:.3}",
        fw / mw,
        fg / mg
    );
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("cloister-boot-to-init-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
