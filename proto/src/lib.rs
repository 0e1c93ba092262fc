//! The contract between the gatemend agent and controller.
//!
//! The generated gRPC code lives in [`v1`]; the snake_case ids of causes, root causes and
//! actions (the names used in logs, policies, the CLI and the UI) live in [`ids`]. Detection
//! logic never lives here.

#![allow(missing_debug_implementations)] // generated gRPC clients and servers

/// Generated messages and the `Link` service (from `gatemend/v1/link.proto`).
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("gatemend.v1");
}

pub mod ids;

pub use ids::UnknownId;
pub use v1::{ActionKind, ActionStatus, Cause, RootCause};
