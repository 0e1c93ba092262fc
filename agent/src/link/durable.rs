//! Crash-safe file writes for the link's on-disk state (the outbox and the action ledger).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::error::LinkError;

/// Writes `bytes` to `path` so that after a crash the file is either wholly there or absent:
/// written to `<path>.tmp`, fsync'd, renamed into place, and the directory fsync'd.
pub(crate) fn write_synced(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), LinkError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Maps an I/O error on `path` to the link's error.
pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> LinkError + '_ {
    move |source| LinkError::Io {
        path: path.to_owned(),
        source,
    }
}
