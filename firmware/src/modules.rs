//! Which kernel modules the agent needs, their dependency order, and reading
//! them out of a kernel's module tree (decompressing `.ko.xz`, reading the
//! `depends=` field of each module's `.modinfo` ELF section).
//!
//! Debian's kernel package ships no `modules.dep` (depmod writes it at install
//! time), so [`ModuleTree`] reads the dependencies from the modules
//! themselves; [`ModulesDep`] reads a `modules.dep` file where one exists.
//! Both feed the same [`resolve`].
//!
//! Modules selected for the agent ([`AGENT_MODULES`]), as found in Debian's
//! 6.12 cloud kernel (see `firmware/kernel-manifest.json` for the resolved list):
//! - virtio transport: `virtio_pci` (built in), `virtio_mmio` (module)
//! - agent channel: `virtio_console` (built in), `vsock`,
//!   `vmw_vsock_virtio_transport_common`, `vmw_vsock_virtio_transport`
//! - rootfs from the host: `virtio_blk` (+ ext4, built in), `overlay`;
//!   9p (`9pnet`, `9pnet_virtio`, `9p`, and `netfs` as their dependency) is
//!   optional: the cloud kernel has `CONFIG_NET_9P` unset, so there is no 9p
//!   share with it (use a read-only virtio-blk image instead)
//! - host authentication: `qemu_fw_cfg` (the per-sandbox agent secret
//!   arrives as a fw_cfg file)
//! - entropy: `virtio_rng`
//! - network (to the KBS and registry that initdata names): `virtio_net`
//! - encrypted scratch disk: `dm_mod`, `dm_crypt`, `xts`
//! - confidential guest: `configfs`, `tsm` (configfs-tsm reports; called
//!   `tsm_report` in later kernels), `sev_guest`, `tdx_guest`

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How much a requested module is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Must be a module or built in; the build fails otherwise.
    Required,
    /// Must be a module or built in; loading it fails with `ENODEV` outside its TEE.
    TeeOnly,
    /// Used when the kernel has it, skipped (and recorded as absent) when not.
    Optional,
}

/// A module the agent needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Module name (underscores, as `lsmod` prints it).
    pub name: &'static str,
    /// How much it is needed.
    pub need: Need,
}

const fn req(name: &'static str, need: Need) -> Request {
    Request { name, need }
}

/// The modules the agent needs, in the order they should load (dependencies
/// are pulled in ahead of each).
pub const AGENT_MODULES: &[Request] = &[
    req("virtio_pci", Need::Required),
    req("virtio_mmio", Need::Optional),
    req("virtio_console", Need::Required),
    req("qemu_fw_cfg", Need::Required),
    req("virtio_rng", Need::Optional),
    // The NIC to the endpoints initdata names (issue 9).
    req("virtio_net", Need::Required),
    req("virtio_blk", Need::Required),
    req("overlay", Need::Required),
    // The encrypted scratch disk (`--scratch-disk`): dm-crypt over it with
    // AES-XTS (the kernel has AES built in; xts is a module and nothing in
    // the guest could modprobe it on demand).
    req("dm_mod", Need::Required),
    req("dm_crypt", Need::Required),
    req("xts", Need::Required),
    req("vsock", Need::Required),
    req("vmw_vsock_virtio_transport_common", Need::Required),
    req("vmw_vsock_virtio_transport", Need::Required),
    req("9pnet", Need::Optional),
    req("9pnet_virtio", Need::Optional),
    req("9p", Need::Optional),
    req("configfs", Need::Required),
    req("tsm", Need::Required),
    req("sev_guest", Need::TeeOnly),
    req("tdx_guest", Need::TeeOnly),
];

/// Modules whose load fails with `ENODEV` outside their TEE.
pub const OPTIONAL_TEE_MODULES: &[&str] = &["sev_guest", "tdx_guest"];

