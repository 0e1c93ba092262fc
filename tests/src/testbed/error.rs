//! Why the testbed could not do what a test asked, with what to do about it.

use std::path::PathBuf;

/// A testbed failure. Every variant says what is missing or what the host printed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// systemd-nspawn, network namespaces and bind mounts need root.
    #[error(
        "the testbed needs root (systemd-nspawn, veth links, bind mounts): run the tests as root"
    )]
    NotRoot,
    /// A program the testbed runs is not installed.
    #[error("`{tool}` not found: install the Debian package `{package}` (./test.sh installs it)")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A command the testbed ran failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote on stderr (and stdout when stderr was empty), trimmed.
        stderr: String,
    },
    /// A command could not be started at all.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A file or directory operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done: "cannot read", "cannot create", ...
        what: &'static str,
        /// The path.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A host did not finish booting in time.
    #[error("host {host} did not boot within {seconds} s ({state}); console log {}:\n{console_tail}", console.display())]
    BootTimeout {
        /// The host name.
        host: String,
        /// How long the testbed waited.
        seconds: u64,
        /// What `systemctl is-system-running` said last.
        state: String,
        /// Where the host's console output is.
        console: PathBuf,
        /// The last lines of it.
        console_tail: String,
    },
    /// The host booted but some unit failed (`systemctl is-system-running` = degraded).
    #[error("host {host} booted degraded (console log {}); failed units and their journal:\n{failed}", console.display())]
    BootDegraded {
        /// The host name.
        host: String,
        /// The failed units, each with the last lines of its journal.
        failed: String,
        /// Where the host's console output is.
        console: PathBuf,
    },
    /// systemd-nspawn exited while the host was booting.
    #[error("systemd-nspawn for host {host} exited ({status}) while booting; console log {}:\n{console_tail}", console.display())]
    BootFailed {
        /// The host name.
        host: String,
        /// Its exit status.
        status: String,
        /// Where the host's console output is.
        console: PathBuf,
        /// The last lines of it.
        console_tail: String,
    },
    /// A workspace binary the test needs was not built.
    #[error("`{name}` is not built next to {}: run `cargo build --workspace --bins` first (./test.sh does)", near.display())]
    BinaryNotBuilt {
        /// The binary.
        name: String,
        /// The program that looked for it.
        near: PathBuf,
    },
    /// Every host slot is taken by other running tests.
    #[error("all {0} testbed host slots are in use (see /run/gatemend-testbed/slots)")]
    NoFreeSlot(u16),
}
