//! What can go wrong while probing, with what an operator needs to act on it.

use std::path::PathBuf;

/// A probe that could not read the state it was asked for.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The D-Bus connection or a call on it failed.
    #[error("D-Bus {call} failed")]
    Dbus {
        /// The call, e.g. `GetUnit(php8.2-fpm.service)`.
        call: String,
        #[source]
        source: zbus::Error,
    },
    /// systemd's signal stream ended before the job waited for was removed.
    #[error("the JobRemoved stream ended before job {job} finished")]
    SignalStreamEnded {
        /// The job's object path.
        job: String,
    },
    /// A file the probe reads could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A program the probe runs (`nginx -T`) could not be started or waited for.
    #[error("cannot run {command}")]
    Spawn {
        /// The command line, e.g. `/usr/sbin/nginx -T`.
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A program the probe runs did not finish in time; it was killed.
    #[error("{command} did not finish within {after:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// How long it was given.
        after: std::time::Duration,
    },
    /// A directory the probe lists (`/proc`) could not be listed.
    #[error("cannot list {}", path.display())]
    List {
        /// The directory.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `lstat`/`stat` of a path failed for another reason than "not there".
    #[error("cannot stat {}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    /// A user could not be looked up in the host's user database.
    #[error("cannot look up user `{user}`: {why}")]
    User { user: String, why: String },
}
