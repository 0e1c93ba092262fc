//! Exclusive file locks that serialise testbed work across threads and processes.

use std::fs::{self, File};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::TestbedError;

/// Blocks until this process holds an exclusive `flock` on `path` (created, with its folder,
/// when missing). Dropping the guard releases it; so does the holder's death.
pub(crate) fn exclusive(path: &Path) -> Result<Flock<File>, TestbedError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| TestbedError::Io {
            what: "cannot create",
            path: dir.to_owned(),
            source,
        })?;
    }
    let file = File::create(path).map_err(|source| TestbedError::Io {
        what: "cannot create",
        path: path.to_owned(),
        source,
    })?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| TestbedError::Io {
        what: "cannot lock",
        path: path.to_owned(),
        source: errno.into(),
    })
}