/// Why modules could not be resolved or read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A required module is neither a module nor built in.
    #[error("kernel has no module {0:?} (neither a .ko nor built in)")]
    Missing(String),
    /// A module depends on one the tree does not have.
    #[error("module {module:?} depends on {dep:?}, which the kernel does not have")]
    MissingDependency {
        /// The module.
        module: String,
        /// Its missing dependency.
        dep: String,
    },
    /// The dependency graph has a cycle.
    #[error("module dependency cycle: {0}")]
    Cycle(String),
    /// A `modules.dep` line is malformed.
    #[error("modules.dep line {line}: {reason}")]
    BadModulesDep {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A module file is not a usable ELF kernel module.
    #[error("{}: {reason}", path.display())]
    BadModule {
        /// The module file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Reading the tree failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What a source knows about one module name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A loadable module: its path relative to `/lib/modules/<release>`
    /// (decompressed name, `.ko`) and the names it depends on.
    Module {
        /// Relative path, e.g. `kernel/net/vmw_vsock/vsock.ko`.
        path: String,
        /// Names of the modules it needs loaded first.
        deps: Vec<String>,
    },
    /// Compiled into the kernel.
    Builtin,
    /// Not in this kernel.
    Absent,
}

/// Something that can answer [`Lookup`]s by module name.
pub trait ModuleSource {
    /// Looks up a module by name (`-` and `_` are equivalent).
    fn lookup(&mut self, name: &str) -> Result<Lookup, ModuleError>;
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    /// Modules to load, dependencies first: (name, relative path).
    pub load: Vec<(String, String)>,
    /// Requested modules that are built in.
    pub builtin: Vec<String>,
    /// Optional requested modules the kernel lacks.
    pub absent: Vec<String>,
}

/// Normalizes a module name: `-` becomes `_`, a `.ko*` suffix and directories are dropped.
pub fn module_name(s: &str) -> String {
    let base = s.rsplit('/').next().unwrap_or(s);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// Orders `requests` and their dependencies so that each module comes after
/// everything it depends on. Deterministic: requests in the given order,
/// dependencies of each in sorted order.
pub fn resolve(
    requests: &[Request],
    source: &mut dyn ModuleSource,
) -> Result<Resolution, ModuleError> {
    let mut res = Resolution::default();
    let mut done: BTreeSet<String> = BTreeSet::new();
    for r in requests {
        let name = module_name(r.name);
        match source.lookup(&name)? {
            Lookup::Builtin => {
                if !res.builtin.contains(&name) {
                    res.builtin.push(name);
                }
            }
            Lookup::Absent => match r.need {
                Need::Optional => res.absent.push(name),
                Need::Required | Need::TeeOnly => return Err(ModuleError::Missing(name)),
            },
            Lookup::Module { .. } => {
                let mut stack = Vec::new();
                visit(&name, None, source, &mut done, &mut stack, &mut res.load)?;
            }
        }
    }
    Ok(res)
}

fn visit(
    name: &str,
    parent: Option<&str>,
    source: &mut dyn ModuleSource,
    done: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
    out: &mut Vec<(String, String)>,
) -> Result<(), ModuleError> {
    if done.contains(name) {
        return Ok(());
    }
    if let Some(pos) = stack.iter().position(|s| s == name) {
        let mut cycle = stack[pos..].to_vec();
        cycle.push(name.to_string());
        return Err(ModuleError::Cycle(cycle.join(" -> ")));
    }
    match source.lookup(name)? {
        Lookup::Builtin => {
            done.insert(name.to_string());
            Ok(())
        }
        Lookup::Absent => Err(match parent {
            Some(p) => ModuleError::MissingDependency {
                module: p.to_string(),
                dep: name.to_string(),
            },
            None => ModuleError::Missing(name.to_string()),
        }),
        Lookup::Module { path, deps } => {
            stack.push(name.to_string());
            let mut deps: Vec<String> = deps.iter().map(|d| module_name(d)).collect();
            deps.sort();
            deps.dedup();
            for d in &deps {
                visit(d, Some(name), source, done, stack, out)?;
            }
            stack.pop();
            done.insert(name.to_string());
            out.push((name.to_string(), path));
            Ok(())
        }
    }
}

/// Parses `modules.builtin` (one relative `.ko` path per line) into names.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// A module source backed by the text of `modules.dep` and `modules.builtin`.
#[derive(Debug, Clone, Default)]
pub struct ModulesDep {
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

impl ModulesDep {
    /// Parses `modules.dep` (`path: dep-path dep-path…` per line) and
    /// `modules.builtin`. Paths keep their compression suffix stripped.
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Result<ModulesDep, ModuleError> {
        let mut modules = BTreeMap::new();
        for (i, line) in modules_dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| ModuleError::BadModulesDep {
                line: i + 1,
                reason: reason.to_string(),
            };
            let (path, deps) = line
                .split_once(':')
                .ok_or_else(|| bad("expected `path: deps…`"))?;
            let path = path.trim();
            if !path.contains(".ko") {
                return Err(bad("module path does not end in .ko[.xz|.zst|.gz]"));
            }
            let deps: Vec<String> = deps.split_whitespace().map(module_name).collect();
            let name = module_name(path);
            if modules
                .insert(name.clone(), (strip_compression(path), deps))
                .is_some()
            {
                return Err(bad(&format!("module {name:?} listed twice")));
            }
        }
        Ok(ModulesDep {
            modules,
            builtin: parse_builtin(modules_builtin),
        })
    }
}

impl ModuleSource for ModulesDep {
    fn lookup(&mut self, name: &str) -> Result<Lookup, ModuleError> {
        let name = module_name(name);
        Ok(match self.modules.get(&name) {
            Some((path, deps)) => Lookup::Module {
                path: path.clone(),
                deps: deps.clone(),
            },
            None if self.builtin.contains(&name) => Lookup::Builtin,
            None => Lookup::Absent,
        })
    }
}

fn strip_compression(path: &str) -> String {
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(p) = path.strip_suffix(ext) {
            return p.to_string();
        }
    }
    path.to_string()
}

/// A module source backed by an extracted `/lib/modules/<release>` tree.
/// Reads (and decompresses) only the modules that are looked up.
#[derive(Debug)]
pub struct ModuleTree {
    root: PathBuf,
    files: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
    loaded: BTreeMap<String, (String, Vec<String>, Vec<u8>)>,
}

impl ModuleTree {
    /// Indexes the tree at `root` (`…/lib/modules/<release>`).
    pub fn open(root: &Path) -> Result<ModuleTree, ModuleError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModuleError::Io { path, source }
        };
        let builtin_path = root.join("modules.builtin");
        let builtin = std::fs::read_to_string(&builtin_path).map_err(io(&builtin_path))?;
        let mut files = BTreeMap::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).map_err(io(&d))? {
                let e = e.map_err(io(&d))?;
                let p = e.path();
                let ft = e.file_type().map_err(io(&p))?;
                if ft.is_dir() {
                    dirs.push(p);
                } else if let Some(fname) = p.file_name().and_then(|f| f.to_str()) {
                    if fname.ends_with(".ko") || fname.ends_with(".ko.xz") {
                        let rel = p
                            .strip_prefix(root)
                            .map_err(|_| ModuleError::BadModule {
                                path: p.clone(),
                                reason: "outside the module tree".into(),
                            })?
                            .to_string_lossy()
                            .into_owned();
                        files.insert(module_name(fname), rel);
                    }
                }
            }
        }
        Ok(ModuleTree {
            root: root.to_path_buf(),
            files,
            builtin: parse_builtin(&builtin),
            loaded: BTreeMap::new(),
        })
    }

    /// The decompressed bytes of a module looked up before.
    pub fn module_bytes(&self, name: &str) -> Option<&[u8]> {
        self.loaded
            .get(&module_name(name))
            .map(|(_, _, b)| b.as_slice())
    }

    /// Number of module files in the tree.
    pub fn module_count(&self) -> usize {
        self.files.len()
    }
}

