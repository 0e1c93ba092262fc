//! The workspace's freshly built binaries, to bind-mount into hosts.

use std::path::PathBuf;

use super::TestbedError;

/// Where the binaries are mounted inside a host.
pub const HOST_BIN_DIR: &str = "/opt/gatemend/bin";

/// The agent inside a host booted with [`super::HostSpec::with_agent`].
pub const AGENT_INSIDE: &str = "/opt/gatemend/bin/gatemend-agent";

/// The path of a workspace binary (`gatemend-agent`, `gatemend-controller`, `gatemend`) built
/// by the same `cargo build` as the running program: beside it (a binary) or one level up
/// (a test, which runs from `target/<profile>/deps`).
pub fn path(name: &str) -> Result<PathBuf, TestbedError> {
    let exe = std::env::current_exe().map_err(|source| TestbedError::Io {
        what: "cannot find the running program",
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| TestbedError::BinaryNotBuilt {
            name: name.to_owned(),
            near: exe,
        })
}
