//! Unpacking hand-made layers: every class of escaping tarball is confined
//! to the layer directory (the kernel resolves paths with RESOLVE_IN_ROOT)
//! and nothing is written outside; whiteouts and opaque directories come
//! out in overlayfs format; devices and setuid bits only where allowed;
//! the diff_id and both compressions are checked.

#![allow(clippy::unwrap_used)]

#[path = "registry_common/mod.rs"]
mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use cloister_image::manifest::Compression;
use cloister_image::reference::Digest;
use cloister_image::unpack::{unpack_layer, unpack_tar, UnpackError, UnpackOptions};
use common::tar;

/// A sandbox: `outside/` (must stay untouched) and `root/` (the layer).
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), b"original").unwrap();
        Scene { dir }
    }
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }
    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }
    /// `outside/` still holds exactly `secret` = "original", and nothing
    /// appeared next to `root/`.
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "something was written outside");
        assert_eq!(
            std::fs::read(self.outside().join("secret")).unwrap(),
            b"original"
        );
        let mut top: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["outside", "root"]);
    }
    fn unpack(&self, tar: &[u8]) -> Result<(), UnpackError> {
        unpack_tar(tar, &self.root(), UnpackOptions::default())
    }
}

/// The relative path from root/ to outside/secret, and the absolute one.
fn escapes(s: &Scene) -> (String, String) {
    (
        "../outside/secret".into(),
        format!("{}/secret", s.outside().display()),
    )
}

#[test]
fn absolute_path_lands_inside_the_root() {
    let s = Scene::new();
    let (_, abs) = escapes(&s);
    s.unpack(&tar(|t| {
        t.file(&abs, b"pwned");
    }))
    .unwrap();
    s.assert_outside_untouched();
    let inside = s.root().join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"pwned");
}

#[test]
fn dotdot_path_is_clamped_at_the_root() {
    let s = Scene::new();
    let (rel, _) = escapes(&s);
    s.unpack(&tar(|t| {
        t.file(&rel, b"pwned");
        t.file("a/../../../../outside/secret2", b"pwned");
    }))
    .unwrap();
    s.assert_outside_untouched();
    assert_eq!(
        std::fs::read(s.root().join("outside/secret")).unwrap(),
        b"pwned"
    );
    assert_eq!(
        std::fs::read(s.root().join("outside/secret2")).unwrap(),
        b"pwned"
    );
    // A path that names ".." itself is refused by name.
    let err = s.unpack(&tar(|t| {
        t.dir("a/..");
    }));
    assert!(matches!(err, Err(UnpackError::Refused { .. })), "{err:?}");
}

#[test]
fn symlink_escape_is_resolved_inside_the_root() {
    let s = Scene::new();
    let outside = s.outside().display().to_string();
    s.unpack(&tar(|t| {
        t.dir(&outside[1..]);
        t.symlink("abs", &outside);
        t.symlink("rel", "../../../outside");
        t.dir("outside");
        t.file("abs/secret", b"via abs");
        t.file("rel/new", b"via rel");
    }))
    .unwrap();
    s.assert_outside_untouched();
    // Each link resolves, in root, to the root's own copy of its target.
    assert_eq!(
        std::fs::read(s.root().join("outside/new")).unwrap(),
        b"via rel"
    );
    let abs_inside = s.root().join(&outside[1..]).join("secret");
    assert_eq!(std::fs::read(abs_inside).unwrap(), b"via abs");
}

#[test]
fn symlink_to_a_missing_directory_outside_fails_without_writing() {
    let s = Scene::new();
    let err = s
        .unpack(&tar(|t| {
            t.symlink("evil", "/nonexistent-dir-for-test");
            t.file("evil/x", b"x");
        }))
        .unwrap_err();
    // The link resolves (in root) to a directory that doesn't exist.
    assert!(matches!(err, UnpackError::Io { .. }), "{err:?}");
    s.assert_outside_untouched();
    assert!(!Path::new("/nonexistent-dir-for-test").exists());
}

#[test]
fn hardlink_escape_links_only_inside_the_root() {
    let s = Scene::new();
    let (rel, abs) = escapes(&s);
    // Targets outside the root that don't exist inside: refused.
    for target in [&rel, &abs] {
        let err = s
            .unpack(&tar(|t| {
                t.hardlink("link", target);
            }))
            .unwrap_err();
        assert!(matches!(err, UnpackError::Io { .. }), "{err:?}");
    }
    // A hardlink through a symlinked directory pointing outside links the
    // file inside the root of the same name.
    let outside = s.outside().display().to_string();
    s.unpack(&tar(|t| {
        t.dir(&outside[1..]);
        t.file(&format!("{}/secret", &outside[1..]), b"inner");
        t.symlink("d", &outside);
        t.hardlink("link2", "d/secret");
    }))
    .unwrap();
    s.assert_outside_untouched();
    let inner = std::fs::metadata(s.root().join(&outside[1..]).join("secret")).unwrap();
    let link = std::fs::metadata(s.root().join("link2")).unwrap();
    assert_eq!(inner.ino(), link.ino());
    assert_ne!(
        link.ino(),
        std::fs::metadata(s.outside().join("secret")).unwrap().ino()
    );
    // Writing through the link can't reach outside either.
    std::fs::write(s.root().join("link2"), b"changed").unwrap();
    s.assert_outside_untouched();
}

