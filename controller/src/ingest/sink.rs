//! Where ingest stores what agents send before it acks it.
//!
//! The audit log (SQLite, hash-chained) will implement [`FindingSink`]; until then the
//! controller has an in-memory sink (tests, load runs) and an append-only JSON-lines file.
//! The sink owns deduplication: only the durable store knows, after a controller restart,
//! which (host, id, revision) it already holds. The host is the one the stream's certificate
//! proved, so one agent's ids can never shadow another's. What a sink remembers for that is
//! bounded ([`Seen`]): past its capacity the oldest keys are forgotten (counted), so a resend
//! older than that many records would be stored again, never lost.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use gatemend_proto::v1::{ActionResult, Finding};
use gatemend_proto::{ActionStatus, Cause, RootCause};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::error::SinkError;

/// One message worth keeping, with the host whose authenticated stream delivered it.
#[derive(Debug, Clone, PartialEq)]
// Lives for one message's store; see `Ingested` for why the finding is not boxed.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Finding { host: String, finding: Finding },
    ActionResult { host: String, result: ActionResult },
}

impl Record {
    /// The identity a resend repeats: (kind, host, id, revision).
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Finding { host, finding } => RecordKey {
                kind: RecordKind::Finding,
                host: host.clone(),
                id: finding.id.clone(),
                revision: finding.revision,
            },
            Record::ActionResult { host, result } => RecordKey {
                kind: RecordKind::ActionResult,
                host: host.clone(),
                id: result.action_id.clone(),
                revision: 0,
            },
        }
    }
}

/// Which kind of message a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Finding,
    ActionResult,
}

/// What deduplication compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub kind: RecordKind,
    /// The authenticated host of the stream that delivered it.
    pub host: String,
    pub id: String,
    pub revision: u64,
}

/// Keys a sink remembers by default: a day of a busy fleet's findings, in a few hundred MiB
/// at most.
pub const SEEN_CAPACITY: usize = 1_000_000;

/// The keys a sink has stored, at most `capacity` of them: the oldest are forgotten first.
#[derive(Debug)]
pub struct Seen {
    keys: HashSet<RecordKey>,
    order: VecDeque<RecordKey>,
    capacity: usize,
    forgotten: u64,
}

impl Seen {
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            forgotten: 0,
        }
    }

    pub fn contains(&self, key: &RecordKey) -> bool {
        self.keys.contains(key)
    }

    /// Remembers `key`; false when it was already there.
    pub fn insert(&mut self, key: RecordKey) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        while self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
                self.forgotten += 1;
                if self.forgotten.is_power_of_two() {
                    tracing::warn!(
                        capacity = self.capacity,
                        forgotten = self.forgotten,
                        "The findings store forgot its oldest keys; a resend that old would be stored again."
                    );
                }
            }
        }
        self.keys.insert(key.clone());
        self.order.push_back(key);
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Keys forgotten to stay within the capacity.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

/// Whether a stored record was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// First time this (id, revision) was seen; it is now durable.
    New,
    /// Already held: a resend after a reconnect or restart.
    Duplicate,
}

/// A durable store for findings and action results.
///
/// When `store` returns `Ok`, the record survives a crash of the controller: ingest acks
/// right after, and the agent deletes its copy.
pub trait FindingSink: Send + Sync + 'static {
    fn store<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<Stored, SinkError>>;
}

/// Dedups in memory, not durable: the controller without `--findings-log` (the audit log,
/// when kept, holds the findings), tests and load runs. It keeps the records themselves only
/// when made with [`MemorySink::recording`].
#[derive(Debug)]
pub struct MemorySink {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    seen: Seen,
    records: Option<Vec<Record>>,
}

impl Default for MemorySink {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySink {
    /// Dedups the last [`SEEN_CAPACITY`] keys; keeps no records.
    pub fn new() -> Self {
        Self::with_capacity(SEEN_CAPACITY, false)
    }

    /// Also keeps every new record, for [`MemorySink::records`] (tests).
    pub fn recording() -> Self {
        Self::with_capacity(SEEN_CAPACITY, true)
    }

    pub fn with_capacity(capacity: usize, recording: bool) -> Self {
        Self {
            inner: Mutex::new(MemoryInner {
                seen: Seen::new(capacity),
                records: recording.then(Vec::new),
            }),
        }
    }

