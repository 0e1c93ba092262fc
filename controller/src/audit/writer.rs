//! Group commit: one task per `Audit` writes this process's appends, committing everything
//! queued at that moment in one transaction (one fsync), so concurrent appenders share the cost
//! of a commit instead of queueing for one each. A lone append is committed at once (the writer
//! never waits for company), so its latency is unchanged.

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::error::AuditError;
use super::record::{Kind, NewRecord, Record};
use super::store::{Backend, write_group};

/// Requests waiting for the writer; senders wait when it is full (backpressure, not loss).
const QUEUE: usize = 1024;

/// At most this many records in one transaction (bounds its size and its latency).
const MAX_GROUP: usize = 512;

struct Request {
    /// The first record's kind, for errors.
    kind: Kind,
    records: Vec<NewRecord>,
    reply: oneshot::Sender<Result<Vec<Record>, AuditError>>,
}

/// The sending side, shared by every clone of an `Audit`; the task stops when the last is dropped.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("records", &self.records.len())
            .finish()
    }
}

/// Starts the writer task on the current tokio runtime.
pub fn spawn(pool: AnyPool, backend: Backend) -> Handle {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(pool, backend, rx));
    Handle { tx }
}

impl Handle {
    /// Queues `records` (`kind`: the first one's) and waits until they are committed,
    /// consecutively.
    pub async fn submit(
        &self,
        kind: Kind,
        records: Vec<NewRecord>,
    ) -> Result<Vec<Record>, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                kind,
                records,
                reply,
            })
            .await
            .map_err(|_| AuditError::WriterGone { kind })?;
        answer.await.map_err(|_| AuditError::WriterGone { kind })?
    }
}

async fn run(pool: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut size = group[0].records.len();
        // Take what is already queued, without waiting for more.
        while size < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => {
                    size += next.records.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        // (reply, kind, how many records) per request, in queue order.
        let mut waiters = Vec::with_capacity(group.len());
        let mut records = Vec::with_capacity(size);
        for request in group {
            waiters.push((request.reply, request.kind, request.records.len()));
            records.extend(request.records);
        }
        match write_group(&pool, backend, records).await {
            Ok(written) => {
                let mut written = written.into_iter();
                for (reply, _, n) in waiters {
                    // A caller that stopped waiting still had its record written; nothing to do.
                    let _ = reply.send(Ok(written.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                warn!(records = size, error = %e, "An audit group commit failed; nothing of it was written.");
                for (reply, kind, _) in waiters {
                    let _ = reply.send(Err(share(&e, kind)));
                }
            }
        }
    }
}

/// The group's error for one of its appenders (each gets its own kind and the shared cause).
fn share(e: &AuditError, kind: Kind) -> AuditError {
    match e {
        AuditError::Append { source, .. } => AuditError::Append {
            kind,
            source: Arc::clone(source),
        },
        AuditError::NoHead => AuditError::NoHead,
        AuditError::Corrupt { seq, why } => AuditError::Corrupt {
            seq: *seq,
            why: why.clone(),
        },
        other => AuditError::Append {
            kind,
            source: Arc::new(sqlx::Error::Protocol(other.to_string())),
        },
    }
}
