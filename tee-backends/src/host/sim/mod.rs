//! The sim backend: a software RMM for a real QEMU guest (DESIGN.md, "The
//! sim backend"). At `prepare` the host computes the RIM over the exact
//! kernel, initramfs and command line it hands QEMU (layout in [`layout`]),
//! sets the RPV to the initdata digest, creates a fresh RAK and serves
//! token and REM requests on a unix socket that QEMU exposes to the guest as
//! the virtio-serial port `cloister.sim`.

pub mod layout;
pub mod platform;
pub mod rmm;
pub mod service;

use std::path::Path;

use cloister_measure::cca::{HashAlgo, RealmMeasurement};

use super::refvals::{PlatformRef, RealmRef};
use super::{initdata_field, read_input, HostOptions, MeasureError, ReferenceValues};
use crate::simproto::SIM_PORT_NAME;
use crate::{HostBackend, Launch, PrepareError, Prepared, QemuSettings, TeeKind};

pub use platform::SimPlatform;
pub use rmm::SimRmm;
pub use service::SimService;

/// Name of the socket in the sandbox state directory.
pub const SOCKET_NAME: &str = "sim-rmm.sock";

/// The sim backend.
#[derive(Debug, Clone)]
pub struct SimBackend {
    opts: HostOptions,
    /// Realm measurement algorithm.
    pub algo: HashAlgo,
}

impl SimBackend {
    /// A sim backend keeping its platform key under `opts.config_dir`.
    pub fn new(opts: HostOptions) -> Self {
        Self {
            opts,
            algo: HashAlgo::Sha256,
        }
    }

    /// The RIM and RPV of `launch`.
    pub fn measure(&self, launch: &Launch) -> Result<(RealmMeasurement, [u8; 64]), MeasureError> {
        let kernel = read_input("kernel", &launch.kernel)?;
        let initrd = read_input("initramfs", &launch.initramfs)?;
        self.measure_images(launch, &kernel, &initrd)
    }

    /// The RIM and RPV of `launch` with these kernel and initramfs bytes.
    fn measure_images(
        &self,
        launch: &Launch,
        kernel: &[u8],
        initrd: &[u8],
    ) -> Result<(RealmMeasurement, [u8; 64]), MeasureError> {
        let plan = layout::plan(
            layout::SimImages {
                kernel,
                initrd,
                cmdline: &launch.cmdline,
                vcpus: launch.vcpus,
                memory_mib: launch.memory_mib,
            },
            self.algo,
        )?;
        let rim = plan.rim()?;
        let rpv = initdata_field(launch, TeeKind::Sim)?;
        let mut out = [0u8; 64];
        out.copy_from_slice(&rpv);
        Ok((rim, out))
    }

    /// The reference values a verifier needs for `launch`: the sim
    /// platform (implementation id, RMM component, config) and the realm
    /// (RIM, RPV, RAK hash algorithm). REMs are left out: the guest
    /// extends them at run time.
    pub fn reference_values(&self, launch: &Launch) -> Result<ReferenceValues, MeasureError> {
        let (rim, rpv) = self.measure(launch)?;
        Ok(sim_reference_values(rim, rpv))
    }
}

/// Reference values for a sim realm with `rim` and `rpv`.
pub fn sim_reference_values(rim: RealmMeasurement, rpv: [u8; 64]) -> ReferenceValues {
    use sha2::Digest as _;
    let mut rv = ReferenceValues::default();
    rv.cca_platform.push(PlatformRef {
        implementation_id: sha2::Sha256::digest(platform::IMPLEMENTATION_LABEL).to_vec(),
        config: Some(platform::CONFIG.to_vec()),
        sw_components: vec![platform::rmm_component()],
    });
    rv.cca_realm.push(RealmRef {
        rim: rim.as_bytes().to_vec(),
        rems: None,
        rpv: rpv.to_vec(),
        rak_hash_algorithm: Some("sha-256".into()),
    });
    rv
}

impl HostBackend for SimBackend {
    fn kind(&self) -> TeeKind {
        TeeKind::Sim
    }

    fn prepare(&self, launch: &Launch, state_dir: &Path) -> Result<Prepared, PrepareError> {
        // Measure through open files and hand QEMU those very files: the
        // RIM covers exactly the bytes the guest gets, even if the asset
        // paths are replaced in between.
        let kernel = PinnedFile::open("kernel", &launch.kernel).map_err(super::invalid_chain)?;
        let initrd =
            PinnedFile::open("initramfs", &launch.initramfs).map_err(super::invalid_chain)?;
        let (rim, rpv) = self
            .measure_images(launch, &kernel.bytes, &initrd.bytes)
            .map_err(super::invalid_chain)?;
        let platform = SimPlatform::load_or_create(&self.opts.config_dir)
            .map_err(|e| PrepareError::InvalidLaunch(super::chain(&e)))?;
        let socket = state_dir.join(SOCKET_NAME);
        let service =
            SimService::start(&socket, SimRmm::new(platform, rim, rpv)).map_err(|source| {
                PrepareError::HostService {
                    tee: TeeKind::Sim,
                    source,
                }
            })?;
        let qemu = QemuSettings {
            extra_args: vec![
                "-device".into(),
                "virtio-serial-pci,id=vsersim".into(),
                "-chardev".into(),
                format!("socket,id=simrmm,path={}", socket.display()),
                "-device".into(),
                format!("virtserialport,bus=vsersim.0,chardev=simrmm,name={SIM_PORT_NAME}"),
            ],
            kernel: Some(kernel.proc_path()),
            initramfs: Some(initrd.proc_path()),
            ..QemuSettings::default()
        };
        Ok(Prepared {
            qemu,
            guard: Some(Box::new((service, kernel.file, initrd.file))),
        })
    }
}

