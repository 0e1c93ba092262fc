//! Why the dispatcher could not carry out a decision ([`Unfit`]: each becomes an escalation;
//! when the controller cannot act as the policy says, a human hears of it), or a whole batch
//! ([`BatchError`]: the database is lost; the batch is decided again when it is back).

use gatemend_proto::ActionKind;

/// An action that cannot be asked of the host for this finding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// restart_unit / start_unit need the unit diagnosis found.
    #[error("{kind} needs a unit, and diagnosis found none for upstream `{upstream}`")]
    NoUnit { kind: ActionKind, upstream: String },
    /// fix_socket_ownership needs a unix socket upstream.
    #[error("{kind} needs a unix socket upstream, got `{upstream}`")]
    NoSocket { kind: ActionKind, upstream: String },
    /// edit_config needs the edit diagnosis proposed.
    #[error(
        "{kind} needs the configuration edit diagnosis proposes, and finding {finding} carries none"
    )]
    NoEdit { kind: ActionKind, finding: String },
    /// The host's stream would not take it (offline, not allowed by its Hello, queue full).
    #[error("cannot send {kind}: {why}")]
    Unsent { kind: ActionKind, why: String },
    /// The wire has no such action.
    #[error("the policy names action {kind}, which no agent runs")]
    Unknown { kind: ActionKind },
}

/// Why a batch of decisions was not committed; it is decided again once the database answers.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    State(#[from] super::StateDbError),
    #[error("the audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
}
