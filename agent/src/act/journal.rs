//! The edit journal: what edit_config writes to the agent's state directory before it touches
//! a configuration file, so that an agent killed at any point finds, at its next start, what
//! it was doing and finishes it (`edit_config::recover`).
//!
//! Layout, one directory per unit an edit reloads (`STATE_DIR/edits/nginx.service/`):
//!
//! - `lock`: `flock`ed by the process applying an edit of that unit, from before the journal
//!   is written until after it is removed. Another process (the `act` command beside the
//!   running agent) is refused; recovery skips a unit whose lock a live process holds. The
//!   kernel drops the lock of a killed process, so a lock never outlives its holder.
//! - `KEY.json`: the entry ([`Entry`]), rewritten atomically at each stage.
//! - `KEY.backup`: the file's text before the edit. Kept here, never beside the edited file:
//!   `include conf.d/*.conf` would load a backup there.
//!
//! Every write here is durable when it returns: a temp file in the same directory, fsync,
//! rename, fsync of the directory. The temp file beside the edited file (the atomic write of
//! the configuration itself) is named in the entry before it is created, so recovery always
//! knows it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Where a pending edit stands. Recovery reads it with the file's hash to know what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The entry and the backup are written; the file is not touched yet.
    Pending,
    /// The new text may be in place (the rename is next or done); nothing verified it.
    Writing,
    /// Tested, reloaded and verified: only the cleanup is left.
    Verified,
    /// A rollback is restoring the backup: the file may hold either text, and the service
    /// may run either.
    Restoring,
}

/// How the unit is reloaded after a write or a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSpec {
    /// The unit, reloaded with `ReloadUnit(unit, "replace")` over D-Bus.
    pub unit: String,
    /// The configuration test that must pass before the reload: `[nginx, "-t"]`.
    pub test: Vec<String>,
}

/// One pending edit, as written before the file is touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The request's action id.
    pub action_id: String,
    /// The file written: the edited path with every link resolved.
    pub file: PathBuf,
    /// The temp file of the atomic write, in the file's directory (absent unless a write was
    /// cut short).
    pub temp: PathBuf,
    /// The text before the edit, in this directory.
    pub backup: PathBuf,
    pub sha256_before: String,
    pub sha256_after: String,
    /// The file's owner, group and permission bits, given back to each text written.
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub reload: ReloadSpec,
    pub stage: Stage,
}

/// A journal failure, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a journal entry", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// A directory's entries by key, each read or why it could not be.
pub type Entries = Vec<(String, Result<Entry, JournalError>)>;

/// The journal directory of one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitDir(pub PathBuf);

/// The lock of a unit's edits, held while it lives.
#[derive(Debug)]
pub struct UnitEditLock {
    _flock: Flock<File>,
}

/// The root of every unit's journal directory under the agent's state directory.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("edits")
}

impl UnitDir {
    /// `STATE_DIR/edits/UNIT` (a unit name holds no `/`: checked before it gets here).
    pub fn new(state_dir: &Path, unit: &str) -> Self {
        UnitDir(root(state_dir).join(unit))
    }

    pub fn entry_path(&self, key: &str) -> PathBuf {
        self.0.join(format!("{key}.json"))
    }

    pub fn backup_path(&self, key: &str) -> PathBuf {
        self.0.join(format!("{key}.backup"))
    }

    /// Creates the directory (mode 0700: a backup may hold secrets a config file holds).
    pub fn create(&self) -> Result<(), JournalError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
            .map_err(io("cannot create", &self.0))
    }

    /// Takes the unit's edit lock without waiting; `Ok(None)` when another live process holds
    /// it.
    pub fn try_lock(&self) -> Result<Option<UnitEditLock>, JournalError> {
        let path = self.0.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Some(UnitEditLock { _flock: flock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(JournalError::Io {
                what: "cannot flock",
                path,
                source: std::io::Error::from(errno),
            }),
        }
    }

    /// Every entry in the directory, with its key; temp files of the journal's own writes
    /// are not entries.
    pub fn entries(&self) -> Result<Entries, JournalError> {
        let mut out = Vec::new();
        for name in list(&self.0)? {
            if let Some(key) = name.strip_suffix(".json") {
                let path = self.0.join(&name);
                out.push((key.to_owned(), read_entry(&path)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Files of this directory that belong to no entry: journal temp files and backups whose
    /// entry is gone. Only called with the unit's lock held.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>, JournalError> {
        let names = list(&self.0)?;
        let keys: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".json"))
            .collect();
        Ok(names
            .iter()
            .filter(|name| {
                name.ends_with(".tmp")
                    || name
                        .strip_suffix(".backup")
                        .is_some_and(|key| !keys.contains(&key))
            })
            .map(|name| self.0.join(name))
            .collect())
    }

    /// Writes (or rewrites) an entry durably.
    pub fn write_entry(&self, key: &str, entry: &Entry) -> Result<(), JournalError> {
        let path = self.entry_path(key);
        let bytes = serde_json::to_vec_pretty(entry).map_err(|source| JournalError::Parse {
            path: path.clone(),
            source,
        })?;
        write_durable(&path, &self.0.join(format!(".{key}.json.tmp")), &bytes)
    }

    /// Removes the backup, then the entry (in that order: a backup never outlives its entry
    /// unnoticed), then syncs the directory.
    pub fn remove(&self, key: &str) -> Result<(), JournalError> {
        for path in [self.backup_path(key), self.entry_path(key)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(JournalError::Io {
                        what: "cannot remove",
                        path,
                        source,
                    });
                }
            }
        }
        sync_dir(&self.0)
    }
}