impl ModuleSource for ModuleTree {
    fn lookup(&mut self, name: &str) -> Result<Lookup, ModuleError> {
        let name = module_name(name);
        if let Some((path, deps, _)) = self.loaded.get(&name) {
            return Ok(Lookup::Module {
                path: path.clone(),
                deps: deps.clone(),
            });
        }
        let Some(rel) = self.files.get(&name).cloned() else {
            return Ok(if self.builtin.contains(&name) {
                Lookup::Builtin
            } else {
                Lookup::Absent
            });
        };
        let path = self.root.join(&rel);
        let raw = std::fs::read(&path).map_err(|source| ModuleError::Io {
            path: path.clone(),
            source,
        })?;
        let bytes = if rel.ends_with(".xz") {
            decompress_xz(&raw).map_err(|reason| ModuleError::BadModule {
                path: path.clone(),
                reason,
            })?
        } else {
            raw
        };
        let info = modinfo(&bytes).map_err(|reason| ModuleError::BadModule {
            path: path.clone(),
            reason,
        })?;
        if let Some(n) = info.get("name") {
            if module_name(n) != name {
                return Err(ModuleError::BadModule {
                    path,
                    reason: format!("modinfo name {n:?}, expected {name:?}"),
                });
            }
        }
        let deps: Vec<String> = info
            .get("depends")
            .map(|d| {
                d.split(',')
                    .filter(|s| !s.is_empty())
                    .map(module_name)
                    .collect()
            })
            .unwrap_or_default();
        let rel = strip_compression(&rel);
        self.loaded.insert(name, (rel.clone(), deps.clone(), bytes));
        Ok(Lookup::Module { path: rel, deps })
    }
}

