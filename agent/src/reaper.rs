//! The one place that reaps children. As PID 1 the agent inherits every
//! orphan; it must reap them all, yet never lose the exit status of a
//! process someone waits for. So all reaping happens here: on SIGCHLD,
//! `waitpid(-1, WNOHANG)` until nothing is left, and each status is recorded
//! under its pid. A waiter registered for a pid gets its status even if the
//! process ended before it registered.
//!
//! libcontainer forks helper processes and waits for them itself; the agent
//! runs its API on a single-threaded runtime and calls libcontainer inline,
//! so the reaper never runs while libcontainer waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::watch;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// Shell convention: the code, or 128 + signal.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    /// The signal, 0 if the process exited.
    pub fn signal(self) -> u32 {
        match self {
            Exit::Code(_) => 0,
            Exit::Signal(s) => u32::try_from(s).unwrap_or(0),
        }
    }

    /// From a waitpid status; None for stops and continues.
    pub fn from_wait(ws: WaitStatus) -> Option<(Pid, Exit)> {
        match ws {
            WaitStatus::Exited(pid, code) => Some((pid, Exit::Code(code))),
            WaitStatus::Signaled(pid, sig, _) => Some((pid, Exit::Signal(sig as i32))),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    watchers: HashMap<i32, watch::Sender<Option<Exit>>>,
    /// Statuses nobody has asked for yet (kept a bounded time: orphans we
    /// never learn about are dropped when the map grows).
    unclaimed: HashMap<i32, Exit>,
}

/// The reaper. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

const MAX_UNCLAIMED: usize = 4096;

impl Reaper {
    /// Subscribes to the exit of `pid`.
    pub fn watch(&self, pid: i32) -> watch::Receiver<Option<Exit>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(exit) = inner.unclaimed.remove(&pid) {
            let (_tx, rx) = watch::channel(Some(exit));
            return rx;
        }
        inner
            .watchers
            .entry(pid)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Records one status.
    pub fn record(&self, pid: i32, exit: Exit) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = inner.watchers.remove(&pid) {
            let _ = tx.send(Some(exit));
        } else {
            if inner.unclaimed.len() >= MAX_UNCLAIMED {
                inner.unclaimed.clear();
            }
            inner.unclaimed.insert(pid, exit);
        }
    }

    /// Reaps every child that has ended.
    pub fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(ws) => {
                    if let Some((pid, exit)) = Exit::from_wait(ws) {
                        self.record(pid.as_raw(), exit);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::log!("waitpid: {}", e.desc());
                    return;
                }
            }
        }
    }

    /// Spawns the SIGCHLD loop on the current runtime.
    pub fn spawn(&self) -> std::io::Result<()> {
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let me = self.clone();
        tokio::spawn(async move {
            me.reap_all();
            while sig.recv().await.is_some() {
                me.reap_all();
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_mapping_follows_the_shell() {
        assert_eq!(Exit::Code(0).status(), 0);
        assert_eq!(Exit::Code(127).status(), 127);
        assert_eq!(Exit::Signal(15).status(), 143);
        assert_eq!(Exit::Signal(9).signal(), 9);
        assert_eq!(Exit::Code(3).signal(), 0);
        let ws = WaitStatus::Signaled(Pid::from_raw(5), nix::sys::signal::Signal::SIGTERM, false);
        assert_eq!(
            Exit::from_wait(ws),
            Some((Pid::from_raw(5), Exit::Signal(15)))
        );
        assert_eq!(Exit::from_wait(WaitStatus::StillAlive), None);
    }

    #[test]
    fn a_status_recorded_before_watching_is_not_lost() {
        let r = Reaper::default();
        r.record(42, Exit::Code(7));
        assert_eq!(*r.watch(42).borrow(), Some(Exit::Code(7)));
        let rx = r.watch(43);
        assert_eq!(*rx.borrow(), None);
        r.record(43, Exit::Signal(9));
        assert_eq!(*rx.borrow(), Some(Exit::Signal(9)));
    }

    #[tokio::test(flavor = "current_thread")]
    #[allow(clippy::zombie_processes)] // the reaper under test waits for it
    async fn reaps_a_real_child_and_delivers_its_status() {
        let r = Reaper::default();
        r.spawn().unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 5"])
            .spawn()
            .unwrap();
        let mut rx = r.watch(i32::try_from(child.id()).unwrap());
        let exit = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Some(e) = *rx.borrow_and_update() {
                    return e;
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
        assert_eq!(exit, Exit::Code(5));
    }
}