/// Every unit directory under `root`.
pub fn unit_dirs(root: &Path) -> Result<Vec<UnitDir>, JournalError> {
    match fs::read_dir(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(JournalError::Io {
            what: "cannot list",
            path: root.to_owned(),
            source,
        }),
        Ok(entries) => {
            let mut dirs: Vec<UnitDir> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| UnitDir(e.path()))
                .collect();
            dirs.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(dirs)
        }
    }
}

fn list(dir: &Path) -> Result<Vec<String>, JournalError> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(io("cannot list", dir))?,
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect())
}

fn read_entry(path: &Path) -> Result<Entry, JournalError> {
    let bytes = fs::read(path).map_err(io("cannot read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| JournalError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// fsync of a directory: makes the renames and removals in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot fsync the directory", dir))
}

/// Writes `bytes` to `path` durably and atomically (0600, the state directory's own files).
pub fn write_durable(path: &Path, temp: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let owner = FileOwner::of_self();
    write_atomic(path, temp, bytes, &owner)
}

/// Who owns a file and its permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileOwner {
    pub uid: u32,
    pub gid: u32,
    /// The permission bits (`0o644`), set-id and sticky bits included.
    pub mode: u32,
}

impl FileOwner {
    /// This process's user and group, mode 0600.
    fn of_self() -> Self {
        FileOwner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mode: 0o600,
        }
    }

    pub fn of(meta: &fs::Metadata) -> Self {
        FileOwner {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
        }
    }
}

/// Replaces `path` with `bytes` atomically, keeping `owner`: `temp` (same directory, created
/// exclusively, mode 0600 until its owner and mode are set) is written, given the owner,
/// group and mode, fsynced, renamed over `path`, and the directory fsynced. A reader sees the
/// old file or the new one, never a mix; a crash leaves at most `temp`, which the caller
/// named in its journal entry. On an error before the rename, `temp` is removed.
pub fn write_atomic(
    path: &Path,
    temp: &Path,
    bytes: &[u8],
    owner: &FileOwner,
) -> Result<(), JournalError> {
    // A temp file a crash left is ours (its name is the journal's): replace it.
    match fs::remove_file(temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(JournalError::Io {
                what: "cannot remove the old temp file",
                path: temp.to_owned(),
                source,
            });
        }
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(temp)
            .map_err(io("cannot create", temp))?;
        file.write_all(bytes).map_err(io("cannot write", temp))?;
        // Owner first: chown clears set-id bits, which the mode then sets again.
        std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))
            .map_err(io("cannot chown", temp))?;
        file.set_permissions(fs::Permissions::from_mode(owner.mode))
            .map_err(io("cannot chmod", temp))?;
        file.sync_all().map_err(io("cannot fsync", temp))?;
        fs::rename(temp, path).map_err(io("cannot rename over", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(temp);
    }
    result?;
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// Removes `path` if it exists; whether it did.
pub fn remove_if_present(path: &Path) -> Result<bool, JournalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(JournalError::Io {
            what: "cannot remove",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(dir: &Path) -> Entry {
        Entry {
            action_id: "web1/a1".into(),
            file: dir.join("site.conf"),
            temp: dir.join(".site.conf.gatemend-k.tmp"),
            backup: dir.join("k.backup"),
            sha256_before: "a".repeat(64),
            sha256_after: "b".repeat(64),
            uid: 0,
            gid: 0,
            mode: 0o644,
            reload: ReloadSpec {
                unit: "nginx.service".into(),
                test: vec!["/usr/sbin/nginx".into(), "-t".into()],
            },
            stage: Stage::Pending,
        }
    }

    #[test]
    fn entries_round_trip_and_leftovers_are_only_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = UnitDir::new(tmp.path(), "nginx.service");
        dir.create().unwrap();
        let mut e = entry(tmp.path());
        dir.write_entry("k", &e).unwrap();
        e.stage = Stage::Writing;
        dir.write_entry("k", &e).unwrap();
        fs::write(dir.backup_path("k"), "old").unwrap();
        fs::write(dir.backup_path("gone"), "orphan").unwrap();
        fs::write(dir.0.join(".x.json.tmp"), "{").unwrap();
        let entries = dir.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1.as_ref().unwrap(), &e);
        let mut left = dir.leftovers().unwrap();
        left.sort();
        assert_eq!(
            left,
            [dir.0.join(".x.json.tmp"), dir.backup_path("gone")],
            "the entry's own backup is not a leftover"
        );
        dir.remove("k").unwrap();
        assert!(dir.entries().unwrap().is_empty());
        assert!(!dir.backup_path("k").exists());
    }

    #[test]
    fn a_units_lock_is_exclusive_between_open_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = UnitDir::new(tmp.path(), "nginx.service");
        dir.create().unwrap();
        let held = dir.try_lock().unwrap();
        assert!(held.is_some());
        assert!(dir.try_lock().unwrap().is_none(), "held elsewhere");
        drop(held);
        assert!(dir.try_lock().unwrap().is_some());
    }

    #[test]
    fn an_atomic_write_keeps_the_mode_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("site.conf");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let owner = FileOwner::of(&fs::metadata(&path).unwrap());
        let temp = tmp.path().join(".site.conf.gatemend-k.tmp");
        fs::write(&temp, "a crash left this").unwrap();
        write_atomic(&path, &temp, b"new", &owner).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(FileOwner::of(&fs::metadata(&path).unwrap()), owner);
        assert!(!temp.exists());
        // A failure before the rename leaves the file and no temp.
        let missing = tmp.path().join("no-such-dir/site.conf");
        let temp = tmp.path().join("no-such-dir/.t.tmp");
        assert!(write_atomic(&missing, &temp, b"x", &owner).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }
}