/// Decompresses an `.xz` stream (as the kernel's `MODULE_COMPRESS_XZ` writes it).
pub fn decompress_xz(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() * 5);
    lzma_rs::xz_decompress(&mut std::io::Cursor::new(data), &mut out)
        .map_err(|e| format!("xz decompression failed: {e}"))?;
    Ok(out)
}

/// Reads the `key=value` pairs of an ELF64 little-endian module's `.modinfo`
/// section (later keys win).
pub fn modinfo(elf: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let u16_at = |o: usize| -> Result<u16, String> {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("truncated ELF at {o}"))
    };
    let u32_at = |o: usize| -> Result<u32, String> {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("truncated ELF at {o}"))
    };
    let u64_at = |o: usize| -> Result<usize, String> {
        let b = elf
            .get(o..o + 8)
            .ok_or_else(|| format!("truncated ELF at {o}"))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| "ELF offset too large".to_string())
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not an ELF64 little-endian file".into());
    }
    let shoff = u64_at(0x28)?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    if shentsize < 64 {
        return Err(format!("section header size {shentsize}, expected 64"));
    }
    let section = |i: usize| -> Result<(u32, usize, usize), String> {
        let h = shoff + i * shentsize;
        Ok((u32_at(h)?, u64_at(h + 24)?, u64_at(h + 32)?))
    };
    let slice = |off: usize, size: usize| {
        elf.get(off..off.saturating_add(size))
            .ok_or_else(|| "section outside the file".to_string())
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = slice(stroff, strsize)?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = strtab
            .get(name_off as usize..)
            .and_then(|s| s.split(|c| *c == 0).next())
            .unwrap_or_default();
        if name == b".modinfo" {
            let mut map = BTreeMap::new();
            for kv in slice(off, size)?.split(|c| *c == 0) {
                let kv = String::from_utf8_lossy(kv);
                if let Some((k, v)) = kv.split_once('=') {
                    map.insert(k.to_string(), v.to_string());
                }
            }
            return Ok(map);
        }
    }
    Err("no .modinfo section: not a kernel module".into())
}

