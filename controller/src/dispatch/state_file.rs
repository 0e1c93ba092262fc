//! The fleet state on disk, so a restarted controller remembers what it did: cooldowns,
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

use crate::decide::{Finding, FleetData, FleetState};

/// An action chain in flight, enough to send its current action again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The in-flight id.
    pub chain: String,
    pub finding: Finding,
    /// The policy, by name (looked up in the running set on resume).
    pub policy: String,
    /// The index of the action that was running.
    pub current: usize,
}

/// What the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    fleet: FleetData,
    #[serde(default)]
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

/// Reads the state and the chains that were in flight; a missing file is an empty fleet.
pub fn load(path: &Path) -> Result<(FleetState, Vec<Pending>), StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((FleetState::new(), Vec::new()));
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
    }
    // In flight stays only what can be resumed.
    data.in_flight
        .retain(|id, _| pending.iter().any(|p| p.chain == *id));
    Ok((FleetState::from_data(data), pending))
}

/// Writes the state and the chains in flight durably.
pub fn save(path: &Path, state: &FleetState, pending: Vec<Pending>) -> Result<(), StateFileError> {
    let write = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let saved = Saved {
        fleet: state.data().clone(),
        pending,
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
    use crate::decide::{Finding, InFlight};
    use gatemend_proto::Cause;

    #[test]
    fn a_saved_state_loads_with_its_cooldowns_hosts_offline_and_nothing_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        assert_eq!(load(&path).unwrap().0.data(), FleetState::new().data());
        let mut state = FleetState::new();
        state.host_online("web1", Default::default());
        let f: Finding = serde_json::from_value(serde_json::json!({
            "id": "f", "host": "web1", "cause": "upstream_refused", "first_seen": 1, "last_seen": 2
        }))
        .unwrap();
        state.record_finding(&f, 10);
        state.record_acted("web1", "restart", 10);
        state.record_dispatched(
            "a1",
            InFlight {
                host: "web1".into(),
                policy: "restart".into(),
                cause: Cause::UpstreamRefused,
                since: 10,
            },
            std::time::Duration::from_secs(3600),
            10,
        );
        let pending = Pending {
            chain: "a1".into(),
            finding: f.clone(),
            policy: "restart".into(),
            current: 0,
        };
        save(&path, &state, vec![pending.clone()]).unwrap();
        let (loaded, resumed) = load(&path).unwrap();
        assert_eq!(resumed, [pending]);
        // The chain still counts as in flight until its result comes.
        assert_eq!(loaded.data().in_flight.len(), 1);
        save(&path, &state, Vec::new()).unwrap();
        let (loaded, _) = load(&path).unwrap();
        assert_eq!(loaded.last_acted("web1", "restart"), Some(10));
        assert_eq!(loaded.attempts("web1", Cause::UpstreamRefused, 20).0, 1);
        assert_eq!(loaded.online_hosts(), 0);
        assert!(loaded.data().in_flight.is_empty());
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(matches!(load(&path), Err(StateFileError::Parse { .. })));
    }
}
