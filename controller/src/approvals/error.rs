//! Why an approval could not be requested, read or decided.

/// An approval store failure or a refused decision.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("approvals: database error")]
    Db(#[from] sqlx::Error),
    #[error("approvals: creating the table")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("approvals: the stored finding of {id} is not valid JSON: {source}")]
    Finding {
        id: String,
        source: serde_json::Error,
    },
    #[error("no approval {0}")]
    NotFound(String),
    #[error("approval {id} expired at {expired_at}; it can no longer be decided")]
    Expired { id: String, expired_at: String },
    #[error("approval {id} was already {state} by {by}")]
    AlreadyDecided {
        id: String,
        state: String,
        by: String,
    },
    #[error("approval id {id} is already held by finding {incident} of host {host}")]
    Collision {
        id: String,
        host: String,
        incident: String,
    },
    #[error("a reason is required")]
    NoReason,
}
