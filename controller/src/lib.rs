//! The gatemend controller: receives findings from the fleet, decides by YAML policy,
//! dispatches actions to agents and audits every step (see ARCHITECTURE.md).

pub mod approvals;
pub mod audit;
pub mod cli;
pub mod decide;
pub mod dispatch;
pub mod ingest;
pub mod pki;
pub mod policy;
pub mod web;
