//! `cloister sim`: the sim backend's host-side state. `cloister sim
//! trust-anchor` prints the sim platform's trust anchor (the CPAK, marked
//! simulated) in the trust-anchor store format `cloister verify
//! --trust-anchors` and the KBS consume, creating the per-host platform key
//! on first use.

use std::path::PathBuf;

use anyhow::Context;
use cloister_tee::host::{sim::SimPlatform, HostOptions};

/// Arguments of `cloister sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SimCommand {
    /// Print the sim platform's trust anchor (JSON trust-anchor store).
    TrustAnchor {
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Runs `cloister sim`.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::TrustAnchor { output } => {
            let opts = HostOptions::from_env();
            let platform = SimPlatform::load_or_create(&opts.config_dir)?;
            let json = platform
                .trust_anchor_json()
                .map_err(|e| anyhow::anyhow!("encoding the trust anchor: {e}"))?;
            let text = format!("{}\n", serde_json::to_string_pretty(&json)?);
            match output {
                Some(p) => {
                    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?
                }
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}
