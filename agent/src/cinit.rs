//! A minimal init for containers with their own PID namespace.
//!
//! The first process of a PID namespace ignores every signal it has no
//! handler for (the kernel protects namespace inits), so SIGTERM to a plain
//! `sleep` as container init would do nothing. Like `docker run --init`, the
//! agent therefore runs the command under itself: the agent binary is
//! bind-mounted read-only at [`CINIT_PATH`] in the container and started as
//! `CINIT_PATH --container-init -- CMD ARGS...`. It spawns CMD, forwards the
//! usual termination signals to it, reaps orphans, and exits with CMD's
//! status (128 + signal if CMD was killed).

use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Where the agent binary appears inside the container.
pub const CINIT_PATH: &str = "/.cloister-init";
/// The argument that selects this mode.
pub const CINIT_ARG: &str = "--container-init";

const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The container-init argv for `args`.
pub fn wrap(args: &[String]) -> Vec<String> {
    let mut v = vec![
        CINIT_PATH.to_string(),
        CINIT_ARG.to_string(),
        "--".to_string(),
    ];
    v.extend(args.iter().cloned());
    v
}

/// The command of a container-init argv (after `--`), if `argv` is one.
pub fn command_of(argv: &[String]) -> Option<&[String]> {
    match argv {
        [_, mode, dashes, rest @ ..] if mode == CINIT_ARG && dashes == "--" && !rest.is_empty() => {
            Some(rest)
        }
        _ => None,
    }
}

/// Runs `cmd` as described above and returns the exit status to exit with.
pub fn run(cmd: &[String]) -> i32 {
    let mut set = SigSet::empty();
    for s in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        set.add(*s);
        if let Err(e) = crate::sys::install_recording_handler(*s) {
            eprintln!("cloister-init: handler for {s}: {}", e.desc());
            return 126;
        }
    }
    // Spawn before blocking: the child must start with an empty mask.
    // (Caught signals revert to their default action on exec.)
    let child = match Command::new(&cmd[0]).args(&cmd[1..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cloister-init: {}: {e}", cmd[0]);
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let child_pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("cloister-init: blocking signals: {}", e.desc());
        return 126;
    }
    // Signals that arrived before the mask took effect were recorded.
    let mut pending: Vec<Signal> = crate::sys::take_recorded();
    pending.push(Signal::SIGCHLD);
    loop {
        for sig in pending.drain(..) {
            if sig != Signal::SIGCHLD {
                let _ = kill(child_pid, sig);
                continue;
            }
            if let Some(status) = reap(child_pid) {
                return status;
            }
        }
        match set.wait() {
            Ok(s) => pending.push(s),
            Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("cloister-init: sigwait: {}", e.desc());
                return 126;
            }
        }
    }
}

/// Reaps every ended child; the status of `child` once it has ended.
fn reap(child: Pid) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Some(code),
            Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => return Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_unwrap() {
        let args = vec!["sleep".to_string(), "30".to_string()];
        let w = wrap(&args);
        assert_eq!(w[0], CINIT_PATH);
        assert_eq!(command_of(&w), Some(&args[..]));
        assert_eq!(command_of(&args), None);
        assert_eq!(
            command_of(&[CINIT_PATH.into(), CINIT_ARG.into(), "--".into()]),
            None
        );
    }
}
