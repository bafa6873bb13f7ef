//! Arm CCA host launch through KVM's RMI interface (the cca-host v12+
//! series, see [`uapi`]): the realm is created implicitly by KVM on the first
//! `KVM_ARM_RMI_POPULATE`, the kernel sets RIPAS of the initial memslots and
//! creates RECs for the vCPUs, and the first `KVM_RUN` activates the realm.
//!
//! A [`RealmLaunchPlan`] (from `cloister-measure`, which also predicts its
//! RIM) is executed against the small [`RealmVm`] seam. [`RecordingVm`] is
//! the honest fake: it records what the RMM would be asked to do, in order,
//! so a test can replay that through the calculator.

pub mod sys;
pub mod uapi;

use cloister_measure::cca::vmm::{PlanStep, RealmLaunchPlan};
use cloister_measure::cca::{RecParams, GRANULE_SIZE};

/// Errors executing a launch plan.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// An ioctl failed.
    #[error("{what}")]
    Kvm {
        /// Which call.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The VM made no progress on a populate call.
    #[error("KVM_ARM_RMI_POPULATE made no progress at IPA {0:#x}")]
    Stalled(u64),
    /// This VM handle cannot do that step (e.g. vCPUs belong to the VMM).
    #[error("{0}")]
    Unsupported(String),
}

/// What the launch needs from a realm VM, drawn from the launcher's side.
pub trait RealmVm {
    /// Declares protected RAM `[base, top)` (a guest_memfd memslot; KVM sets
    /// its RIPAS to RAM).
    fn add_private_ram(&mut self, base: u64, top: u64) -> Result<(), LaunchError>;
    /// One `KVM_ARM_RMI_POPULATE`: copy granule-aligned `data` to `base`,
    /// measured or not. Returns how many bytes were populated (KVM may stop
    /// early; the caller continues).
    fn populate(&mut self, base: u64, data: &[u8], measure: bool) -> Result<u64, LaunchError>;
    /// Creates vCPU `index` with its entry state.
    fn create_vcpu(&mut self, index: u32, rec: &RecParams) -> Result<(), LaunchError>;
}

/// Executes `plan` against `vm`. Populated images are widened to whole
/// granules and zero-padded, as the RMM measures them.
pub fn launch(plan: &RealmLaunchPlan<'_>, vm: &mut dyn RealmVm) -> Result<(), LaunchError> {
    let mut vcpu = 0u32;
    for step in &plan.steps {
        match step {
            PlanStep::InitRipas { base, top } => vm.add_private_ram(*base, *top)?,
            PlanStep::Populate { ipa, bytes, .. } => {
                let base = ipa - ipa % GRANULE_SIZE;
                let lead = (ipa - base) as usize;
                let len =
                    (lead + bytes.len()).div_ceil(GRANULE_SIZE as usize) * GRANULE_SIZE as usize;
                let mut buf = vec![0u8; len];
                buf[lead..lead + bytes.len()].copy_from_slice(bytes);
                let mut done = 0usize;
                while done < buf.len() {
                    let n = vm.populate(base + done as u64, &buf[done..], true)? as usize;
                    if n == 0 {
                        return Err(LaunchError::Stalled(base + done as u64));
                    }
                    done += n;
                }
            }
            PlanStep::PopulateUnmeasured { ipa, size } => {
                let base = ipa - ipa % GRANULE_SIZE;
                let len = (ipa + size).div_ceil(GRANULE_SIZE) * GRANULE_SIZE - base;
                let buf = vec![0u8; len as usize];
                let mut done = 0usize;
                while done < buf.len() {
                    let n = vm.populate(base + done as u64, &buf[done..], false)? as usize;
                    if n == 0 {
                        return Err(LaunchError::Stalled(base + done as u64));
                    }
                    done += n;
                }
            }
            PlanStep::CreateRec(rec) => {
                vm.create_vcpu(vcpu, rec)?;
                vcpu += 1;
            }
        }
    }
    Ok(())
}

/// A call the RMM would see, as recorded by [`RecordingVm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RmiCall {
    /// `RMI_RTT_INIT_RIPAS` over `[base, top)`.
    InitRipas {
        /// Start.
        base: u64,
        /// End.
        top: u64,
    },
    /// `RMI_DATA_CREATE` of one granule.
    DataCreate {
        /// IPA.
        ipa: u64,
        /// Granule content (`None` when not measured).
        content: Option<Vec<u8>>,
    },
    /// `RMI_REC_CREATE`.
    RecCreate(RecParams),
}