/// Renders the load list: one absolute path per line, dependencies first,
/// TEE-only modules preceded by a `# tee-only` line.
pub fn render_load_file(release: &str, load: &[(String, String)]) -> String {
    let mut s = String::from(
        "# Kernel modules for the Cloister agent, in load order (dependencies first).\n\
         # One absolute path per line; lines starting with # are comments.\n\
         # Load each with finit_module(fd, \"\", 0); EEXIST = already loaded.\n\
         # A module after `# tee-only` fails with ENODEV outside its TEE: log and go on.\n",
    );
    for (name, rel) in load {
        if OPTIONAL_TEE_MODULES.contains(&name.as_str()) {
            s.push_str("# tee-only\n");
        }
        s.push_str(&format!("/lib/modules/{release}/{rel}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/net/vmw_vsock/vsock.ko.xz:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz: kernel/net/vmw_vsock/vsock.ko.xz
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz kernel/net/vmw_vsock/vsock.ko.xz
kernel/fs/configfs/configfs.ko.xz:
kernel/drivers/virt/coco/tsm.ko.xz: kernel/fs/configfs/configfs.ko.xz
kernel/drivers/virt/coco/sev-guest/sev-guest.ko.xz: kernel/drivers/virt/coco/tsm.ko.xz kernel/fs/configfs/configfs.ko.xz
";
    const BUILTIN: &str =
        "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\n";

    fn names(r: &Resolution) -> Vec<&str> {
        r.load.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn resolves_dependencies_first() {
        let mut src = ModulesDep::parse(DEP, BUILTIN).unwrap();
        let reqs = [
            req("virtio_console", Need::Required),
            req("sev-guest", Need::TeeOnly),
            req("vmw_vsock_virtio_transport", Need::Required),
            req("vsock", Need::Required),
            req("9p", Need::Optional),
        ];
        let r = resolve(&reqs, &mut src).unwrap();
        assert_eq!(
            names(&r),
            [
                "configfs",
                "tsm",
                "sev_guest",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
            ]
        );
        assert_eq!(
            r.load[2].1,
            "kernel/drivers/virt/coco/sev-guest/sev-guest.ko"
        );
        assert_eq!(r.builtin, ["virtio_console"]);
        assert_eq!(r.absent, ["9p"]);
        let text = render_load_file("6.12.0", &r.load);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines[0],
            "/lib/modules/6.12.0/kernel/fs/configfs/configfs.ko"
        );
        assert_eq!(lines.len(), 6);
        assert!(text.contains(
            "# tee-only\n/lib/modules/6.12.0/kernel/drivers/virt/coco/sev-guest/sev-guest.ko\n"
        ));
    }

    #[test]
    fn missing_and_cycles_are_errors() {
        let mut src = ModulesDep::parse(DEP, BUILTIN).unwrap();
        let err = resolve(&[req("tdx_guest", Need::TeeOnly)], &mut src).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel has no module \"tdx_guest\" (neither a .ko nor built in)"
        );

        let mut src = ModulesDep::parse("a.ko: b.ko\n", "").unwrap();
        let err = resolve(&[req("a", Need::Optional)], &mut src).unwrap_err();
        assert!(
            matches!(err, ModuleError::MissingDependency { .. }),
            "{err}"
        );

        let mut src = ModulesDep::parse("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n", "").unwrap();
        let err = resolve(&[req("a", Need::Required)], &mut src).unwrap_err();
        assert_eq!(err.to_string(), "module dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn malformed_modules_dep() {
        for (text, want) in [
            ("no colon here\n", "line 1: expected `path: deps…`"),
            ("\na.txt: b.ko\n", "line 2: module path does not end"),
            ("x/a.ko:\ny/a.ko.xz:\n", "line 2: module \"a\" listed twice"),
        ] {
            let err = ModulesDep::parse(text, "").unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }

    /// Builds a minimal ELF64 with a `.modinfo` section.
    fn fake_module(modinfo_text: &[u8]) -> Vec<u8> {
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo_text);
        let shstr_off = elf.len();
        elf.extend_from_slice(shstr);
        while !elf.len().is_multiple_of(8) {
            elf.push(0);
        }
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, shstr_off, shstr.len());
        sh(11, modinfo_off, modinfo_text.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_modinfo() {
        let elf = fake_module(b"license=GPL\0depends=tsm,configfs\0name=sev_guest\0");
        let info = modinfo(&elf).unwrap();
        assert_eq!(info["depends"], "tsm,configfs");
        assert_eq!(info["name"], "sev_guest");
        assert!(modinfo(b"\x7fELF\x01\x01").unwrap_err().contains("ELF64"));
        assert!(modinfo(&elf[..70]).unwrap_err().contains("truncated"));
    }

    #[test]
    fn tree_source_reads_plain_and_xz_modules() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("kernel/a")).unwrap();
        std::fs::write(root.join("modules.builtin"), BUILTIN).unwrap();
        std::fs::write(
            root.join("kernel/a/tsm.ko"),
            fake_module(b"depends=configfs\0name=tsm\0"),
        )
        .unwrap();
        let cfg = fake_module(b"depends=\0name=configfs\0");
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut std::io::Cursor::new(&cfg), &mut xz).unwrap();
        std::fs::write(root.join("kernel/a/configfs.ko.xz"), xz).unwrap();
        std::fs::write(
            root.join("kernel/a/sev-guest.ko"),
            fake_module(b"depends=tsm\0name=wrong\0"),
        )
        .unwrap();

        let mut tree = ModuleTree::open(root).unwrap();
        assert_eq!(tree.module_count(), 3);
        let r = resolve(
            &[
                req("virtio_pci", Need::Required),
                req("tsm", Need::Required),
            ],
            &mut tree,
        )
        .unwrap();
        assert_eq!(
            r.load,
            [
                ("configfs".to_string(), "kernel/a/configfs.ko".to_string()),
                ("tsm".to_string(), "kernel/a/tsm.ko".to_string()),
            ]
        );
        assert_eq!(r.builtin, ["virtio_pci"]);
        assert_eq!(tree.module_bytes("configfs"), Some(cfg.as_slice()));
        let err = resolve(&[req("sev_guest", Need::TeeOnly)], &mut tree).unwrap_err();
        assert!(err.to_string().contains("modinfo name \"wrong\""), "{err}");
    }
}
