//! The persisted record of the actions this agent was asked to run, so an ActionRequest
//! delivered twice (after a reconnect, a controller restart, a retry) runs once.
//!
//! Per action id, named by the SHA-256 of the id in hex (64 characters, whatever the id: an id
//! carries the host name, the upstream and the policy, and a long EC2 host name made the old
//! `hex(id)` names longer than the 255 bytes a file name may have):
//! - `<sha256>.started`: the id itself, synced before the action runs;
//! - `<sha256>.result`: its first result (an encoded ActionResult, which names the id too).
//!
//! Opening the ledger rebuilds the map from what the files hold; a file whose content does not
//! hash to its name (damaged, or put there by something else) is skipped and logged. Files of
//! the earlier layout (`hex(id).started`, empty, and `hex(id).result`) are still read.
//!
//! A request whose action started but never finished (the agent died meanwhile) is not run
//! again either.
//!
//! Entries older than [`RETENTION`] are pruned, at open and then at most once an hour (see
//! [`Ledger::prune_if_due`]). Why age and not a count: the ledger must remember an id as long
//! as a controller may still send it again, and that is bounded in time, not in number: a
//! controller re-sends an action only while its chain is in flight, and gives a chain up a
//! minute after its deadline (at most `actions.max_deadline_ms`, 10 minutes by default). A week
//! is far beyond that, and still bounds the directory to a week of actions.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gatemend_proto::v1::ActionResult;
use prost::Message;
use sha2::{Digest, Sha256};

use super::durable::{io, write_synced};
use super::error::LinkError;

/// How long an action id is remembered.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often [`Ledger::prune_if_due`] looks for old entries.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the ledger knows of one action id.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Never asked before (or asked longer ago than [`RETENTION`]).
    New,
    /// Started and not finished: running now, or the agent died while it ran.
    Started,
    /// Finished with this (first) result.
    Done(ActionResult),
}

/// One remembered action id.
#[derive(Debug, Clone)]
struct Entry {
    result: Option<ActionResult>,
    /// When it was last written (the files' newest mtime after a restart).
    at: SystemTime,
    /// Its files, whichever layout wrote them: what pruning removes.
    files: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    known: HashMap<String, Entry>,
    last_prune: SystemTime,
    /// Files skipped at open because they did not decode or did not match their name.
    skipped: u64,
}

