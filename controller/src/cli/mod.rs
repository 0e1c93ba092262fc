//! The `gatemend` operator CLI's subcommands, one file each.

pub mod pki;
pub mod policy;