    /// Every new record, in the order it was stored.
    pub fn records(&self) -> Vec<Record> {
        match self.inner.lock() {
            Ok(inner) => inner.records.clone().unwrap_or_default(),
            Err(poisoned) => poisoned.into_inner().records.clone().unwrap_or_default(),
        }
    }
}

impl FindingSink for MemorySink {
    fn store<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<Stored, SinkError>> {
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        let stored = if inner.seen.insert(record.key()) {
            if let Some(records) = &mut inner.records {
                records.push(record.clone());
            }
            Stored::New
        } else {
            Stored::Duplicate
        };
        Box::pin(std::future::ready(Ok(stored)))
    }
}

/// One line of the JSON-lines store. The readable fields are for people grepping the file;
/// `pb_hex` is the whole message, so nothing the agent sent is lost.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    pub kind: RecordKind,
    pub host: String,
    pub id: String,
    pub revision: u64,
    pub received_unix_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    pub pb_hex: String,
}

/// An append-only JSON-lines file, synced to disk after every record.
///
/// Every store is one `write` + `fdatasync` under a lock, run on the blocking pool so an
/// fsync never stalls the async workers. That serializes the fleet's writes on one disk
/// sync each; the audit store will batch (group commit) where this one does not.
#[derive(Debug, Clone)]
pub struct FileSink {
    path: PathBuf,
    inner: Arc<Mutex<FileInner>>,
}

#[derive(Debug)]
struct FileInner {
    file: File,
    seen: Seen,
}

impl FileSink {
    /// Opens (or creates) the store and loads the keys it holds. A torn last line, left by a
    /// crash in the middle of a write, was never acked: it is cut off and the agent resends it.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        Self::open_with_capacity(path, SEEN_CAPACITY)
    }

    /// [`FileSink::open`], remembering at most `capacity` keys (the newest of the file).
    pub fn open_with_capacity(path: &Path, capacity: usize) -> Result<Self, SinkError> {
        let io = |source| SinkError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut seen = Seen::new(capacity);
        let mut good_len = 0u64;
        let mut reader = BufReader::new(&file);
        let mut text = String::new();
        let mut number = 0;
        loop {
            text.clear();
            let read = reader.read_line(&mut text).map_err(io)?;
            if read == 0 {
                break;
            }
            number += 1;
            if !text.ends_with('\n') {
                tracing::warn!(path = %path.display(), line = number, "Cut off a torn last line of the findings store.");
                break;
            }
            let line: Line = serde_json::from_str(&text).map_err(|source| SinkError::Corrupt {
                path: path.to_owned(),
                line: number,
                source,
            })?;
            seen.insert(RecordKey {
                kind: line.kind,
                host: line.host,
                id: line.id,
                revision: line.revision,
            });
            good_len += read as u64;
        }
        drop(reader);
        file.set_len(good_len).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            inner: Arc::new(Mutex::new(FileInner { file, seen })),
        })
    }

    /// Reads every line of a store file (for `gatemend` tooling and tests).
    pub fn read_lines(path: &Path) -> Result<Vec<Line>, SinkError> {
        let file = File::open(path).map_err(|source| SinkError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut lines = Vec::new();
        for (index, text) in BufReader::new(file).lines().enumerate() {
            let text = text.map_err(|source| SinkError::Io {
                path: path.to_owned(),
                source,
            })?;
            let line = serde_json::from_str(&text).map_err(|source| SinkError::Corrupt {
                path: path.to_owned(),
                line: index + 1,
                source,
            })?;
            lines.push(line);
        }
        Ok(lines)
    }
}

impl FindingSink for FileSink {
    fn store<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<Stored, SinkError>> {
        let key = record.key();
        let line = to_line(record, &key);
        let inner = Arc::clone(&self.inner);
        let path = self.path.clone();
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || {
                let mut inner = match inner.lock() {
                    Ok(inner) => inner,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if inner.seen.contains(&key) {
                    return Ok(Stored::Duplicate);
                }
                let io = |source| SinkError::Io {
                    path: path.clone(),
                    source,
                };
                inner.file.write_all(line.as_bytes()).map_err(io)?;
                inner.file.sync_data().map_err(io)?;
                inner.seen.insert(key);
                Ok(Stored::New)
            });
            task.await.map_err(|_| SinkError::WriterGone)?
        })
    }
}