impl Ledger {
    /// Opens (creating) `dir`, rebuilds the map from its files and prunes entries older than
    /// [`RETENTION`] at `now`.
    pub fn open(dir: &Path, now: SystemTime) -> Result<Self, LinkError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut ledger = Self {
            dir: dir.to_owned(),
            known: HashMap::new(),
            last_prune: now,
            skipped: 0,
        };
        for item in fs::read_dir(dir).map_err(io(dir))? {
            let path = item.map_err(io(dir))?.path();
            ledger.load(&path)?;
        }
        ledger.prune(now);
        Ok(ledger)
    }

    /// Reads one file of the directory into the map.
    fn load(&mut self, path: &Path) -> Result<(), LinkError> {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        if name.ends_with(".tmp") {
            // A write a crash interrupted before its rename: never complete, never trusted.
            return fs::remove_file(path).map_err(io(path));
        }
        let (stem, is_result) = if let Some(stem) = name.strip_suffix(".started") {
            (stem, false)
        } else if let Some(stem) = name.strip_suffix(".result") {
            (stem, true)
        } else {
            return Ok(());
        };
        let bytes = fs::read(path).map_err(io(path))?;
        let at = fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (id, result) = match read_entry(stem, is_result, bytes) {
            Ok(read) => read,
            Err(why) => {
                self.skip(path, &why);
                return Ok(());
            }
        };
        let entry = self.known.entry(id).or_insert_with(|| Entry {
            result: None,
            at,
            files: Vec::new(),
        });
        entry.at = entry.at.max(at);
        entry.files.push(path.to_owned());
        if result.is_some() {
            entry.result = result;
        }
        Ok(())
    }

    fn skip(&mut self, path: &Path, why: &str) {
        self.skipped += 1;
        tracing::warn!(path = %path.display(), why = %why, "Skipped a file of the action ledger.");
    }

    /// How many files opening the ledger skipped (damaged, or not matching their name).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// How many action ids the ledger remembers.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    pub fn seen(&self, action_id: &str) -> Seen {
        match self.known.get(action_id) {
            None => Seen::New,
            Some(Entry { result: None, .. }) => Seen::Started,
            Some(Entry {
                result: Some(result),
                ..
            }) => Seen::Done(result.clone()),
        }
    }

    /// Durably notes that the action is about to run.
    pub fn start(&mut self, action_id: &str) -> Result<(), LinkError> {
        let path = self.path(action_id, "started");
        write_synced(&self.dir, &path, action_id.as_bytes())?;
        let entry = self
            .known
            .entry(action_id.to_owned())
            .or_insert_with(|| Entry {
                result: None,
                at: SystemTime::now(),
                files: Vec::new(),
            });
        entry.at = SystemTime::now();
        if !entry.files.contains(&path) {
            entry.files.push(path);
        }
        Ok(())
    }

    /// Durably keeps the action's first result; later results for the id are ignored.
    ///
    /// The result is remembered in memory even when writing it fails, so this process still
    /// answers a re-delivered request with it; after a restart such an action reads as
    /// started and is not run again either.
    pub fn finish(&mut self, result: &ActionResult) -> Result<(), LinkError> {
        let path = self.path(&result.action_id, "result");
        let entry = self
            .known
            .entry(result.action_id.clone())
            .or_insert_with(|| Entry {
                result: None,
                at: SystemTime::now(),
                files: Vec::new(),
            });
        if entry.result.is_some() {
            return Ok(());
        }
        entry.result = Some(result.clone());
        entry.at = SystemTime::now();
        if !entry.files.contains(&path) {
            entry.files.push(path.clone());
        }
        write_synced(&self.dir, &path, &result.encode_to_vec())
    }

    /// Prunes when the last prune was [`PRUNE_EVERY`] or longer before `now`; returns how many
    /// ids were forgotten.
    pub fn prune_if_due(&mut self, now: SystemTime) -> usize {
        match now.duration_since(self.last_prune) {
            Ok(since) if since >= PRUNE_EVERY => self.prune(now),
            // A clock set back: start counting again from now.
            Err(_) => {
                self.last_prune = now;
                0
            }
            Ok(_) => 0,
        }
    }

    /// Forgets (and deletes the files of) every id last written [`RETENTION`] or longer
    /// before `now`; returns how many. A file that cannot be removed is logged and its id
    /// forgotten all the same: it is read again, and pruned again, at the next start.
    pub fn prune(&mut self, now: SystemTime) -> usize {
        self.last_prune = now;
        let old: Vec<String> = self
            .known
            .iter()
            .filter(|(_, e)| now.duration_since(e.at).is_ok_and(|age| age >= RETENTION))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            let Some(entry) = self.known.remove(id) else {
                continue;
            };
            for file in entry.files {
                if let Err(e) = fs::remove_file(&file)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %file.display(), error = %e, "Cannot remove an old file of the action ledger.");
                }
            }
        }
        if !old.is_empty() {
            tracing::info!(dir = %self.dir.display(), pruned = old.len(), kept = self.known.len(), retention_days = RETENTION.as_secs() / 86_400, "Pruned old actions from the ledger.");
        }
        old.len()
    }

    fn path(&self, action_id: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", file_stem(action_id)))
    }
}

/// The id (and result) one file holds, checked against its name; why not, to skip it.
fn read_entry(
    stem: &str,
    is_result: bool,
    bytes: Vec<u8>,
) -> Result<(String, Option<ActionResult>), String> {
    let (id, result) = if is_result {
        let result = ActionResult::decode(bytes.as_slice())
            .map_err(|e| format!("it does not decode: {e}"))?;
        (result.action_id.clone(), Some(result))
    } else if bytes.is_empty() {
        // The earlier layout: the id is the hex of the name, the file is empty.
        let id = unhex(stem).ok_or("empty, and its name is not a hex id")?;
        (id, None)
    } else {
        let id = String::from_utf8(bytes).map_err(|_| "its content is not an action id")?;
        (id, None)
    };
    if stem != file_stem(&id) && stem != hex(&id) {
        return Err(format!(
            "it holds action `{id}`, whose file name is {}",
            file_stem(&id)
        ));
    }
    Ok((id, result))
}

/// The file name of an action id without its suffix: the SHA-256 of the id, in hex. Always 64
/// characters, safe on any file system, whatever the id holds (`/`, `..`, any length).
pub fn file_stem(action_id: &str) -> String {
    hex_bytes(&Sha256::digest(action_id.as_bytes()))
}

/// The earlier layout's stem: the id's bytes in hex.
fn hex(id: &str) -> String {
    hex_bytes(id.as_bytes())
}

