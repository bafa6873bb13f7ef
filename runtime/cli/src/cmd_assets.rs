//! `cloister assets`: build and inspect the guest assets (kernel, initramfs,
//! manifest) in the cache directory. The work is done by `cloister-firmware`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use cloister_firmware::build::{build_assets, BuildOptions, AGENT_BUILD_COMMAND};
use cloister_firmware::{default_cache_dir, Assets};

/// `cloister assets …`
#[derive(Debug, Args)]
pub struct AssetsArgs {
    #[command(subcommand)]
    cmd: AssetsCmd,
}

#[derive(Debug, Subcommand)]
enum AssetsCmd {
    /// Fetch and verify the guest kernel, build the initramfs, write the
    /// manifest; a no-op when everything is up to date.
    Build(BuildArgs),
    /// Show the built assets and check their sha256 against the manifest.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The static agent binary to use as /init (default: the
    /// x86_64-unknown-linux-gnu release build next to this executable).
    #[arg(long, env = "CLOISTER_AGENT")]
    agent: Option<PathBuf>,
    /// Build from this saved kernel package instead of resolving the newest with apt.
    #[arg(long, value_name = "FILE")]
    kernel_deb: Option<PathBuf>,
    /// Only consider kernels apt serves from this suite (e.g. bookworm-backports).
    #[arg(long)]
    suite: Option<String>,
    /// Cache directory (default: $CLOISTER_CACHE_DIR, $XDG_CACHE_HOME/cloister, ~/.cache/cloister).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Also write the resolved kernel pin to FILE (e.g. firmware/kernel-manifest.json).
    #[arg(long, value_name = "FILE")]
    record_pin: Option<PathBuf>,
    /// Rebuild even if the inputs did not change.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// Cache directory (default as for `build`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// Runs `cloister assets …`.
pub fn run(args: AssetsArgs) -> Result<()> {
    match args.cmd {
        AssetsCmd::Build(b) => build(b),
        AssetsCmd::Show(s) => show(s),
    }
}

fn cache_dir(arg: Option<PathBuf>) -> Result<PathBuf> {
    arg.or_else(default_cache_dir).context(
        "no cache directory: set CLOISTER_CACHE_DIR, XDG_CACHE_HOME or HOME, or pass --cache-dir",
    )
}

/// The default agent: `<target>/x86_64-unknown-linux-gnu/release/cloister-agent`,
/// where `<target>` is the cargo target dir holding this executable
/// (`target/debug/cloister`, `target/release/cloister`, or a `deps/` below them).
fn default_agent(exe: &Path) -> Result<PathBuf> {
    const REL: &str = "x86_64-unknown-linux-gnu/release/cloister-agent";
    let mut first = None;
    for dir in exe.ancestors().skip(2).take(3) {
        let candidate = dir.join(REL);
        if candidate.is_file() {
            return Ok(candidate);
        }
        first.get_or_insert(candidate);
    }
    let expected = first.unwrap_or_else(|| PathBuf::from("target").join(REL));
    anyhow::bail!(
        "agent binary {} not found: build it with `{AGENT_BUILD_COMMAND}` or pass --agent PATH",
        expected.display()
    )
}

fn build(b: BuildArgs) -> Result<()> {
    let agent = match b.agent {
        Some(a) => a,
        None => default_agent(&std::env::current_exe().context("cannot find this executable")?)?,
    };
    let opts = BuildOptions {
        cache_dir: cache_dir(b.cache_dir)?,
        agent,
        kernel_deb: b.kernel_deb,
        suite: b.suite,
        record_pin: b.record_pin,
        force: b.force,
    };
    let report = build_assets(&opts)?;
    let m = &report.manifest;
    let k = &m.kernel;
    println!(
        "kernel   {} ({} {}, {}, deb sha256 {})",
        k.release,
        k.package,
        k.version,
        k.suite.as_deref().unwrap_or("saved package"),
        k.deb_sha256
    );
    let names: Vec<&str> = m.modules.load.iter().map(|r| r.name.as_str()).collect();
    println!("modules  load {}: {}", m.modules.load_file, names.join(" "));
    if !m.modules.builtin.is_empty() {
        println!("modules  built in: {}", m.modules.builtin.join(" "));
    }
    if !m.modules.absent.is_empty() {
        println!(
            "modules  not in this kernel (optional): {}",
            m.modules.absent.join(" ")
        );
    }
    println!("agent    {} ({} bytes)", m.agent.sha256, m.agent.size);
    for f in &report.files {
        println!("{}  {}  ({} bytes)", f.sha256, f.path.display(), f.size);
    }
    if let Some(note) = &report.pin_note {
        println!("note: {note}");
    }
    println!(
        "{}",
        if report.up_to_date {
            "up to date (inputs unchanged)"
        } else {
            "built"
        }
    );
    Ok(())
}

fn show(s: ShowArgs) -> Result<()> {
    let dir = cache_dir(s.cache_dir)?;
    let a = Assets::locate(Some(&dir))?;
    a.verify()?;
    println!("kernel     {}", a.kernel.display());
    println!("initramfs  {}", a.initramfs.display());
    println!("manifest   {}", a.manifest_path.display());
    println!(
        "release    {} ({} {})",
        a.kernel_release(),
        a.manifest.kernel.package,
        a.kernel_version()
    );
    println!("verified   sha256 of kernel and initramfs match the manifest");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_agent_is_found_next_to_the_target_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let exe = target.join("debug/cloister");
        let err = default_agent(&exe).unwrap_err().to_string();
        assert!(
            err.contains("target/x86_64-unknown-linux-gnu/release/cloister-agent not found"),
            "{err}"
        );
        assert!(err.contains("+crt-static"), "{err}");
        let agent = target.join("x86_64-unknown-linux-gnu/release/cloister-agent");
        std::fs::create_dir_all(agent.parent().unwrap()).unwrap();
        std::fs::write(&agent, b"x").unwrap();
        assert_eq!(default_agent(&exe).unwrap(), agent);
        assert_eq!(
            default_agent(&target.join("release/cloister")).unwrap(),
            agent
        );
        assert_eq!(
            default_agent(&target.join("debug/deps/cloister-1234")).unwrap(),
            agent
        );
    }
}
