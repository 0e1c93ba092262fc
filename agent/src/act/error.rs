//! What can go wrong while an action runs, with what an operator needs to act on it.
//!
//! A refusal (allow-list, precheck) is not an error: it is a [`super::Refusal`], an answer.
//! These are the failures of the agent's own machinery while doing or verifying.

use std::path::PathBuf;

use crate::probe::ProbeError;

/// A step of an action that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// Reading the host's state failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// A D-Bus call to systemd failed.
    #[error("D-Bus {call} failed")]
    Dbus {
        /// The call, e.g. `RestartUnit(php8.2-fpm.service, replace)`.
        call: String,
        #[source]
        source: zbus::Error,
    },
    /// systemd's signal stream ended before the job we wait for was removed.
    #[error("the JobRemoved stream ended before job {job} finished")]
    SignalStreamEnded { job: String },
    /// A program (`nginx -t`, `journalctl`) could not be started.
    #[error("cannot run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A system call on a path failed (`open`, `fchownat`, `fchmodat`).
    #[error("{call} {} failed", path.display())]
    Sys {
        call: &'static str,
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    /// A file could not be read (pid file, error log).
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pid file names a process that is not nginx (a stale pid file, a reused pid): no
    /// signal is sent to it.
    #[error("pid {pid} from {} is not nginx: {why}", pid_file.display())]
    NotNginx {
        pid: u32,
        pid_file: PathBuf,
        why: String,
    },
}