fn hex_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn result(id: &str, message: &str) -> ActionResult {
        ActionResult {
            action_id: id.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn started_and_finished_actions_are_remembered_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), now()).unwrap();
        assert_eq!(ledger.seen("../a/1"), Seen::New);
        ledger.start("../a/1").unwrap();
        ledger.start("b").unwrap();
        let first = result("../a/1", "first");
        ledger.finish(&first).unwrap();
        ledger.finish(&result("../a/1", "second")).unwrap();
        drop(ledger);

        let ledger = Ledger::open(dir.path(), now()).unwrap();
        assert_eq!(ledger.seen("../a/1"), Seen::Done(first));
        assert_eq!(ledger.seen("b"), Seen::Started);
        assert_eq!(ledger.seen("c"), Seen::New);
        assert_eq!(ledger.skipped(), 0);
    }

    #[test]
    fn a_300_byte_action_id_round_trips_under_a_bounded_file_name() {
        // What the old `hex(id).started` could not write: 608 bytes, ENAMETOOLONG.
        let host = format!("ip-10-0-1-23.eu-west-1.compute.internal-{}", "x".repeat(23));
        let mut id = format!(
            "{host}/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock#1764000000@1/restart-when-service-down/0"
        );
        while id.len() < 300 {
            id.push('9');
        }
        assert_eq!(id.len(), 300);
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), now()).unwrap();
        ledger.start(&id).unwrap();
        let done = result(&id, "restarted");
        ledger.finish(&done).unwrap();
        for name in names(dir.path()) {
            assert!(name.len() <= 72, "{name}");
        }
        assert_eq!(
            fs::read_to_string(dir.path().join(format!("{}.started", file_stem(&id)))).unwrap(),
            id,
            "the id is kept inside the file"
        );
        drop(ledger);

        let ledger = Ledger::open(dir.path(), now()).unwrap();
        assert_eq!(ledger.seen(&id), Seen::Done(done));
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn files_of_the_earlier_hex_layout_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = result("web1/x#1@1/p/0", "old layout");
        fs::write(
            dir.path()
                .join(format!("{}.started", hex("web1/x#1@1/p/0"))),
            b"",
        )
        .unwrap();
        fs::write(
            dir.path().join(format!("{}.result", hex("web1/x#1@1/p/0"))),
            old.encode_to_vec(),
        )
        .unwrap();
        fs::write(dir.path().join(format!("{}.started", hex("web1/y"))), b"").unwrap();
        let mut ledger = Ledger::open(dir.path(), now()).unwrap();
        assert_eq!(ledger.seen("web1/x#1@1/p/0"), Seen::Done(old));
        assert_eq!(ledger.seen("web1/y"), Seen::Started);
        // Pruning removes the files of both layouts.
        assert_eq!(ledger.prune(now() + RETENTION + Duration::from_secs(1)), 2);
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_file_that_does_not_match_its_name_or_does_not_decode_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // A result filed under another id's name, a damaged result, a half-written temp file.
        fs::write(
            dir.path().join(format!("{}.result", file_stem("a"))),
            result("b", "moved").encode_to_vec(),
        )
        .unwrap();
        fs::write(
            dir.path().join(format!("{}.result", file_stem("c"))),
            b"\xff\xff\xff",
        )
        .unwrap();
        fs::write(dir.path().join(format!("{}.started", file_stem("d"))), b"e").unwrap();
        fs::write(dir.path().join(format!("{}.tmp", file_stem("f"))), b"half").unwrap();
        let ledger = Ledger::open(dir.path(), now()).unwrap();
        assert_eq!(ledger.skipped(), 3);
        for id in ["a", "b", "c", "d", "e"] {
            assert_eq!(ledger.seen(id), Seen::New, "{id}");
        }
        assert!(!dir.path().join(format!("{}.tmp", file_stem("f"))).exists());
    }

    #[test]
    fn entries_older_than_the_retention_are_pruned_at_open_and_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = now();
        let mut ledger = Ledger::open(dir.path(), t0).unwrap();
        ledger.start("old").unwrap();
        ledger.finish(&result("old", "done")).unwrap();
        assert_eq!(
            ledger.prune_if_due(t0 + Duration::from_secs(60)),
            0,
            "not due"
        );
        // A day later: due, but nothing is a week old.
        assert_eq!(ledger.prune_if_due(t0 + Duration::from_secs(86_400)), 0);
        assert!(matches!(ledger.seen("old"), Seen::Done(_)));
        let week = t0 + RETENTION + Duration::from_secs(60);
        assert_eq!(ledger.prune_if_due(week), 1);
        assert_eq!(ledger.seen("old"), Seen::New);
        assert!(names(dir.path()).is_empty());

        // At open: a file last written more than a week before `now` is gone.
        ledger.start("older").unwrap();
        drop(ledger);
        let ledger = Ledger::open(dir.path(), week + RETENTION).unwrap();
        assert_eq!(ledger.seen("older"), Seen::New);
        assert!(names(dir.path()).is_empty());
    }
}