/// A file read through a descriptor that stays open, so that the bytes
/// read can be handed on by `/proc/<pid>/fd/<n>` (the same open file, not
/// whatever the path names later).
struct PinnedFile {
    file: std::fs::File,
    bytes: Vec<u8>,
}

impl PinnedFile {
    fn open(what: &'static str, path: &Path) -> Result<PinnedFile, MeasureError> {
        use std::io::Read as _;
        let read_err = |source| MeasureError::Read {
            what,
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read_err)?;
        Ok(PinnedFile { file, bytes })
    }

    fn proc_path(&self) -> std::path::PathBuf {
        use std::os::fd::AsRawFd as _;
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::{Attester, SimAttester};
    use cloister_attestation::cca;

    /// A temp dir with a synthetic launch in it, and a sim backend keeping
    /// its platform key there.
    fn fixture() -> (tempfile::TempDir, Launch, SimBackend) {
        let dir = tempfile::tempdir().unwrap();
        let launch = crate::host::testutil::launch(dir.path());
        let backend = SimBackend::new(HostOptions {
            config_dir: dir.path().join("config"),
        });
        (dir, launch, backend)
    }

    #[test]
    fn prepare_serves_tokens_over_the_socket_like_the_guest_sees_them() {
        let (dir, launch, backend) = fixture();
        let prepared = backend.prepare(&launch, dir.path()).unwrap();
        let args = prepared.qemu.extra_args.join(" ");
        assert!(args.contains("name=cloister.sim"), "{args}");
        let socket = dir.path().join(SOCKET_NAME);
        assert!(args.contains(&socket.display().to_string()));

        // Stand in for QEMU + guest: connect and speak the protocol.
        let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let guest = SimAttester::with_channel(Box::new(stream));
        guest.extend(2, b"container image digest").unwrap();
        let token = guest.evidence(&[0x77; 64]).unwrap();
        let t = cca::decode(&token).unwrap();
        assert_eq!(t.realm_claims.challenge, [0x77; 64]);

        // The reference values predict this RIM and RPV.
        let rv = backend.reference_values(&launch).unwrap();
        assert_eq!(rv.cca_realm[0].rim, t.realm_claims.rim);
        assert_eq!(rv.cca_realm[0].rpv, t.realm_claims.personalization_value);
        crate::evidence::check_initdata(TeeKind::Sim, &token, launch.initdata.as_deref()).unwrap();

        // Bad requests get an error answer, and the service keeps going.
        let err = guest.extend(7, b"x").unwrap_err();
        assert!(format!("{err:?}").contains("REM index 7"), "{err:?}");
        assert!(guest.evidence(&[1; 64]).is_ok());

        drop(prepared);
        assert!(!socket.exists(), "socket removed when the guard drops");
    }

    /// QEMU gets the very files that were measured: replacing the asset
    /// paths after `prepare` changes neither what QEMU reads nor the RIM.
    #[test]
    fn prepare_pins_the_measured_images() {
        let (dir, launch, backend) = fixture();
        let measured = backend.reference_values(&launch).unwrap().cca_realm[0]
            .rim
            .clone();
        let kernel_before = std::fs::read(&launch.kernel).unwrap();
        let prepared = backend.prepare(&launch, dir.path()).unwrap();
        let pinned = prepared.qemu.kernel.clone().expect("kernel pinned");
        assert!(pinned.starts_with("/proc"), "{}", pinned.display());
        assert!(prepared.qemu.initramfs.is_some());

        // Someone replaces the kernel file (write elsewhere, rename over).
        let tmp = dir.path().join("kernel.new");
        std::fs::write(&tmp, vec![0x4c; 300_000]).unwrap();
        std::fs::rename(&tmp, &launch.kernel).unwrap();
        assert_eq!(std::fs::read(&pinned).unwrap(), kernel_before);
        // Measuring the path now gives another RIM; the pinned one did not move.
        let now = backend.reference_values(&launch).unwrap().cca_realm[0]
            .rim
            .clone();
        assert_ne!(now, measured);
        drop(prepared);
    }

    #[test]
    fn tampered_initramfs_changes_the_rim() {
        let (_dir, launch, backend) = fixture();
        let (a, _) = backend.measure(&launch).unwrap();
        let mut bytes = std::fs::read(&launch.initramfs).unwrap();
        bytes[1000] ^= 0x01;
        std::fs::write(&launch.initramfs, bytes).unwrap();
        let (b, _) = backend.measure(&launch).unwrap();
        assert_ne!(a, b);
    }
}
