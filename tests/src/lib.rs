//! The gatemend test support: a fleet of real Debian hosts (systemd, D-Bus, nginx, php-fpm)
//! booted with systemd-nspawn on this machine. See ../shared/TESTBED.md and README.md.
//!
//! ```no_run
//! use gatemend_tests::testbed::{Fleet, HostSpec};
//! let fleet = Fleet::boot(2, &HostSpec::default()).unwrap();
//! let web = &fleet.hosts()[0];
//! web.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
//! ```

/// A throwaway PostgreSQL server: the controller's own test support, shared rather than copied.
#[path = "../../controller/tests/audit_support/pg_cluster.rs"]
pub mod pg_cluster;
pub mod stack;
pub mod testbed;
