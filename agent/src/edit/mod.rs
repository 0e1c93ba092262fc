//! Edit: typed, reviewed changes of configuration files, computed purely from a file's text.
//!
//! An edit is never text to write. It is ([`NginxEdit`]) a file, the block path of a directive
//! as `nginx -T` shows it, one directive of the closed set [`EditableDirective`], its old value
//! and its new one; or ([`PoolEdit`]) a php-fpm pool file, a pool, one key of [`PoolKey`], old
//! and new. The new value is checked by the directive's type ([`value`]) before anything is
//! located; the directive is located through the probes' own parsers (nginx's tokens and tree
//! with their byte spans, the pool file's lines), never by searching the text; exactly the
//! value's bytes are replaced, or one directive is added to the block. The result carries the
//! new text, a unified diff for the operator, and the SHA-256 of the text before and after, so
//! the apply stage can refuse a file that changed since.
//!
//! Pure: no I/O, no clock. Reading the file, the backup, the atomic write, `nginx -t` and the
//! reload belong to the action that applies an edit.
//!
//! Here rather than under `probe/`: the editor reads no host state, it serves both diagnosis
//! (which proposes an edit) and the action (which applies it), and the nginx and pool editors
//! share the value types, the diff and the hash.

mod diff;
mod directive;
mod error;
mod nginx;
mod php_fpm;
pub mod value;

use std::path::Path;

use serde::Serialize;

pub use diff::{sha256_hex, unified};
pub use directive::{EditableDirective, PoolKey};
pub use error::EditError;
pub use nginx::{NginxEdit, apply_edit, apply_edits};
pub use php_fpm::{PoolEdit, apply_pool_edit};
pub use value::ValueKind;

/// An edit made to a file's text, not yet written anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EditResult {
    /// The whole new text of the file.
    pub new_text: String,
    /// `--- a/PATH` / `+++ b/PATH` and its hunk, what the operator approves.
    pub diff: String,
    /// SHA-256 (hex) of the text the edit was computed against.
    pub sha256_before: String,
    /// SHA-256 (hex) of the new text.
    pub sha256_after: String,
    /// The line of each edited directive or key in the new text, one per edit.
    pub lines: Vec<u32>,
}

impl EditResult {
    fn new(file: &Path, original: &str, new_text: String, lines: Vec<u32>) -> Self {
        EditResult {
            diff: unified(&file.to_string_lossy(), original, &new_text),
            sha256_before: sha256_hex(original),
            sha256_after: sha256_hex(&new_text),
            new_text,
            lines,
        }
    }
}

/// A requested value as an error message may show it: escaped, and cut at 120 characters.
fn printable(text: &str) -> String {
    let escaped: String = text.escape_debug().collect();
    match escaped.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", escaped.get(..at).unwrap_or_default()),
        None => escaped,
    }
}

/// How the file ends its lines: `\r\n` if its first line does, else `\n`.
fn line_end(text: &str) -> &'static str {
    match text.find('\n') {
        Some(at) if at > 0 && text.as_bytes().get(at - 1) == Some(&b'\r') => "\r\n",
        _ => "\n",
    }
}
