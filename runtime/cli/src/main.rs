//! `cloister`: the command-line front end of the Cloister runtime, the
//! verifier and the key broker. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

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
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
