//! The on-disk outbox: every finding and action result waits here until the controller acks it.
//!
//! One file per message, `<seq>.pb` (the encoded AgentMessage), written to a temporary name,
//! fsync'd, renamed and the directory fsync'd, so after a crash a message is either wholly there
//! or not there at all. The sequence number orders the resend after a restart.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use gatemend_proto::v1::{AgentMessage, agent_message};
use prost::Message;

use super::durable::{io, write_synced};
use super::error::LinkError;

/// One waiting message.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    /// Finding.id or ActionResult.action_id: what the controller's Ack names.
    pub id: String,
    pub message: AgentMessage,
}

/// The outbox, mirrored in memory (it is bounded, so the mirror is too).
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    max: usize,
    entries: VecDeque<Entry>,
    next_seq: u64,
    dropped: u64,
}

impl Outbox {
    /// Opens `dir` (creating it) and loads what an earlier run left unacked.
    pub fn open(dir: &Path, max: usize) -> Result<Self, LinkError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut entries = Vec::new();
        for item in fs::read_dir(dir).map_err(io(dir))? {
            let path = item.map_err(io(dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                // A write the crash interrupted before its rename: never sent, never complete.
                fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let Some(seq) = name.strip_suffix(".pb").and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let bytes = fs::read(&path).map_err(io(&path))?;
            let message =
                AgentMessage::decode(bytes.as_slice()).map_err(|source| LinkError::Decode {
                    path: path.clone(),
                    source,
                })?;
            entries.push(Entry {
                seq,
                id: id_of(&message),
                message,
            });
        }
        entries.sort_by_key(|e| e.seq);
        let next_seq = entries.last().map_or(1, |e| e.seq + 1);
        let mut outbox = Self {
            dir: dir.to_owned(),
            max: max.max(1),
            entries: entries.into(),
            next_seq,
            dropped: 0,
        };
        // The limit may have shrunk since the last run.
        while outbox.entries.len() > outbox.max {
            outbox.drop_oldest()?;
        }
        if !outbox.entries.is_empty() {
            tracing::info!(dir = %dir.display(), pending = outbox.entries.len(), "Outbox holds unacked messages; they will be resent.");
        }
        Ok(outbox)
    }

    /// Makes `message` durable, dropping the oldest entry first when the outbox is full.
    pub fn push(&mut self, message: AgentMessage) -> Result<u64, LinkError> {
        while self.entries.len() >= self.max {
            self.drop_oldest()?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.path(seq);
        write_synced(&self.dir, &path, &message.encode_to_vec())?;
        self.entries.push_back(Entry {
            seq,
            id: id_of(&message),
            message,
        });
        Ok(seq)
    }

    /// Removes an acked message. Missing is fine: it may have been dropped meanwhile.
    pub fn remove(&mut self, seq: u64) -> Result<(), LinkError> {
        let Some(index) = self.entries.iter().position(|e| e.seq == seq) else {
            return Ok(());
        };
        self.entries.remove(index);
        let path = self.path(seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn drop_oldest(&mut self) -> Result<(), LinkError> {
        if let Some(oldest) = self.entries.pop_front() {
            self.dropped += 1;
            tracing::error!(
                dir = %self.dir.display(),
                max = self.max,
                id = %oldest.id,
                dropped_total = self.dropped,
                "Outbox full: dropped the oldest unacked message; the controller will never see it."
            );
            let path = self.path(oldest.seq);
            fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Messages after `seq`, in order (what a session has not sent yet).
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.seq > seq)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many messages were dropped because the outbox was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.pb"))
    }
}

fn id_of(message: &AgentMessage) -> String {
    match &message.body {
        Some(agent_message::Body::Finding(f)) => f.id.clone(),
        Some(agent_message::Body::ActionResult(r)) => r.action_id.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use gatemend_proto::v1::Finding;

    use super::*;

    fn finding(id: &str) -> AgentMessage {
        AgentMessage {
            body: Some(agent_message::Body::Finding(Finding {
                id: id.into(),
                ..Default::default()
            })),
        }
    }

    fn ids(outbox: &Outbox) -> Vec<String> {
        outbox.after(0).map(|e| e.id.clone()).collect()
    }

    #[test]
    fn unacked_messages_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        let a = outbox.push(finding("a")).unwrap();
        outbox.push(finding("b")).unwrap();
        outbox.push(finding("c")).unwrap();
        outbox.remove(a).unwrap();
        std::fs::write(dir.path().join("00000000000000000009.tmp"), b"half").unwrap();
        drop(outbox);

        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(ids(&outbox), ["b", "c"]);
        let d = outbox.push(finding("d")).unwrap();
        assert_eq!(d, 4, "sequence numbers continue after the restart");
        assert!(!dir.path().join("00000000000000000009.tmp").exists());
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 2).unwrap();
        for id in ["a", "b", "c", "d"] {
            outbox.push(finding(id)).unwrap();
        }
        assert_eq!(ids(&outbox), ["c", "d"]);
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
