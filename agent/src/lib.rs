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
