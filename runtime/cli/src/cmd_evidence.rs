//! `cloister evidence`: boots a sandbox, asks its agent for attestation
//! evidence bound to a report_data (GetEvidence), writes the evidence to a
//! file and shuts the sandbox down. Operators use it to see what their
//! guest's evidence looks like; with `--tee sim` it is a real CCA token.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use cloister_runtime::{accel, qemu::Qemu, state, Sandbox, SandboxConfig};
use cloister_tee::host::{backend, HostOptions};
use cloister_tee::TeeKind;

/// Arguments of `cloister evidence`.
#[derive(Debug, clap::Args)]
pub struct EvidenceArgs {
    /// TEE to boot the guest in.
    #[arg(long, value_enum)]
    tee: TeeKind,
    /// Optional container rootfs to attach (not needed for evidence).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// 64 bytes as 128 hex digits (shorter values are zero-padded).
    #[arg(long, value_name = "HEX")]
    report_data: String,
    /// Where to write the evidence.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// vCPUs (must match `cloister measure --cpus`).
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Guest memory in MiB (must match `cloister measure --memory`).
    #[arg(long, value_name = "MiB", default_value_t = 512)]
    memory: u32,
    /// Guest firmware (SNP: an OVMF built from OvmfPkg/AmdSev; TDX: a
    /// TDVF); must match `cloister measure --firmware`.
    #[arg(long, value_name = "FILE")]
    firmware: Option<PathBuf>,
    /// Initdata document to launch with (its digest becomes the RPV,
    /// HOST_DATA or MRCONFIGID; must match `cloister measure --initdata`).
    #[arg(long, value_name = "FILE")]
    initdata: Option<PathBuf>,
    /// Seconds the guest agent may take to answer.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 90,
        env = "CLOISTER_AGENT_TIMEOUT"
    )]
    agent_timeout: u64,
}

/// Parses report_data: hex, at most 64 bytes, zero-padded (the one rule,
/// [`cloister_attestation::ReportData::from_hex`], that `cloister verify
/// --report-data` uses too).
pub fn parse_report_data(s: &str) -> anyhow::Result<[u8; 64]> {
    let rd = cloister_attestation::ReportData::from_hex(s).context("--report-data")?;
    Ok(*rd.as_bytes())
}

/// Runs `cloister evidence`.
pub fn run(args: EvidenceArgs) -> anyhow::Result<()> {
    if args.tee == TeeKind::None {
        bail!("--tee none produces no evidence: expected sim, cca, snp or tdx");
    }
    let report_data = parse_report_data(&args.report_data)?;
    let qemu = Qemu::find()?;
    let assets = cloister_firmware::Assets::locate(None)?;
    let backend = backend(args.tee, &HostOptions::from_env());
    let config = SandboxConfig {
        tee: args.tee,
        kernel: assets.kernel.clone(),
        initramfs: assets.initramfs.clone(),
        rootfs: args.rootfs.clone(),
        vcpus: args.cpus,
        memory_mib: args.memory,
        accel: accel::probe().accel,
        agent_timeout: Duration::from_secs(args.agent_timeout),
        extra_cmdline: Vec::new(),
        runtime_dir: state::runtime_dir()?,
        command: vec!["(evidence)".into()],
        channel: cloister_runtime::ChannelChoice::Auto,
        initdata: crate::cmd_run::read_initdata(args.initdata.as_deref())?,
        firmware: args.firmware.clone(),
        scratch_disk: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async move {
        let mut sandbox = Sandbox::start(config, &qemu, backend.as_ref())?;
        let got = async {
            // A TEE guest answers nothing but CreateSandbox first, and its
            // measured initdata must allow GetEvidence with host bytes.
            let client = sandbox.boot().await?;
            Ok::<_, anyhow::Error>(
                client
                    .get_evidence(report_data, Duration::from_secs(60))
                    .await?,
            )
        }
        .await;
        let tail = sandbox.console_tail(12);
        sandbox.shutdown().await;
        got.map_err(|e| {
            let e = format!("{e:#}");
            let hint = if e.contains("PERMISSION_DENIED") {
                "\nthe guest refused to sign host-chosen report_data: `cloister evidence` is a \
                 diagnostic for launches whose initdata allows it; pass --initdata FILE written by \
                 `cloister initdata new --allow-host-evidence`"
            } else {
                ""
            };
            anyhow::anyhow!("{e}{hint}\nlast console lines:\n{}", tail.join("\n"))
        })
    });
    rt.shutdown_background();
    let (tee, evidence) = result?;
    std::fs::write(&args.output, &evidence)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "wrote {} bytes of {tee} evidence to {}",
        evidence.len(),
        args.output.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_is_hex_up_to_64_bytes() {
        assert_eq!(parse_report_data("0a0b").unwrap()[..3], [0x0a, 0x0b, 0]);
        assert!(parse_report_data("zz").is_err());
        let e = format!("{:#}", parse_report_data(&"00".repeat(65)).unwrap_err());
        assert!(e.contains("--report-data") && e.contains("65"), "{e}");
    }
}
