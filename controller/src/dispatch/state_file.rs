//! The fleet state on disk, so a restarted controller remembers what it did: cooldowns,
//! attempts and storm episodes. Without it, a controller killed mid-incident would meet the
//! incident's next finding revision with no memory of the restart it had just dispatched, and
//! dispatch it again.
//!
//! Written whole (a temporary file, fsync, rename) after every decision that acts, escalates
//! or finishes an action: those are rare next to findings, and a crash leaves either the old
//! file or the new one. On load, every host is offline until its agent says Hello again, and
//! the actions that were in flight are forgotten: their results, if they come, are logged; the
//! cooldowns they started still hold.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::decide::{FleetData, FleetState};

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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FleetState::new()),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut data: FleetData =
        serde_json::from_slice(&bytes).map_err(|source| StateFileError::Parse {
            path: path.to_owned(),
            source,
        })?;
    for host in data.hosts.values_mut() {
        host.online = false;
    }
    data.in_flight.clear();
    Ok(FleetState::from_data(data))
}

/// Writes the state durably.
pub fn save(path: &Path, state: &FleetState) -> Result<(), StateFileError> {
    let write = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(state.data()).map_err(|e| write(std::io::Error::other(e)))?;
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
        assert_eq!(load(&path).unwrap().data(), FleetState::new().data());
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
        save(&path, &state).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.last_acted("web1", "restart"), Some(10));
        assert_eq!(loaded.attempts("web1", Cause::UpstreamRefused, 20).0, 1);
        assert_eq!(loaded.online_hosts(), 0);
        assert!(loaded.data().in_flight.is_empty());
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(matches!(load(&path), Err(StateFileError::Parse { .. })));
    }
}
