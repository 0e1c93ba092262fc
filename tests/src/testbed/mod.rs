//! Real hosts for tests: build (once, cached) a Debian root filesystem, boot hosts from it with
//! systemd-nspawn, run commands inside them, tear everything down on drop.
//!
//! - [`rootfs`]: the cached root filesystem (debootstrap, keyed by its recipe).
//! - [`slot`]: per-host names and address ranges that two test processes never share.
//! - [`host`]: one booted host: exec, files, D-Bus address, teardown.
//! - [`fleet`]: several hosts booted together.
//! - [`binaries`]: the freshly built gatemend binaries, to bind-mount into hosts.
//! - [`http`]: a minimal HTTP/1.0 client for asserting what nginx answers.
//! - [`traffic`]: users' requests to a host every 25 ms, every answer kept.
//! - [`webhook`]: a webhook receiver on loopback: the pages a human would get.

pub mod backend;
pub mod binaries;
mod cgroup;
mod error;
pub mod fleet;
pub mod host;
pub mod http;
mod lock;
mod process;
pub mod rootfs;
pub mod slot;
pub mod traffic;
pub mod webhook;

pub use error::TestbedError;
pub use fleet::Fleet;
pub use host::{Host, HostSpec};

/// Fails with a clear message when the testbed cannot run here: not root, or a tool missing.
/// Never a silent skip: a test that needs the testbed and cannot have it fails.
pub fn preflight() -> Result<(), TestbedError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(TestbedError::NotRoot);
    }
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("ip", "iproute2"),
    ] {
        if process::which(tool).is_none() {
            return Err(TestbedError::MissingTool { tool, package });
        }
    }
    Ok(())
}
