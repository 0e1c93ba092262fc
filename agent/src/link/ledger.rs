//! The persisted record of the actions this agent was asked to run, so an ActionRequest
//! delivered twice (after a reconnect, a controller restart, a retry) runs once.
//!
//! Per action id (hex-encoded, so any id is a safe file name): `<hex>.started`, an empty file
//! synced before the action runs, and `<hex>.result`, its first result. A request whose action
//! started but never finished (the agent died meanwhile) is not run again either.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use gatemend_proto::v1::ActionResult;
use prost::Message;

use super::durable::{io, write_synced};
use super::error::LinkError;

/// What the ledger knows of one action id.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Never asked before.
    New,
    /// Started and not finished: running now, or the agent died while it ran.
    Started,
    /// Finished with this (first) result.
    Done(ActionResult),
}

#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    known: HashMap<String, Option<ActionResult>>,
}

impl Ledger {
    pub fn open(dir: &Path) -> Result<Self, LinkError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut known = HashMap::new();
        for item in fs::read_dir(dir).map_err(io(dir))? {
            let path = item.map_err(io(dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(id) = name.strip_suffix(".started").and_then(unhex) {
                known.entry(id).or_insert(None);
            } else if let Some(id) = name.strip_suffix(".result").and_then(unhex) {
                let bytes = fs::read(&path).map_err(io(&path))?;
                let result =
                    ActionResult::decode(bytes.as_slice()).map_err(|source| LinkError::Decode {
                        path: path.clone(),
                        source,
                    })?;
                known.insert(id, Some(result));
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            known,
        })
    }

    pub fn seen(&self, action_id: &str) -> Seen {
        match self.known.get(action_id) {
            None => Seen::New,
            Some(None) => Seen::Started,
            Some(Some(result)) => Seen::Done(result.clone()),
        }
    }

    /// Durably notes that the action is about to run.
    pub fn start(&mut self, action_id: &str) -> Result<(), LinkError> {
        let path = self.dir.join(format!("{}.started", hex(action_id)));
        write_synced(&self.dir, &path, &[])?;
        self.known.insert(action_id.to_owned(), None);
        Ok(())
    }

    /// Durably keeps the action's first result; later results for the id are ignored.
    pub fn finish(&mut self, result: &ActionResult) -> Result<(), LinkError> {
        if let Some(Some(_)) = self.known.get(&result.action_id) {
            return Ok(());
        }
        let path = self.dir.join(format!("{}.result", hex(&result.action_id)));
        write_synced(&self.dir, &path, &result.encode_to_vec())?;
        self.known
            .insert(result.action_id.clone(), Some(result.clone()));
        Ok(())
    }
}

fn hex(id: &str) -> String {
    use std::fmt::Write as _;
    id.bytes()
        .fold(String::with_capacity(id.len() * 2), |mut out, b| {
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

    #[test]
    fn started_and_finished_actions_are_remembered_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.seen("../a/1"), Seen::New);
        ledger.start("../a/1").unwrap();
        ledger.start("b").unwrap();
        let first = ActionResult {
            action_id: "../a/1".into(),
            message: "first".into(),
            ..Default::default()
        };
        ledger.finish(&first).unwrap();
        ledger
            .finish(&ActionResult {
                message: "second".into(),
                ..first.clone()
            })
            .unwrap();
        drop(ledger);

        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.seen("../a/1"), Seen::Done(first));
        assert_eq!(ledger.seen("b"), Seen::Started);
        assert_eq!(ledger.seen("c"), Seen::New);
    }
}