/// The recording fake: accepts everything KVM would and records the RMI
/// calls it implies. `max_chunk` limits each populate, like KVM's partial
/// progress.
#[derive(Debug, Default)]
pub struct RecordingVm {
    /// Calls in order.
    pub calls: Vec<RmiCall>,
    /// Largest number of bytes one populate call accepts (0 = unlimited).
    pub max_chunk: u64,
    vcpus: u32,
}

impl RecordingVm {
    /// Replays the recorded calls through the CCA calculator.
    pub fn replay_rim(
        &self,
        params: &cloister_measure::cca::RealmParams,
        version: cloister_measure::cca::RmmVersion,
    ) -> Result<cloister_measure::cca::RealmMeasurement, cloister_measure::cca::CcaError> {
        let mut rim = cloister_measure::cca::Rim::realm_create(params, version)?;
        for c in &self.calls {
            match c {
                RmiCall::InitRipas { base, top } => rim.init_ripas_range(*base, *top)?,
                RmiCall::DataCreate {
                    ipa,
                    content: Some(g),
                } => rim.data_create(cloister_measure::cca::Ipa::new(*ipa)?, g)?,
                RmiCall::DataCreate { ipa, content: None } => {
                    rim.data_create_unmeasured(cloister_measure::cca::Ipa::new(*ipa)?)
                }
                RmiCall::RecCreate(r) => rim.rec_create(r),
            }
        }
        Ok(rim.measurement())
    }
}

impl RealmVm for RecordingVm {
    fn add_private_ram(&mut self, base: u64, top: u64) -> Result<(), LaunchError> {
        self.calls.push(RmiCall::InitRipas { base, top });
        Ok(())
    }

