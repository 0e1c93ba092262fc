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
    /// A file the probe reads could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
