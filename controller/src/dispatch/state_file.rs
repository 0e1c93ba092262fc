//! The fleet state on disk, for a controller without a database (with one, the state lives
//! there: [`super::state_db`]), so a restarted controller remembers what it did: cooldowns,
//! attempts and storm episodes. Without it, a controller killed mid-incident would meet the
//! incident's next finding revision with no memory of the restart it had just dispatched, and
//! dispatch it again.
//!
//! Written whole (a temporary file, fsync, rename) after every decision that acts, escalates
//! or finishes an action: those are rare next to findings, and a crash leaves either the old
//! file or the new one. On load, every host is offline until its agent says Hello again. The
//! actions that were in flight stay in flight and are sent again when their host reconnects:
//! their ids are derived from the finding revision and the policy, so an agent that already ran
//! one answers from its ledger instead of running it twice, and one that never received it (the
//! controller died with the request in its socket) runs it now.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decide::{ChainState, Finding, FleetData, FleetState};

/// A chain in flight as files before the in-flight actions carried their chain wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    chain: String,
    finding: Finding,
    policy: String,
    current: usize,
}

/// What the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    fleet: FleetData,
    /// Read from older files only.
    #[serde(default, skip_serializing)]
    pending: Vec<Pending>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read the fleet state {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the fleet state {} is not valid: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the fleet state {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the state; a missing file is an empty fleet.
pub fn load(path: &Path) -> Result<FleetState, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FleetState::new());
        }
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let Saved {
        fleet: mut data,
        pending,
    } = serde_json::from_slice(&bytes).map_err(|source| StateFileError::Parse {
        path: path.to_owned(),
        source,
    })?;
    for host in data.hosts.values_mut() {
        host.online = false;
        host.controller.clear();
    }
    for p in pending {
        if let Some(action) = data.in_flight.get_mut(&p.chain) {
            action.chain = Some(ChainState {
                finding: p.finding,
                current: p.current,
                owner: String::new(),
                expires_at: 0,
            });
        }
    }
    // In flight stays only what can be resumed.
    data.in_flight.retain(|_, action| action.chain.is_some());
    Ok(FleetState::from_data(data))
}

/// Writes the state durably.
pub fn save(path: &Path, state: &FleetState) -> Result<(), StateFileError> {
    let write = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let saved = Saved {
        fleet: state.data().clone(),
        pending: Vec::new(),
    };
    let bytes = serde_json::to_vec(&saved).map_err(|e| write(std::io::Error::other(e)))?;
    let mut file = std::fs::File::create(&tmp).map_err(write)?;
    file.write_all(&bytes).map_err(write)?;
    file.sync_all().map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::InFlight;
    use gatemend_proto::Cause;

    #[test]
    fn a_saved_state_loads_with_its_cooldowns_hosts_offline_and_only_resumable_chains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        assert_eq!(load(&path).unwrap().data(), FleetState::new().data());
        let mut state = FleetState::new();
        state.host_online("web1", Default::default(), "c1");
        let f: Finding = serde_json::from_value(serde_json::json!({
            "id": "f", "host": "web1", "cause": "upstream_refused", "first_seen": 1, "last_seen": 2
        }))
        .unwrap();
        state.record_finding(&f, 10, "c1");
        state.record_acted("web1", "restart", 10);
        let action = |chain| InFlight {
            host: "web1".into(),
            policy: "restart".into(),
            cause: Cause::UpstreamRefused,
            since: 10,
            chain,
        };
        let chain = ChainState {
            finding: f.clone(),
            current: 1,
            owner: "c1".into(),
            expires_at: 40,
        };
        let window = std::time::Duration::from_secs(3600);
        state.record_dispatched("a1", action(Some(chain.clone())), window, 10);
        state.record_dispatched("a2", action(None), window, 10);
        save(&path, &state).unwrap();
        let loaded = load(&path).unwrap();
        // The chain still counts as in flight until its result comes; one without its chain
        // cannot be resumed and is dropped.
        assert_eq!(loaded.data().in_flight.len(), 1);
        assert_eq!(loaded.data().in_flight["a1"].chain, Some(chain));
        assert_eq!(loaded.last_acted("web1", "restart"), Some(10));
        assert_eq!(loaded.attempts("web1", "restart", 20).0, 2);
        assert_eq!(loaded.online_hosts(), 0);
        assert_eq!(loaded.host("web1").unwrap().controller, "");
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(matches!(load(&path), Err(StateFileError::Parse { .. })));
    }

    #[test]
    fn an_older_file_with_pending_chains_resumes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        let finding = serde_json::json!({
            "id": "f", "host": "web1", "cause": "upstream_refused", "first_seen": 1, "last_seen": 2
        });
        let old = serde_json::json!({
            "fleet": { "in_flight": {
                "a1": { "host": "web1", "policy": "restart", "cause": "upstream_refused", "since": 10 },
                "a2": { "host": "web1", "policy": "restart", "cause": "upstream_refused", "since": 10 }
            } },
            "pending": [ { "chain": "a1", "finding": finding, "policy": "restart", "current": 0 } ]
        });
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        let loaded = load(&path).unwrap();
        let ids: Vec<&String> = loaded.data().in_flight.keys().collect();
        assert_eq!(ids, ["a1"]);
        assert_eq!(
            loaded.data().in_flight["a1"]
                .chain
                .as_ref()
                .unwrap()
                .finding
                .id,
            "f"
        );
    }
}
