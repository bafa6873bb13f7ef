//! `cloister`: the command-line front end of the Cloister runtime, the
//! verifier and the key broker. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

mod cmd_assets;
mod cmd_attest;
mod cmd_bench;
mod cmd_check;
mod cmd_ctl;
mod cmd_evidence;
mod cmd_image;
mod cmd_kbs;
mod cmd_measure;
mod cmd_policy;
mod cmd_ps;
mod cmd_run;
mod cmd_sim;
mod cmd_verify;
// issue 9 (branch guest)
mod cmd_initdata;

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
    /// Key broker service: serve, administer, benchmark.
    Kbs(cmd_kbs::KbsArgs),
    /// Run the KBS attestation flow from the host (sim or test attester) and print a resource.
    Attest(cmd_attest::AttestArgs),
    /// Verify and appraise attestation evidence; print the EAR claims as JSON.
    Verify(cmd_verify::VerifyArgs),
    /// Build or inspect the guest assets (kernel, initramfs, manifest).
    Assets(cmd_assets::AssetsArgs),
    /// Check this host: QEMU, accelerator, assets, agent channel, runtime dir.
    Check(cmd_check::CheckArgs),
    /// Run a command in a new sandbox and tear it down when it exits.
    Run(cmd_run::RunArgs),
    /// List running sandboxes.
    Ps(cmd_ps::PsArgs),
    /// Run a command in the container of a sandbox started with `run --detach`.
    Exec(cmd_ctl::ExecArgs),
    /// Signal the container of a sandbox started with `run --detach`.
    Kill(cmd_ctl::KillArgs),
    /// Remove sandboxes started with `run --detach` (stops their VMs).
    Rm(cmd_ctl::RmArgs),
    /// Predict the reference values a verifier expects for a launch.
    Measure(cmd_measure::MeasureArgs),
    /// Boot a guest, fetch its attestation evidence for a report_data, shut it down.
    Evidence(cmd_evidence::EvidenceArgs),
    /// Sim backend host state (trust anchor).
    Sim(cmd_sim::SimArgs),
    /// Benchmarks (sandbox boot).
    Bench(cmd_bench::BenchArgs),
    /// Image tools: encrypt an OCI layout for in-guest decryption.
    Image(cmd_image::ImageArgs),
    /// Agent policies: generate one from Kubernetes YAML.
    Policy(cmd_policy::PolicyArgs),
    /// Write initdata documents (the guest's measured settings).
    Initdata(cmd_initdata::InitdataArgs),
    /// The host end of a guest network forward (QEMU runs it per connection).
    #[command(name = "net-relay", hide = true)]
    NetRelay {
        /// The endpoint, HOST:PORT.
        target: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Kbs(a) => cmd_kbs::run(a),
        Command::Attest(a) => cmd_attest::run(a),
        Command::Verify(a) => cmd_verify::run(a),
        Command::Assets(a) => cmd_assets::run(a),
        Command::Check(a) => cmd_check::run(a),
        Command::Run(a) => cmd_run::run(a),
        Command::Ps(a) => cmd_ps::run(a),
        Command::Exec(a) => cmd_ctl::exec(a),
        Command::Kill(a) => cmd_ctl::kill(a),
        Command::Rm(a) => cmd_ctl::rm(a),
        Command::Measure(a) => cmd_measure::run(a),
        Command::Evidence(a) => cmd_evidence::run(a),
        Command::Sim(a) => cmd_sim::run(a),
        Command::Bench(a) => cmd_bench::run(a),
        Command::Image(a) => cmd_image::run(a),
        Command::Policy(a) => cmd_policy::run(a),
        Command::Initdata(a) => cmd_initdata::run(a),
        // Silent: stdout and stderr are the guest's connection.
        Command::NetRelay { target } => {
            let ok = cloister_runtime::net::relay_stdio(&target).is_ok();
            std::process::exit(if ok { 0 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--tee` is a typed value: a wrong one is refused before anything
    /// runs, naming the values that command takes (`verify` has no `none`).
    #[test]
    fn tee_values_are_typed_and_listed_per_command() {
        let e = Cli::try_parse_from(["cloister", "run", "--tee", "sev", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[possible values: none, sim, cca, snp, tdx]"),
            "{e}"
        );
        let e = Cli::try_parse_from(["cloister", "verify", "--tee", "none", "--evidence", "x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[possible values: cca, snp, tdx, sim]"), "{e}");
        for tee in ["none", "sim", "cca", "snp", "tdx"] {
            assert!(
                Cli::try_parse_from([
                    "cloister", "run", "--rootfs", "/r", "--tee", tee, "--", "true"
                ])
                .is_ok(),
                "{tee}"
            );
        }
    }
}
