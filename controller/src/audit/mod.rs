//! The audit log (issue 7): one append-only, hash-chained record per finding, decision,
//! approval, action step, verification, resolution, policy reload and host online/offline.
//!
//! # Store
//! SQLite by default (`sqlite:///var/lib/gatemend/audit.db`; WAL, `synchronous=FULL`, so an
//! append is on disk when [`Audit::append`] returns), PostgreSQL for `postgres://...` (several
//! controllers on one database, issue 9). One code path: sqlx's `Any` driver, with the SQL
//! dialect differences (how an append transaction begins and locks the chain head, how a
//! snapshot read begins) in the methods of [`Backend`] only. `Any` rather than a generic
//! `Database` trait bound because it keeps one set of SQL strings and one set of types (every
//! column is a BIGINT or TEXT, which `Any` carries unchanged), with no trait-bound plumbing.
//!
//! # Concurrent writers
//! Every append runs in one transaction that locks the one-row `audit_head` table (SQLite:
//! `BEGIN IMMEDIATE`; PostgreSQL: `SELECT ... FOR UPDATE`), reads the last seq and hash, inserts
//! the record at seq + 1 and moves the head. Writers in any number of tasks and processes
//! therefore extend one chain, with seqs 1, 2, 3 ... and no gaps. Within one process, appends go
//! through one writer task that commits whatever is queued at that moment in one such
//! transaction (group commit, `writer.rs`): concurrent appenders share an fsync, and each
//! `append` still returns only after its record is committed.
//!
//! # The hash
//! `hash = SHA-256(prev_hash || encoding)`, where `prev_hash` is the previous record's hash as 32
//! raw bytes (32 zero bytes for record 1) and `encoding` is the concatenation, in this order, of
//! `seq, at, kind, host, incident, actor, policy, policy_digest, body`, each encoded as:
//! - absent (`None`): the single byte `0x00`;
//! - present: `0x01`, then the length of the value in bytes as a 4-byte big-endian unsigned
//!   integer, then the value: `seq` and `at` as 8-byte big-endian two's complement integers
//!   (`at` in milliseconds since the Unix epoch), `kind` as its snake_case name, the other text
//!   fields as UTF-8, `body` as its canonical JSON text.
//!
//! Canonical JSON: no whitespace; object keys sorted by their UTF-8 bytes, at every depth;
//! strings escaped and numbers written as serde_json writes them. The stored `body` column is
//! exactly that text, so an external verifier can recompute every hash from an export (`gatemend
//! audit export --json` prints every column). Stored hashes are lowercase hex.
//!
//! # Verifying
//! [`Audit::verify`] streams the table in seq order and checks, per record, that its seq is the
//! next one, that its `prev_hash` is the previous record's hash and that its contents hash to its
//! `hash`; at the end, that the head names the last record. So an edited record, a deleted one
//! (anywhere, including the newest), and swapped seqs are each reported at the first seq that
//! does not match. What it cannot catch: someone with write access who rewrites every hash from
//! the edit onward and the head; anchoring the head elsewhere (a signed checkpoint) is later work.

mod error;
mod hash;
mod record;
mod store;
mod verify;
mod writer;

pub use error::AuditError;
pub use hash::{GENESIS_HEX, canonical_json};
pub use record::{Filter, Kind, NewRecord, Record, UnknownKind, now_ms};
pub(crate) use store::placeholders;
pub use store::{Audit, Backend};
pub use verify::{Broken, Verification};
