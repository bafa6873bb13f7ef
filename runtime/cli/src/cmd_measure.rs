//! `cloister measure`: predicts the reference values a verifier should
//! expect for a launch, and prints them in the reference-value JSON
//! `cloister verify --reference-values` reads. With no asset flags it
//! measures Cloister's own guest assets with the command line, vCPUs and
//! memory `cloister run` uses by default.

use std::path::PathBuf;

use anyhow::{bail, Context};
use cloister_runtime::hypervisor::AgentTransport;
use cloister_runtime::sandbox::base_cmdline;
use cloister_tee::host::cca::{CcaBackend, CcaMeasureInputs};
use cloister_tee::host::sim::SimBackend;
use cloister_tee::host::HostOptions;
use cloister_tee::{Launch, TeeKind};

/// Arguments of `cloister measure`.
#[derive(Debug, clap::Args)]
pub struct MeasureArgs {
    /// TEE: cca, snp, tdx or sim.
    #[arg(long, value_enum)]
    tee: TeeKind,
    /// Guest kernel (default: Cloister's guest kernel).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Initramfs (default: Cloister's initramfs).
    #[arg(long = "initramfs", alias = "initrd", value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// Kernel command line (default: what `cloister evidence` and `cloister
    /// run` pass with the agent on virtio-serial).
    #[arg(long, value_name = "CMDLINE")]
    cmdline: Option<String>,
    /// Guest firmware (OVMF for SNP, TDVF for TDX).
    #[arg(long, value_name = "FILE")]
    firmware: Option<PathBuf>,
    /// vCPUs (as `cloister run --cpus`).
    #[arg(long = "cpus", alias = "vcpus", default_value_t = 1)]
    vcpus: u32,
    /// vCPU type (SNP: EPYC-v4 (default), EPYC-Milan, EPYC-Genoa, ...).
    #[arg(long, value_name = "TYPE")]
    vcpu_type: Option<String>,
    /// Guest memory in MiB (sim and CCA layouts and the TDX RTMR1 depend on
    /// it).
    #[arg(long, value_name = "MiB", default_value_t = 512)]
    memory: u32,
    /// Initdata TOML; its digest is the expected HOST_DATA/MRCONFIGID/RPV.
    #[arg(long, value_name = "FILE")]
    initdata: Option<PathBuf>,
    /// Realm measurement algorithm for cca/sim: sha256 or sha512
    /// (default: sha512 for cca, sha256 for sim).
    #[arg(long, value_name = "ALGO")]
    hash_algo: Option<String>,
    /// CCA: the DTB QEMU loads (dump it with `-machine dumpdtb=FILE`).
    #[arg(long, value_name = "FILE")]
    dtb: Option<PathBuf>,
    /// TDX: the QEMU version that will launch the guest (up to 10.1 QEMU
    /// patches the kernel's setup header, which changes RTMR1). Without it
    /// (and --tdvf-edk2) RTMR1 lists every behaviour's value.
    #[arg(long, value_name = "MAJOR.MINOR")]
    qemu_version: Option<String>,
    /// TDX: the edk2 stable release the TDVF was built from, YYYYMM (e.g.
    /// 202411): decides where the ReadyToBoot separator goes and whether
    /// the TDVF reads QEMU's unpatched etc/boot/kernel.
    #[arg(long, value_name = "YYYYMM")]
    tdvf_edk2: Option<u32>,
    /// TDX: a CC event log (CCEL) recorded on a boot of the same launch on
    /// this host; RTMR0 is replayed from it (and its RTMR1/RTMR2 events are
    /// checked against the prediction).
    #[arg(long, value_name = "FILE")]
    event_log: Option<PathBuf>,
}

fn qemu_version(s: &str) -> anyhow::Result<(u32, u32)> {
    let mut it = s.split('.');
    let parse = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
    match (parse(it.next()), parse(it.next())) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => bail!("--qemu-version {s:?}: expected MAJOR.MINOR, e.g. 10.0"),
    }
}

