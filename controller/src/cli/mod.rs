//! The `gatemend` operator CLI's subcommands, one file each.

pub mod approvals;
pub mod audit;
pub mod pki;
pub mod policy;
pub mod tokens;