#[test]
fn file_over_symlink_replaces_the_link_not_its_target() {
    let s = Scene::new();
    let (_, abs) = escapes(&s);
    s.unpack(&tar(|t| {
        t.symlink("f", &abs);
        t.file("f", b"replaced");
        t.symlink("dir", "/");
        t.dir("dir");
        t.file("dir/inner", b"x");
    }))
    .unwrap();
    s.assert_outside_untouched();
    let m = std::fs::symlink_metadata(s.root().join("f")).unwrap();
    assert!(m.is_file());
    assert!(std::fs::symlink_metadata(s.root().join("dir"))
        .unwrap()
        .is_dir());
    assert!(s.root().join("dir/inner").is_file());
}

#[test]
fn whiteouts_and_opaque_directories_in_overlay_format() {
    let s = Scene::new();
    s.unpack(&tar(|t| {
        t.dir("etc");
        t.file("etc/.wh.passwd", b"");
        t.dir("var");
        t.file("var/.wh..wh..opq", b"");
        t.file("var/kept", b"new");
        t.file("old", b"x");
        t.file(".wh.old", b"");
    }))
    .unwrap();
    for name in ["etc/passwd", "old"] {
        let m = std::fs::symlink_metadata(s.root().join(name)).unwrap();
        assert!(m.file_type().is_char_device(), "{name} is not a whiteout");
        assert_eq!(m.rdev(), 0, "{name} whiteout is not 0:0");
    }
    let mut buf = [0u8; 4];
    let n = rustix::fs::getxattr(s.root().join("var"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert_eq!(std::fs::read(s.root().join("var/kept")).unwrap(), b"new");
    assert!(!s.root().join("var/.wh..wh..opq").exists());
    // A whiteout can't be used to escape either.
    let err = s.unpack(&tar(|t| {
        t.file(".wh..", b"");
    }));
    assert!(matches!(err, Err(UnpackError::Refused { .. })), "{err:?}");
    s.assert_outside_untouched();
}

#[test]
fn devices_and_setuid_only_where_allowed() {
    let s = Scene::new();
    let layer = tar(|t| {
        t.device("dev/null");
    });
    let err = s.unpack(&layer).unwrap_err();
    assert!(err.to_string().contains("allow_devices"), "{err}");
    unpack_tar(
        layer.as_slice(),
        &s.root(),
        UnpackOptions {
            allow_devices: true,
            allow_setuid: false,
        },
    )
    .unwrap();
    let m = std::fs::symlink_metadata(s.root().join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));

    let suid = tar(|t| {
        t.file_mode("su", b"#!", 0o4755);
        t.file_mode("sg", b"#!", 0o2755);
    });
    s.unpack(&suid).unwrap();
    for f in ["su", "sg"] {
        let mode = std::fs::metadata(s.root().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "{f}: setuid/setgid kept");
    }
    let s2 = Scene::new();
    unpack_tar(
        suid.as_slice(),
        &s2.root(),
        UnpackOptions {
            allow_devices: false,
            allow_setuid: true,
        },
    )
    .unwrap();
    let mode = std::fs::metadata(s2.root().join("su"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
}

#[test]
fn gzip_and_zstd_layers_unpack_and_diff_id_is_checked() {
    let layer = tar(|t| {
        t.dir("d");
        t.file("d/f", &vec![7u8; 100_000]);
    });
    let diff_id = Digest::of(&layer);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let zst = ruzstd::encoding::compress_to_vec(
        layer.as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    for (name, compression, blob) in [
        ("tar", Compression::None, layer.clone()),
        ("gzip", Compression::Gzip, gz),
        ("zstd", Compression::Zstd, zst),
    ] {
        let s = Scene::new();
        unpack_layer(
            blob.as_slice(),
            compression,
            &diff_id,
            &s.root(),
            UnpackOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            std::fs::read(s.root().join("d/f")).unwrap().len(),
            100_000,
            "{name}"
        );
        let wrong = Digest::of(b"other");
        let s = Scene::new();
        let err = unpack_layer(
            blob.as_slice(),
            compression,
            &wrong,
            &s.root(),
            UnpackOptions::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(wrong.as_str()) && msg.contains(diff_id.as_str()),
            "{name}: {msg}"
        );
    }
}
