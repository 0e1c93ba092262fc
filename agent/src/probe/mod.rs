//! Probes: read the host's real state. Each probe is one file and owns one interface.

pub mod error;
pub mod http;
pub mod listeners;
pub mod memory;
pub mod nginx;
pub mod php_fpm;
pub mod resolv;
pub mod snapshot;
pub mod socket;
pub mod systemd;

pub use error::ProbeError;