    fn populate(&mut self, base: u64, data: &[u8], measure: bool) -> Result<u64, LaunchError> {
        let g = GRANULE_SIZE as usize;
        if !base.is_multiple_of(GRANULE_SIZE) || !data.len().is_multiple_of(g) {
            return Err(LaunchError::Kvm {
                what: format!(
                    "KVM_ARM_RMI_POPULATE at {base:#x} with {} bytes",
                    data.len()
                ),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let n = if self.max_chunk == 0 {
            data.len()
        } else {
            data.len().min(self.max_chunk as usize)
        };
        for (i, granule) in data[..n].chunks(g).enumerate() {
            self.calls.push(RmiCall::DataCreate {
                ipa: base + (i * g) as u64,
                content: measure.then(|| granule.to_vec()),
            });
        }
        Ok(n as u64)
    }

    fn create_vcpu(&mut self, index: u32, rec: &RecParams) -> Result<(), LaunchError> {
        if index != self.vcpus {
            return Err(LaunchError::Unsupported(format!(
                "vCPU {index} created out of order"
            )));
        }
        self.vcpus += 1;
        self.calls.push(RmiCall::RecCreate(*rec));
        Ok(())
    }
}

/// A realm VM on a real KVM with the cca-host series (arm64 only at run
/// time; it compiles everywhere). Memslots and vCPUs are the VMM's (QEMU's)
/// job; this handle populates initial images.
#[derive(Debug)]
pub struct KvmRealmVm {
    vm: std::os::fd::OwnedFd,
}

impl KvmRealmVm {
    /// Creates a realm VM with `ipa_bits` of IPA space.
    pub fn create(ipa_bits: u8) -> Result<Self, LaunchError> {
        let vm = sys::create_realm_vm(ipa_bits).map_err(|source| LaunchError::Kvm {
            what: format!("KVM_CREATE_VM (realm, {ipa_bits}-bit IPA)"),
            source,
        })?;
        Ok(Self { vm })
    }
}

impl RealmVm for KvmRealmVm {
    fn add_private_ram(&mut self, base: u64, top: u64) -> Result<(), LaunchError> {
        Err(LaunchError::Unsupported(format!(
            "guest_memfd memslot {base:#x}..{top:#x}: memslots are created by the VMM"
        )))
    }

    fn populate(&mut self, base: u64, data: &[u8], measure: bool) -> Result<u64, LaunchError> {
        let mut args = uapi::KvmArmRmiPopulate {
            base,
            size: data.len() as u64,
            source_uaddr: data.as_ptr() as u64,
            flags: if measure {
                uapi::KVM_ARM_RMI_POPULATE_FLAGS_MEASURE
            } else {
                0
            },
            reserved: 0,
        };
        sys::rmi_populate(&self.vm, &mut args).map_err(|source| LaunchError::Kvm {
            what: format!("KVM_ARM_RMI_POPULATE at {base:#x}"),
            source,
        })?;
        Ok(data.len() as u64 - args.size)
    }

    fn create_vcpu(&mut self, index: u32, _rec: &RecParams) -> Result<(), LaunchError> {
        Err(LaunchError::Unsupported(format!(
            "vCPU {index}: vCPUs are created by the VMM"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_measure::cca::vmm::{LaunchImages, QemuVirt};
    use cloister_measure::cca::{HashAlgo, RealmFlags, RealmParams, RmmVersion};

    fn arm64_image(len: usize) -> Vec<u8> {
        let mut k = vec![0u8; len];
        let h = cloister_measure::cca::vmm::ArmImageHeader {
            text_offset: 0,
            image_size: len as u64,
            flags: 0xa,
        };
        k[..64].copy_from_slice(&h.to_bytes());
        for (i, b) in k.iter_mut().enumerate().skip(64) {
            *b = (i * 7 % 251) as u8;
        }
        k
    }

    #[test]
    fn replaying_the_recorded_calls_gives_the_predicted_rim() {
        let kernel = arm64_image(3 * 4096 + 123);
        let initrd: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
        let dtb = vec![0xd0; 5000];
        let vmm = QemuVirt {
            ram_size: 256 << 20,
            measurement_log: true,
        };
        let layout = vmm
            .layout(Some(&kernel), Some(initrd.len() as u64))
            .unwrap();
        for algo in [HashAlgo::Sha256, HashAlgo::Sha512] {
            let params = RealmParams {
                flags: RealmFlags::default(),
                s2sz: QemuVirt::DEFAULT_S2SZ,
                sve_vl: 0,
                num_bps: 5,
                num_wps: 3,
                pmu_num_ctrs: 0,
                hash_algo: algo,
            };
            let plan = layout
                .plan(
                    params,
                    RmmVersion::V1,
                    LaunchImages {
                        kernel: Some(&kernel),
                        initrd: Some(&initrd),
                        dtb: &dtb,
                    },
                )
                .unwrap();
            let predicted = plan.rim().unwrap();
            for chunk in [0, 4096, 3 * 4096] {
                let mut vm = RecordingVm {
                    max_chunk: chunk,
                    ..RecordingVm::default()
                };
                launch(&plan, &mut vm).unwrap();
                assert_eq!(
                    vm.replay_rim(&params, RmmVersion::V1).unwrap(),
                    predicted,
                    "chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn sim_layout_plans_replay_too() {
        let k = vec![1u8; 9000];
        let i = vec![2u8; 7000];
        let plan = crate::host::sim::layout::plan(
            crate::host::sim::layout::SimImages {
                kernel: &k,
                initrd: &i,
                cmdline: "x",
                vcpus: 3,
                memory_mib: 16,
            },
            HashAlgo::Sha256,
        )
        .unwrap();
        let mut vm = RecordingVm::default();
        launch(&plan, &mut vm).unwrap();
        assert_eq!(
            vm.replay_rim(&plan.params, plan.version).unwrap(),
            plan.rim().unwrap()
        );
    }

    #[test]
    fn a_vm_that_makes_no_progress_is_reported() {
        #[derive(Debug)]
        struct Stuck;
        impl RealmVm for Stuck {
            fn add_private_ram(&mut self, _: u64, _: u64) -> Result<(), LaunchError> {
                Ok(())
            }
            fn populate(&mut self, _: u64, _: &[u8], _: bool) -> Result<u64, LaunchError> {
                Ok(0)
            }
            fn create_vcpu(&mut self, _: u32, _: &RecParams) -> Result<(), LaunchError> {
                Ok(())
            }
        }
        let k = vec![1u8; 10];
        let plan = crate::host::sim::layout::plan(
            crate::host::sim::layout::SimImages {
                kernel: &k,
                initrd: &k,
                cmdline: "",
                vcpus: 1,
                memory_mib: 16,
            },
            HashAlgo::Sha256,
        )
        .unwrap();
        assert!(matches!(
            launch(&plan, &mut Stuck),
            Err(LaunchError::Stalled(_))
        ));
    }

    #[test]
    #[ignore = "needs Arm CCA hardware"]
    fn real_kvm_populates_a_realm() {
        let mut vm = KvmRealmVm::create(40).unwrap();
        assert_eq!(vm.populate(0x4000_0000, &[0u8; 4096], true).unwrap(), 4096);
    }
}
