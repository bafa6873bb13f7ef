//! `cloister assets build`: fetch and verify the kernel, select and decompress
//! the agent's modules, build the initramfs, write the manifest — or do
//! nothing when the input stamp says the outputs are current.
//!
//! The stamp is the sha256 over the builder's format version, the agent's
//! sha256, the kernel package's sha256 and the module request list. Resolving
//! which kernel is newest reads apt's local lists only, so an up-to-date check
//! needs no network.

use std::path::{Path, PathBuf};

use crate::cpio::{CpioError, Initramfs};
use crate::kernel::{self, KernelError};
use crate::manifest::{
    FileRecord, KernelOrigin, KernelPin, KernelRecord, Manifest, ModuleRecord, ModulesRecord,
    OutputRecord, OutputsRecord, Sha256, MANIFEST_FORMAT, PIN_COMMENT,
};
use crate::modules::{self, ModuleError, ModuleTree, AGENT_MODULES, OPTIONAL_TEE_MODULES};
use crate::{
    ASSETS_SUBDIR, INITRAMFS_FILE, KERNEL_FILE, KERNEL_RELEASE_PATH, MANIFEST_FILE,
    MODULES_LOAD_PATH, STAMP_FILE,
};

/// Bumped whenever the builder's output for the same inputs changes.
pub const BUILDER_VERSION: &str = "cloister-firmware initramfs v1";

/// The command that builds the static agent.
pub const AGENT_BUILD_COMMAND: &str =
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS=\"-C target-feature=+crt-static\" \
cargo build --release -p cloister-agent --target x86_64-unknown-linux-gnu";

/// Why the assets could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The agent binary is missing.
    #[error("agent binary {} not found: build it with `{AGENT_BUILD_COMMAND}` or pass --agent PATH", path.display())]
    AgentMissing {
        /// Where it was expected.
        path: PathBuf,
    },
    /// The agent binary cannot be `/init`.
    #[error("agent binary {}: {reason}", path.display())]
    BadAgent {
        /// The binary.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Getting the kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Module selection failed.
    #[error(transparent)]
    Modules(#[from] ModuleError),
    /// The kernel's config lacks a required built-in option.
    #[error("kernel config lacks {0:?} (=y): this kernel cannot boot the agent")]
    Config(Vec<&'static str>),
    /// Building the archive failed.
    #[error("initramfs: {0}")]
    Cpio(#[from] CpioError),
    /// The --kernel-deb file does not match what apt's index lists for it.
    #[error("{} has sha256 {found}, but the archive index lists {expected} for {package} {version}", path.display())]
    DebMismatch {
        /// The file given.
        path: PathBuf,
        /// Its package.
        package: String,
        /// Its version.
        version: String,
        /// Index digest.
        expected: Sha256,
        /// File digest.
        found: Sha256,
    },
    /// File system error.
    #[error("cannot write or read {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { path, source }
}

/// What to build from.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The cache directory (the assets go to `<cache>/assets`).
    pub cache_dir: PathBuf,
    /// The static agent binary, placed at `/init`.
    pub agent: PathBuf,
    /// A saved kernel package to use instead of resolving with apt.
    pub kernel_deb: Option<PathBuf>,
    /// Limit apt resolution to one suite (e.g. `bookworm-backports`).
    pub suite: Option<String>,
    /// Also write the kernel pin (e.g. `firmware/kernel-manifest.json`) here.
    pub record_pin: Option<PathBuf>,
    /// Rebuild even when the stamp matches.
    pub force: bool,
}

/// One built file.
#[derive(Debug, Clone)]
pub struct BuiltFile {
    /// Its path.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: Sha256,
    /// Its size.
    pub size: u64,
}

/// What [`build_assets`] did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// True when nothing had to be rebuilt.
    pub up_to_date: bool,
    /// The output files (kernel, initramfs, manifest).
    pub files: Vec<BuiltFile>,
    /// The manifest now in the assets directory.
    pub manifest: Manifest,
    /// Set when the resolved kernel differs from the pin committed in this
    /// source tree: a sentence saying how.
    pub pin_note: Option<String>,
}

/// Checks that `elf` is an x86-64 executable without a program interpreter
/// (a static binary the kernel can run as `/init`).
pub fn check_static_elf(elf: &[u8]) -> Result<(), String> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not an ELF64 little-endian executable".into());
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    let trunc = || "truncated ELF header".to_string();
    if u16_at(0x12).ok_or_else(trunc)? != 62 {
        return Err("not an x86-64 binary".into());
    }
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(trunc)?).map_err(|_| trunc())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(trunc)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(trunc)?);
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let p_type = elf
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(trunc)?;
        if p_type == 3 {
            return Err(format!(
                "dynamically linked (has a program interpreter): build it statically with `{AGENT_BUILD_COMMAND}`"
            ));
        }
    }
    Ok(())
}

