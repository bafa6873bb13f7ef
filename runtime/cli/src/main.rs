//! `cloister`: the command-line front end of the Cloister runtime, the
//! verifier and the key broker. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

mod cmd_assets;

#[derive(Debug, Parser)]
#[command(
    name = "cloister",
    version,
    about = "Confidential-computing sandbox runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build or inspect the guest assets (kernel, initramfs, manifest).
    Assets(cmd_assets::AssetsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Assets(a) => cmd_assets::run(a),
    }
}
