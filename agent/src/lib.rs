//! The gatemend agent: one per host.
//!
//! Stages, each in its own folder (see ARCHITECTURE.md): `probe` reads the host's real state
//! (systemd over D-Bus, sockets, php-fpm pools).

pub mod act;
pub mod detect;
pub mod diagnose;
pub mod edit;
pub mod probe;

pub mod config;
pub mod link;
pub mod pipeline;

/// The wall clock in milliseconds since the Unix epoch: the time findings and results carry.
/// The I/O edges read it once and hand it to the pure stages.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
