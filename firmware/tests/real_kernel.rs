//! Builds the guest assets twice from the real Debian kernel package that
//! `cloister assets build` saved in the cache, and checks that the bytes are
//! identical, the module list is what the pin records, and every module in
//! the load list is a decompressed ELF in the archive. Needs no network: it
//! uses the cached .deb and fails, naming the fix, when there is none.

use std::path::PathBuf;

use cloister_firmware::build::{build_assets, BuildOptions};
use cloister_firmware::cpio;
use cloister_firmware::kernel::deb_file_name;
use cloister_firmware::manifest::KernelPin;
use cloister_firmware::{default_cache_dir, Assets, MODULES_LOAD_PATH};

/// The saved kernel package the last `cloister assets build` used.
fn cached_deb() -> PathBuf {
    let fix = "run `cloister assets build` (scripts/test.sh does) to download and cache the kernel package";
    let cache = default_cache_dir().expect("no cache dir: set CLOISTER_CACHE_DIR or HOME");
    let assets = Assets::locate(Some(&cache)).unwrap_or_else(|e| panic!("{e}; {fix}"));
    let k = &assets.manifest.kernel;
    let deb = cache
        .join("debs")
        .join(deb_file_name(&k.package, &k.version));
    assert!(deb.is_file(), "{} is missing: {fix}", deb.display());
    deb
}

/// A minimal x86-64 ELF header without program headers: passes the static check.
fn fake_agent() -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x12] = 62;
    elf.extend_from_slice(b"fake agent for the reproducibility test");
    elf
}

#[test]
fn same_inputs_give_the_same_assets() {
    let deb = cached_deb();
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("agent");
    std::fs::write(&agent, fake_agent()).unwrap();
    let opts = |name: &str| BuildOptions {
        cache_dir: tmp.path().join(name),
        agent: agent.clone(),
        kernel_deb: Some(deb.clone()),
        suite: None,
        record_pin: None,
        force: false,
    };
    let a = build_assets(&opts("a")).unwrap();
    let b = build_assets(&opts("b")).unwrap();
    assert!(!a.up_to_date && !b.up_to_date);
    assert_eq!(
        a.manifest, b.manifest,
        "two builds of the same inputs differ"
    );
    for (fa, fb) in a.files.iter().zip(&b.files) {
        assert_eq!(fa.sha256, fb.sha256, "{} differs", fa.path.display());
    }

    // Unchanged inputs: nothing to do. Changed agent: a rebuild.
    let again = build_assets(&opts("a")).unwrap();
    assert!(again.up_to_date);
    std::fs::write(&agent, [fake_agent(), b"v2".to_vec()].concat()).unwrap();
    let changed = build_assets(&opts("a")).unwrap();
    assert!(!changed.up_to_date);
    assert_ne!(
        changed.manifest.outputs.initramfs.sha256,
        a.manifest.outputs.initramfs.sha256
    );
    assert_eq!(changed.manifest.outputs.kernel, a.manifest.outputs.kernel);

    // The located assets verify.
    let located = Assets::locate(Some(&tmp.path().join("a"))).unwrap();
    located.verify().unwrap();

    // Same kernel as the committed pin: same kernel bytes, same modules.
    let m = &a.manifest;
    let pin = KernelPin::recorded().unwrap();
    if pin.kernel.deb_sha256 == m.kernel.deb_sha256 {
        let (pk, mk) = (&pin.kernel, &m.kernel);
        assert_eq!(
            (
                &pk.package,
                &pk.version,
                &pk.release,
                &pk.vmlinuz_sha256,
                &pk.config_sha256
            ),
            (
                &mk.package,
                &mk.version,
                &mk.release,
                &mk.vmlinuz_sha256,
                &mk.config_sha256
            )
        );
        let names: Vec<&str> = m.modules.load.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, pin.modules);
    }
    assert!(m.modules.builtin.contains(&"virtio_console".to_string()));

    // The archive: /init is the agent, every listed module is there, decompressed.
    let bytes = std::fs::read(&located.initramfs).unwrap();
    let entries = cpio::parse(&bytes).unwrap();
    let get = |p: &str| {
        entries
            .iter()
            .find(|e| e.path == p.trim_start_matches('/'))
            .unwrap_or_else(|| panic!("{p} not in the initramfs"))
    };
    let init = get("/init");
    assert_eq!(init.perm(), 0o755);
    assert_eq!(init.data, std::fs::read(&agent).unwrap());
    assert!(get("/dev/console").is_char_device());
    let load = String::from_utf8(get(MODULES_LOAD_PATH).data.clone()).unwrap();
    let listed: Vec<&str> = load
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(listed.len(), m.modules.load.len());
    for (path, rec) in listed.iter().zip(&m.modules.load) {
        assert_eq!(*path, rec.path);
        let e = get(path);
        assert!(
            e.data.starts_with(b"\x7fELF"),
            "{path} is not a decompressed ELF"
        );
        assert_eq!(cloister_firmware::sha256_hex(&e.data), rec.sha256.as_str());
    }
    let pos = |n: &str| {
        m.modules
            .load
            .iter()
            .position(|r| r.name == n)
            .unwrap_or_else(|| panic!("{n} not loaded"))
    };
    assert!(pos("vsock") < pos("vmw_vsock_virtio_transport_common"));
    assert!(pos("vmw_vsock_virtio_transport_common") < pos("vmw_vsock_virtio_transport"));
    assert!(pos("configfs") < pos("tsm"));
    assert!(pos("tsm") < pos("sev_guest") && pos("tsm") < pos("tdx_guest"));
}