fn to_line(record: &Record, key: &RecordKey) -> String {
    let (host, summary, bytes) = match record {
        Record::Finding { host, finding } => {
            let cause = Cause::try_from(finding.cause).unwrap_or(Cause::Unspecified);
            let root = RootCause::try_from(finding.root_cause).unwrap_or(RootCause::Unspecified);
            let summary = format!(
                "{cause} {root} upstream={} unit={} count={} resolved={}",
                finding.upstream, finding.unit, finding.count, finding.resolved
            );
            (host, summary, finding.encode_to_vec())
        }
        Record::ActionResult { host, result } => {
            let status = ActionStatus::try_from(result.status).unwrap_or(ActionStatus::Unspecified);
            (
                host,
                format!("{status} {}", result.message),
                result.encode_to_vec(),
            )
        }
    };
    let line = Line {
        kind: key.kind,
        host: host.clone(),
        id: key.id.clone(),
        revision: key.revision,
        received_unix_ms: crate::audit::now_ms(),
        summary,
        pb_hex: hex(&bytes),
    };
    // A struct of strings and integers always serializes.
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, revision: u64) -> Record {
        Record::Finding {
            host: "web1".into(),
            finding: Finding {
                id: id.into(),
                revision,
                host: "web1".into(),
                cause: Cause::UpstreamRefused as i32,
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn memory_sink_dedups_on_id_and_revision() {
        let sink = MemorySink::recording();
        assert_eq!(sink.store(&finding("f1", 1)).await.unwrap(), Stored::New);
        assert_eq!(
            sink.store(&finding("f1", 1)).await.unwrap(),
            Stored::Duplicate
        );
        assert_eq!(sink.store(&finding("f1", 2)).await.unwrap(), Stored::New);
        assert_eq!(sink.records().len(), 2);
    }

    #[tokio::test]
    async fn the_same_id_from_two_hosts_is_two_records() {
        let sink = MemorySink::recording();
        let mut other = finding("f1", 1);
        if let Record::Finding { host, finding } = &mut other {
            *host = "web2".into();
            finding.host = "web2".into();
        }
        assert_eq!(sink.store(&finding("f1", 1)).await.unwrap(), Stored::New);
        assert_eq!(sink.store(&other).await.unwrap(), Stored::New);
        assert_eq!(sink.records().len(), 2);
    }

    #[tokio::test]
    async fn a_sink_remembers_at_most_its_capacity_and_counts_what_it_forgot() {
        let sink = MemorySink::with_capacity(3, false);
        for i in 0..5 {
            let id = format!("f{i}");
            assert_eq!(sink.store(&finding(&id, 1)).await.unwrap(), Stored::New);
        }
        {
            let inner = sink.inner.lock().unwrap();
            assert_eq!(inner.seen.len(), 3);
            assert_eq!(inner.seen.forgotten(), 2);
            assert!(
                inner.records.is_none(),
                "a non-recording sink keeps no records"
            );
        }
        // The newest are still known; the oldest would be stored again (never lost).
        assert_eq!(
            sink.store(&finding("f4", 1)).await.unwrap(),
            Stored::Duplicate
        );
        assert_eq!(sink.store(&finding("f0", 1)).await.unwrap(), Stored::New);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        let file = FileSink::open_with_capacity(&path, 2).unwrap();
        for i in 0..4 {
            file.store(&finding(&format!("f{i}"), 1)).await.unwrap();
        }
        drop(file);
        let reopened = FileSink::open_with_capacity(&path, 2).unwrap();
        assert_eq!(reopened.inner.lock().unwrap().seen.len(), 2);
        assert_eq!(
            reopened.store(&finding("f3", 1)).await.unwrap(),
            Stored::Duplicate
        );
    }

    #[tokio::test]
    async fn file_sink_remembers_across_reopen_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.jsonl");
        {
            let sink = FileSink::open(&path).unwrap();
            assert_eq!(sink.store(&finding("f1", 1)).await.unwrap(), Stored::New);
        }
        // A crash in the middle of the next write.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"kind\":\"finding\",\"ho").unwrap();
        drop(file);

        let sink = FileSink::open(&path).unwrap();
        assert_eq!(
            sink.store(&finding("f1", 1)).await.unwrap(),
            Stored::Duplicate
        );
        assert_eq!(sink.store(&finding("f2", 1)).await.unwrap(), Stored::New);
        let lines = FileSink::read_lines(&path).unwrap();
        let ids: Vec<_> = lines.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["f1", "f2"]);
        assert!(
            lines[0].summary.starts_with("upstream_refused"),
            "{}",
            lines[0].summary
        );
    }
}
