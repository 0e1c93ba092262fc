//! The contract between the gatemend agent and controller.
//!
//! The generated gRPC code lives in [`v1`]; the snake_case ids of causes, root causes and
//! actions (the names used in logs, policies, the CLI and the UI) live in [`ids`]; how both
//! sides put an error on one line is [`error_chain`]. Detection logic never lives here.

#![allow(missing_debug_implementations)] // generated gRPC clients and servers

/// Generated messages and the `Link` service (from `gatemend/v1/link.proto`).
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("gatemend.v1");
}

pub mod ids;

pub use ids::{EDITABLE_DIRECTIVES, UnknownId};
pub use v1::{ActionKind, ActionStatus, Cause, ConfigKind, RootCause};

/// An error and its sources on one line, `a: b: c`, as logs, action outcomes and probe
/// evidence show them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_chain_joins_every_source() {
        let outer = Wrapped(std::io::Error::other("disk gone"));
        assert_eq!(super::error_chain(&outer), "wrapped: disk gone");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