/// The input stamp.
pub fn stamp(agent: &Sha256, deb: &Sha256) -> Sha256 {
    let mut s = format!("{BUILDER_VERSION}\nagent {agent}\nkernel-deb {deb}\n");
    for r in AGENT_MODULES {
        s.push_str(&format!("module {} {:?}\n", r.name, r.need));
    }
    Sha256::of(s.as_bytes())
}

struct KernelInput {
    deb: PathBuf,
    package: String,
    version: String,
    origin: KernelOrigin,
    suite: Option<String>,
    deb_sha256: Sha256,
    index_sha256: Option<Sha256>,
}

fn kernel_input(opts: &BuildOptions) -> Result<KernelInput, BuildError> {
    if let Some(deb) = &opts.kernel_deb {
        if !deb.is_file() {
            return Err(BuildError::Io {
                path: deb.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let (package, version) = kernel::deb_identity(deb)?;
        let found = Sha256::parse(&crate::sha256_file(deb).map_err(io(deb))?).map_err(|e| {
            BuildError::BadAgent {
                path: deb.clone(),
                reason: e.to_string(),
            }
        })?;
        // If apt still knows this build, the file must be the one it lists.
        let index = kernel::index_sha256(&package, &version).unwrap_or(None);
        if let Some(expected) = &index {
            if *expected != found {
                return Err(BuildError::DebMismatch {
                    path: deb.clone(),
                    package,
                    version,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        return Ok(KernelInput {
            deb: deb.clone(),
            package,
            version,
            origin: KernelOrigin::File,
            suite: None,
            deb_sha256: found,
            index_sha256: index,
        });
    }
    let cand = kernel::resolve_with_apt(opts.suite.as_deref())?;
    let (deb, sha) = kernel::fetch(&cand, &opts.cache_dir.join("debs"))?;
    Ok(KernelInput {
        deb,
        package: cand.package,
        version: cand.version,
        origin: KernelOrigin::Apt,
        suite: Some(cand.suite),
        deb_sha256: sha.clone(),
        index_sha256: Some(sha),
    })
}

fn output_record(path: &Path) -> Result<BuiltFile, BuildError> {
    let sha = crate::sha256_file(path).map_err(io(path))?;
    let size = std::fs::metadata(path).map_err(io(path))?.len();
    let sha256 = Sha256::parse(&sha).map_err(|e| BuildError::BadAgent {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(BuiltFile {
        path: path.to_path_buf(),
        sha256,
        size,
    })
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, data).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Compares the resolved kernel with the committed pin.
fn pin_note(kernel: &KernelRecord) -> Option<String> {
    match KernelPin::recorded() {
        Ok(pin) if pin.kernel.deb_sha256 == kernel.deb_sha256 => None,
        Ok(pin) => Some(format!(
            "built {} {} but firmware/kernel-manifest.json records {} {}: refresh it with `cloister assets build --record-pin firmware/kernel-manifest.json`",
            kernel.package, kernel.version, pin.kernel.package, pin.kernel.version
        )),
        Err(e) => Some(format!("firmware/kernel-manifest.json is unreadable: {e}")),
    }
}

/// Is the current output set valid for `stamp`?
fn current(assets: &Path, stamp: &Sha256) -> Option<(Manifest, Vec<BuiltFile>)> {
    let on_disk = std::fs::read_to_string(assets.join(STAMP_FILE)).ok()?;
    if on_disk.trim() != stamp.as_str() {
        return None;
    }
    let manifest =
        Manifest::parse(&std::fs::read_to_string(assets.join(MANIFEST_FILE)).ok()?).ok()?;
    if manifest.stamp != *stamp {
        return None;
    }
    let mut files = Vec::new();
    for rec in [&manifest.outputs.kernel, &manifest.outputs.initramfs] {
        let f = output_record(&assets.join(&rec.file)).ok()?;
        if f.sha256 != rec.sha256 {
            return None;
        }
        files.push(f);
    }
    files.push(output_record(&assets.join(MANIFEST_FILE)).ok()?);
    Some((manifest, files))
}

/// Builds (or confirms) the guest assets in `<cache>/assets`.
pub fn build_assets(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let agent_bytes = std::fs::read(&opts.agent).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BuildError::AgentMissing {
            path: opts.agent.clone(),
        },
        _ => BuildError::Io {
            path: opts.agent.clone(),
            source: e,
        },
    })?;
    check_static_elf(&agent_bytes).map_err(|reason| BuildError::BadAgent {
        path: opts.agent.clone(),
        reason,
    })?;
    let agent = FileRecord {
        sha256: Sha256::of(&agent_bytes),
        size: agent_bytes.len() as u64,
    };
    let input = kernel_input(opts)?;
    let stamp = stamp(&agent.sha256, &input.deb_sha256);
    let assets = opts.cache_dir.join(ASSETS_SUBDIR);

    if !opts.force {
        if let Some((manifest, files)) = current(&assets, &stamp) {
            let pin_note = pin_note(&manifest.kernel);
            if let Some(p) = &opts.record_pin {
                write_pin(p, &manifest)?;
            }
            return Ok(BuildReport {
                up_to_date: true,
                files,
                manifest,
                pin_note,
            });
        }
    }

    std::fs::create_dir_all(&assets).map_err(io(&assets))?;
    let work = opts
        .cache_dir
        .join("work")
        .join(format!("kernel-{}", std::process::id()));
    let result = build_from(opts, &input, &agent, &agent_bytes, &stamp, &assets, &work);
    let _ = std::fs::remove_dir_all(&work);
    let manifest = result?;

    let mut files = Vec::new();
    for name in [KERNEL_FILE, INITRAMFS_FILE, MANIFEST_FILE] {
        files.push(output_record(&assets.join(name))?);
    }
    if let Some(p) = &opts.record_pin {
        write_pin(p, &manifest)?;
    }
    Ok(BuildReport {
        up_to_date: false,
        files,
        pin_note: pin_note(&manifest.kernel),
        manifest,
    })
}

fn write_pin(path: &Path, manifest: &Manifest) -> Result<(), BuildError> {
    let pin = KernelPin {
        format: MANIFEST_FORMAT,
        comment: PIN_COMMENT.to_string(),
        kernel: manifest.kernel.clone(),
        modules: manifest
            .modules
            .load
            .iter()
            .map(|m| m.name.clone())
            .collect(),
    };
    write_atomic(path, pin.to_json().as_bytes())
}

#[allow(clippy::too_many_arguments)]
fn build_from(
    _opts: &BuildOptions,
    input: &KernelInput,
    agent: &FileRecord,
    agent_bytes: &[u8],
    stamp: &Sha256,
    assets: &Path,
    work: &Path,
) -> Result<Manifest, BuildError> {
    let k = kernel::extract(&input.deb, work)?;
    let config = std::fs::read(&k.config).map_err(io(&k.config))?;
    let missing = kernel::missing_config(&String::from_utf8_lossy(&config));
    if !missing.is_empty() {
        return Err(BuildError::Config(missing));
    }
    let vmlinuz = std::fs::read(&k.vmlinuz).map_err(io(&k.vmlinuz))?;

    let mut tree = ModuleTree::open(&k.modules)?;
    let res = modules::resolve(AGENT_MODULES, &mut tree)?;

    let mut fs = Initramfs::new();
    for (dir, perm) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("mnt", 0o755),
        ("root", 0o700),
        ("etc/cloister", 0o755),
    ] {
        fs.add_dir(dir, perm)?;
    }
    fs.add_char_device("dev/console", 0o600, 5, 1)?;
    fs.add_char_device("dev/null", 0o666, 1, 3)?;
    fs.add_file("init", 0o755, agent_bytes.to_vec())?;
    let mut records = Vec::new();
    for (name, rel) in &res.load {
        let bytes = tree
            .module_bytes(name)
            .ok_or_else(|| ModuleError::BadModule {
                path: k.modules.join(rel),
                reason: "module was resolved but not read".into(),
            })?;
        let path = format!("/lib/modules/{}/{rel}", k.release);
        fs.add_file(&path, 0o644, bytes.to_vec())?;
        records.push(ModuleRecord {
            name: name.clone(),
            path,
            sha256: Sha256::of(bytes),
            tee_only: OPTIONAL_TEE_MODULES.contains(&name.as_str()),
        });
    }
    fs.add_file(
        MODULES_LOAD_PATH,
        0o644,
        modules::render_load_file(&k.release, &res.load),
    )?;
    fs.add_file(KERNEL_RELEASE_PATH, 0o644, format!("{}\n", k.release))?;
    let initramfs = fs.to_bytes();

    write_atomic(&assets.join(KERNEL_FILE), &vmlinuz)?;
    write_atomic(&assets.join(INITRAMFS_FILE), &initramfs)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        kernel: KernelRecord {
            package: input.package.clone(),
            version: input.version.clone(),
            release: k.release.clone(),
            origin: input.origin,
            suite: input.suite.clone(),
            deb_sha256: input.deb_sha256.clone(),
            deb_size: std::fs::metadata(&input.deb).map_err(io(&input.deb))?.len(),
            index_sha256: input.index_sha256.clone(),
            vmlinuz_sha256: Sha256::of(&vmlinuz),
            config_sha256: Sha256::of(&config),
        },
        agent: agent.clone(),
        modules: ModulesRecord {
            load_file: MODULES_LOAD_PATH.to_string(),
            load: records,
            builtin: res.builtin,
            absent: res.absent,
        },
        outputs: OutputsRecord {
            kernel: OutputRecord {
                file: KERNEL_FILE.into(),
                sha256: Sha256::of(&vmlinuz),
                size: vmlinuz.len() as u64,
            },
            initramfs: OutputRecord {
                file: INITRAMFS_FILE.into(),
                sha256: Sha256::of(&initramfs),
                size: initramfs.len() as u64,
            },
        },
        stamp: stamp.clone(),
    };
    write_atomic(&assets.join(MANIFEST_FILE), manifest.to_json().as_bytes())?;
    // The stamp goes last: a build interrupted before this point is redone.
    write_atomic(&assets.join(STAMP_FILE), format!("{stamp}\n").as_bytes())?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_check() {
        // This test binary is dynamically linked (default target flags).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let err = check_static_elf(&me).unwrap_err();
        assert!(err.contains("dynamically linked"), "{err}");
        assert!(err.contains("+crt-static"), "{err}");
        assert!(check_static_elf(b"#!/bin/sh\n")
            .unwrap_err()
            .contains("not an ELF64"));
        // A header-only static x86-64 ELF with no program headers passes.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x12] = 62;
        check_static_elf(&elf).unwrap();
        elf[0x12] = 183; // aarch64
        assert!(check_static_elf(&elf).unwrap_err().contains("x86-64"));
    }

    #[test]
    fn stamp_depends_on_every_input() {
        let a = Sha256::of(b"agent");
        let b = Sha256::of(b"deb");
        assert_eq!(stamp(&a, &b), stamp(&a, &b));
        assert_ne!(stamp(&a, &b), stamp(&b, &a));
        assert_ne!(stamp(&a, &b), stamp(&a, &a));
    }

    #[test]
    fn missing_agent_names_the_build_command() {
        let tmp = tempfile::tempdir().unwrap();
        let err = build_assets(&BuildOptions {
            cache_dir: tmp.path().to_path_buf(),
            agent: tmp.path().join("nope"),
            kernel_deb: None,
            suite: None,
            record_pin: None,
            force: false,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("not found: build it with"), "{err}");
        assert!(
            err.contains("cargo build --release -p cloister-agent"),
            "{err}"
        );
    }
}
