//! Where ingest stores what agents send before it acks it.
//!
//! The audit log (SQLite, hash-chained) will implement [`FindingSink`]; until then the
//! controller has an in-memory sink (tests, load runs) and an append-only JSON-lines file.
//! The sink owns deduplication: only the durable store knows, after a controller restart,
//! which (id, revision) it already holds.

use std::collections::HashSet;
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
pub enum Record {
    Finding { host: String, finding: Finding },
    ActionResult { host: String, result: ActionResult },
}

impl Record {
    /// The identity a resend repeats: (kind, id, revision).
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Finding { finding, .. } => RecordKey {
                kind: RecordKind::Finding,
                id: finding.id.clone(),
                revision: finding.revision,
            },
            Record::ActionResult { result, .. } => RecordKey {
                kind: RecordKind::ActionResult,
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
    pub id: String,
    pub revision: u64,
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

/// Keeps records in memory: for tests and load runs, not durable.
#[derive(Debug, Default)]
pub struct MemorySink {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    seen: HashSet<RecordKey>,
    records: Vec<Record>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every new record, in the order it was stored.
    pub fn records(&self) -> Vec<Record> {
        match self.inner.lock() {
            Ok(inner) => inner.records.clone(),
            Err(poisoned) => poisoned.into_inner().records.clone(),
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
            inner.records.push(record.clone());
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
    seen: HashSet<RecordKey>,
}

impl FileSink {
    /// Opens (or creates) the store and loads the keys it holds. A torn last line, left by a
    /// crash in the middle of a write, was never acked: it is cut off and the agent resends it.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
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
        let mut seen = HashSet::new();
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
        received_unix_ms: unix_ms_now(),
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

pub(crate) fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
        let sink = MemorySink::new();
        assert_eq!(sink.store(&finding("f1", 1)).await.unwrap(), Stored::New);
        assert_eq!(
            sink.store(&finding("f1", 1)).await.unwrap(),
            Stored::Duplicate
        );
        assert_eq!(sink.store(&finding("f1", 2)).await.unwrap(), Stored::New);
        assert_eq!(sink.records().len(), 2);
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
