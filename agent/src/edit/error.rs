//! Why an edit is refused, with what an operator needs to see where and why.

use std::path::PathBuf;

/// An edit that was not made. Every refusal leaves the text as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The new value is not a value of the directive's type.
    #[error("{what}: refused value `{value}`: {why}")]
    Value {
        /// The directive or pool key.
        what: String,
        /// The value as requested (printable characters only; others escaped).
        value: String,
        why: String,
    },
    /// The directive does not belong in the block the edit names.
    #[error("{directive} cannot be edited in {path}: {why}")]
    Context {
        directive: String,
        /// The block path, as `http > server[_] > location[/]`.
        path: String,
        why: String,
    },
    /// A change of no edit at all.
    #[error("no edit was given")]
    NoEdits,
    /// Edits given together name different files.
    #[error("edits of one change must all be in {}, one is in {}", first.display(), other.display())]
    MixedFiles { first: PathBuf, other: PathBuf },
    /// A step of the block path names no block of the file.
    #[error("{}: no block {step} where the edit says {path}", file.display())]
    BlockNotFound {
        file: PathBuf,
        path: String,
        /// The first step that was not found.
        step: String,
    },
    /// A step of the block path names several blocks: which one is meant is not known.
    #[error("{}: {} blocks {step} where the edit says {path} (lines {}); the edit is ambiguous", file.display(), lines.len(), join(lines))]
    AmbiguousBlock {
        file: PathBuf,
        path: String,
        step: String,
        lines: Vec<u32>,
    },
    /// The directive (or pool key) the edit replaces is not in that block (or pool).
    #[error("{}: no {what} in {path}", file.display())]
    NotFound {
        file: PathBuf,
        what: String,
        path: String,
    },
    /// The directive (or key) is written more than once there: which one counts is not the
    /// editor's guess to make.
    #[error("{}: {what} is written {} times in {path} (lines {})", file.display(), lines.len(), join(lines))]
    Duplicate {
        file: PathBuf,
        what: String,
        path: String,
        lines: Vec<u32>,
    },
    /// The edit adds a directive (no old value) that is already there.
    #[error("{}:{line}: {what} is already `{current}` in {path}; an edit of it must name its old value", file.display())]
    AlreadySet {
        file: PathBuf,
        line: u32,
        what: String,
        path: String,
        current: String,
    },
    /// The file's value is not the one the edit was computed against.
    #[error("{}:{line}: stale edit: {what} is `{found}`, the edit was computed against `{expected}`", file.display())]
    Stale {
        file: PathBuf,
        line: u32,
        what: String,
        expected: String,
        found: String,
    },
    /// The new value is the value already there.
    #[error("{}:{line}: {what} is already `{value}`; nothing to change", file.display())]
    NoChange {
        file: PathBuf,
        line: u32,
        what: String,
        value: String,
    },
    /// The directive is written in a form the editor does not rewrite (a comment between
    /// its values, a block left open); a person edits those.
    #[error("{}:{line}: {why}", file.display())]
    Unsupported {
        file: PathBuf,
        line: u32,
        why: String,
    },
    /// The pool section the edit names is not in the file.
    #[error("{}: no pool [{pool}]", file.display())]
    PoolNotFound { file: PathBuf, pool: String },
    /// The pool section is written more than once.
    #[error("{}: pool [{pool}] is opened {} times (lines {})", file.display(), lines.len(), join(lines))]
    PoolAmbiguous {
        file: PathBuf,
        pool: String,
        lines: Vec<u32>,
    },
    /// The edited text, parsed again, is not the original with exactly this change: the edit
    /// is not made. Never expected; it guards the editor itself.
    #[error("{}: the edited text fails the editor's own check: {why}", file.display())]
    SelfCheck { file: PathBuf, why: String },
}

fn join(lines: &[u32]) -> String {
    lines
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
