//! `cloister ps`: the running sandboxes (dead state dirs are pruned).

use cloister_runtime::state;

/// Arguments of `cloister ps`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Print JSON (one object per sandbox) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Lists sandboxes.
pub fn run(args: PsArgs) -> anyhow::Result<()> {
    let dir = state::runtime_dir()?;
    let (live, pruned) = state::list(&dir)?;
    for id in &pruned {
        eprintln!("cloister ps: removed the state of dead sandbox {id}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&live)?);
        return Ok(());
    }
    println!(
        "{:<12}  {:>8}  {:>8}  {:<4}  {:<3}  {:>4}  {:>6}  {:>6}  COMMAND",
        "SANDBOX", "PID", "QEMU", "TEE", "ACC", "CPUS", "MEM", "AGE"
    );
    let now = state::now_unix();
    for m in live {
        println!(
            "{:<12}  {:>8}  {:>8}  {:<4}  {:<3}  {:>4}  {:>5}M  {:>5}s  {}",
            m.id,
            m.runtime_pid,
            m.vmm_pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            m.tee,
            m.accel,
            m.vcpus,
            m.memory_mib,
            now.saturating_sub(m.created),
            m.command.join(" ")
        );
    }
    Ok(())
}
