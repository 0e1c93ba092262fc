//! Errors of the decision domain: only the conversion of wire findings can fail; deciding
//! itself is total.

/// A wire `Finding` the engine cannot decide on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindingError {
    /// The cause is unspecified or a value this build does not know.
    #[error("finding `{id}` has no known cause (wire value {value})")]
    UnknownCause {
        /// The finding's id.
        id: String,
        /// The wire value.
        value: i32,
    },
    /// The finding names no host.
    #[error("finding `{0}` names no host")]
    NoHost(String),
}