fn realm_algo(s: &str) -> anyhow::Result<cloister_measure::cca::HashAlgo> {
    match s {
        "sha256" | "sha-256" => Ok(cloister_measure::cca::HashAlgo::Sha256),
        "sha512" | "sha-512" => Ok(cloister_measure::cca::HashAlgo::Sha512),
        other => bail!("--hash-algo {other:?}: expected sha256 or sha512"),
    }
}

/// Builds the launch the flags describe (defaults: Cloister's assets).
pub fn launch_from(args: &MeasureArgs) -> anyhow::Result<Launch> {
    let (kernel, initramfs) = match (&args.kernel, &args.initrd) {
        (Some(k), Some(i)) => (k.clone(), i.clone()),
        (None, None) => {
            let assets = cloister_firmware::Assets::locate(None)?;
            (assets.kernel, assets.initramfs)
        }
        _ => {
            bail!(
                "give both --kernel and --initramfs, or neither (to measure Cloister's own assets)"
            )
        }
    };
    let cmdline = match &args.cmdline {
        Some(c) => c.clone(),
        // What `cloister evidence` boots with (agent over virtio-serial).
        None => base_cmdline(
            &AgentTransport::Serial {
                socket: PathBuf::new(),
            },
            &[],
        ),
    };
    let initdata = match &args.initdata {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading initdata {}", p.display()))?)
        }
        None => None,
    };
    Ok(Launch {
        kernel,
        initramfs,
        cmdline,
        vcpus: args.vcpus,
        memory_mib: args.memory,
        initdata,
        firmware: args.firmware.clone(),
    })
}

/// Runs `cloister measure`.
pub fn run(args: MeasureArgs) -> anyhow::Result<()> {
    let launch = launch_from(&args)?;
    let rv = match args.tee {
        TeeKind::Sim => {
            let mut b = SimBackend::new(HostOptions::from_env());
            if let Some(a) = &args.hash_algo {
                b.algo = realm_algo(a)?;
            }
            b.reference_values(&launch)?
        }
        TeeKind::Cca => {
            let dtb_path = args
                .dtb
                .as_ref()
                .context("--tee cca needs --dtb FILE: the DTB QEMU generates (qemu-system-aarch64 ... -machine dumpdtb=FILE)")?;
            let dtb = std::fs::read(dtb_path)
                .with_context(|| format!("reading DTB {}", dtb_path.display()))?;
            let mut b = CcaBackend::default();
            if let Some(a) = &args.hash_algo {
                b.measurement_algorithm = realm_algo(a)?;
            }
            let params = cloister_measure::cca::RealmParams {
                flags: Default::default(),
                s2sz: cloister_measure::cca::vmm::QemuVirt::DEFAULT_S2SZ,
                sve_vl: 0,
                num_bps: 0,
                num_wps: 0,
                pmu_num_ctrs: 0,
                hash_algo: b.measurement_algorithm,
            };
            b.reference_values(
                &launch,
                &CcaMeasureInputs {
                    dtb,
                    params,
                    measurement_log: false,
                },
            )?
        }
        TeeKind::Snp => cloister_tee::host::snp::SnpBackend::default()
            .reference_values(&launch, args.vcpu_type.as_deref().unwrap_or("EPYC-v4"))?,
        TeeKind::Tdx => {
            let b = cloister_tee::host::tdx::TdxBackend {
                qemu_version: args.qemu_version.as_deref().map(qemu_version).transpose()?,
                tdvf_edk2: args.tdvf_edk2,
                ..Default::default()
            };
            let log = match &args.event_log {
                Some(p) => Some(
                    std::fs::read(p)
                        .with_context(|| format!("reading event log {}", p.display()))?,
                ),
                None => None,
            };
            b.reference_values_with_event_log(&launch, log.as_deref())?
        }
        TeeKind::None => bail!("--tee none has no measurements: expected cca, snp, tdx or sim"),
    };
    for note in &rv.notes {
        eprintln!("note: {note}");
    }
    println!("{}", serde_json::to_string_pretty(&rv.to_json())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_version_is_major_minor() {
        assert_eq!(qemu_version("10.0").unwrap(), (10, 0));
        assert_eq!(qemu_version("10.2.1").unwrap(), (10, 2));
        let e = qemu_version("ten").unwrap_err().to_string();
        assert!(e.contains("expected MAJOR.MINOR"), "{e}");
    }
}
