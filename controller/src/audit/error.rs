//! Why the audit log could not be opened, written or read. A broken chain is not an error: it is
//! `Verification::Broken`.

use std::path::PathBuf;
use std::sync::Arc;

use super::record::Kind;

/// An audit store failure. URLs are shown without their password.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The URL names neither SQLite nor PostgreSQL.
    #[error(
        "unsupported audit database URL {url}: expected sqlite:///path/to/audit.db or postgres://user@host/db"
    )]
    UnsupportedUrl {
        /// The URL given (password removed).
        url: String,
    },
    /// A command that only reads was pointed at a SQLite file that does not exist.
    #[error("no audit database at {path}")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Connecting, or setting up the connection (WAL, synchronous=FULL), failed.
    #[error("cannot open the audit database {url}")]
    Open {
        /// The URL (password removed).
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// Creating or upgrading the tables failed.
    #[error("cannot create or upgrade the audit tables in {url}")]
    Migrate {
        /// The URL (password removed).
        url: String,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The record was not appended (nothing of its group was written: the transaction rolled
    /// back). Shared: every append committed in the same group gets the same cause.
    #[error("cannot append the {kind} record to the audit log")]
    Append {
        /// The record's kind.
        kind: Kind,
        /// Why.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// The task that writes this process's appends has stopped (the tokio runtime that opened
    /// the log shut down); the record was not appended.
    #[error("cannot append the {kind} record: the audit writer task has stopped")]
    WriterGone {
        /// The record's kind.
        kind: Kind,
    },
    /// A query (list, get, verify) failed.
    #[error("cannot read the audit log ({what})")]
    Read {
        /// What was being read.
        what: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The head row is missing: the tables were not created by this code or were tampered with.
    #[error(
        "the audit log has no chain head row (audit_head): it was not created by gatemend or was tampered with"
    )]
    NoHead,
    /// A stored record cannot be decoded into a `Record` (run `gatemend audit verify`).
    #[error("audit record {seq} cannot be decoded: {why}")]
    Corrupt {
        /// The record.
        seq: i64,
        /// What is wrong with it.
        why: String,
    },
}
