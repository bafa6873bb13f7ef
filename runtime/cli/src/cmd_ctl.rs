//! `cloister exec`, `cloister kill` and `cloister rm`: drive a sandbox that
//! `cloister run --detach` started, through its owner's control socket
//! (`cloister_runtime::control`). Argument parsing and printing only.

use std::os::fd::AsRawFd;

use anyhow::Context;
use cloister_runtime::control::ControlClient;
use cloister_runtime::state;

/// Arguments of `cloister exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The sandbox id (as `cloister ps` and `cloister run --detach` print it).
    sandbox: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Arguments of `cloister kill`.
#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The sandbox id.
    sandbox: String,
    /// Signal number or name (TERM, KILL, INT, HUP, QUIT, USR1, USR2).
    #[arg(long, short, default_value = "TERM", value_parser = parse_signal)]
    signal: i32,
}

/// Arguments of `cloister rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The sandbox ids.
    #[arg(required = true)]
    sandboxes: Vec<String>,
}

/// Parses a signal number or name.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is out of range: expected 1-64"))
        };
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    Ok(match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        _ => {
            return Err(format!(
                "unknown signal {s:?}: expected a number or one of HUP, INT, QUIT, KILL, USR1, USR2, TERM"
            ))
        }
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `cloister exec`; exits with the command's exit code.
pub fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let dir = state::runtime_dir()?;
    let rt = runtime()?;
    let code = rt.block_on(async {
        let mut sigs = crate::cmd_run::forward_signals()?;
        let client = ControlClient::connect(&dir, &args.sandbox).await?;
        let stdio = [
            std::io::stdin().as_raw_fd(),
            std::io::stdout().as_raw_fd(),
            std::io::stderr().as_raw_fd(),
        ];
        Ok::<_, anyhow::Error>(client.exec(&args.command, stdio, &mut sigs).await?)
    })?;
    rt.shutdown_background();
    std::process::exit(code)
}

/// Runs `cloister kill`.
pub fn kill(args: KillArgs) -> anyhow::Result<()> {
    let dir = state::runtime_dir()?;
    runtime()?.block_on(async {
        let mut c = ControlClient::connect(&dir, &args.sandbox).await?;
        c.kill("", args.signal).await?;
        Ok(())
    })
}

/// Runs `cloister rm`: asks each sandbox's owner to remove it; a sandbox
/// whose owner is gone has its state dir pruned.
pub fn rm(args: RmArgs) -> anyhow::Result<()> {
    let dir = state::runtime_dir()?;
    let rt = runtime()?;
    let mut failed = 0;
    for id in &args.sandboxes {
        let r = rt.block_on(async {
            match ControlClient::connect(&dir, id).await {
                Ok(mut c) => c.remove().await.map_err(anyhow::Error::from),
                Err(e) => {
                    // No owner: prune what it left, if it is really dead.
                    let (live, pruned) = state::list(&dir)?;
                    if pruned.iter().any(|p| p == id) {
                        Ok(())
                    } else if live.iter().any(|m| &m.id == id) {
                        Err(anyhow::Error::from(e)
                            .context("the sandbox is alive but was not started with --detach"))
                    } else {
                        Err(anyhow::anyhow!(
                            "no sandbox {id} (`cloister ps` lists them)"
                        ))
                    }
                }
            }
        });
        match r {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("cloister rm: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} sandboxes not removed", args.sandboxes.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("int"), Ok(2));
        assert!(parse_signal("0").unwrap_err().contains("1-64"));
        assert!(parse_signal("WINCH").unwrap_err().contains("unknown"));
    }
}
