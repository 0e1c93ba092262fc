//! The live fleet: every host that said Hello, whether it is online, and what it reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gatemend_proto::ActionKind;
use gatemend_proto::v1::{ActionRequest, ControllerMessage, Finding, controller_message};
use tokio::sync::mpsc;
use tonic::Status;

use super::error::SendActionError;

/// The sending half of one agent's stream.
pub(crate) type Outbound = mpsc::Sender<Result<ControllerMessage, Status>>;

/// Identifies one stream, so the end of a replaced stream does not mark its host offline.
pub(crate) type ConnId = u64;

/// A host as the controller sees it right now.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub allowed_actions: Vec<ActionKind>,
    pub online: bool,
    /// The agent's own clock at its last heartbeat, ms since the Unix epoch.
    pub last_heartbeat_unix_ms: Option<i64>,
    /// How long ago the controller last heard from the host.
    pub silent_for: Duration,
    /// Ids of findings the host reported and has not resolved.
    pub open_findings: BTreeSet<String>,
}

/// What a Hello tells the fleet.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub allowed_actions: Vec<ActionKind>,
}

#[derive(Debug)]
struct Entry {
    hello: Hello,
    stream: Option<(ConnId, Outbound)>,
    last_heard: Instant,
    last_heartbeat_unix_ms: Option<i64>,
    open_findings: BTreeSet<String>,
}

/// The fleet, shared by every stream. Cheap to clone.
///
/// A std mutex: every critical section is a few map operations and never awaits.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    hosts: Arc<Mutex<HashMap<String, Entry>>>,
    next_conn: Arc<AtomicU64>,
}

impl Fleet {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        match self.hosts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a stream after its Hello; a newer stream of the same host replaces the old.
    pub(crate) fn connect(&self, hello: Hello, outbound: Outbound, now: Instant) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut hosts = self.lock();
        let host = hello.host.clone();
        match hosts.get_mut(&host) {
            Some(entry) => {
                entry.hello = hello;
                entry.stream = Some((conn, outbound));
                entry.last_heard = now;
            }
            None => {
                hosts.insert(
                    host,
                    Entry {
                        hello,
                        stream: Some((conn, outbound)),
                        last_heard: now,
                        last_heartbeat_unix_ms: None,
                        open_findings: BTreeSet::new(),
                    },
                );
            }
        }
        conn
    }

    /// The stream `conn` ended. Returns true when that took the host offline.
    pub(crate) fn disconnect(&self, host: &str, conn: ConnId) -> bool {
        let mut hosts = self.lock();
        match hosts.get_mut(host) {
            Some(entry) if entry.stream.as_ref().is_some_and(|(c, _)| *c == conn) => {
                entry.stream = None;
                true
            }
            _ => false,
        }
    }

    /// Any message from the host proves it alive; a heartbeat also carries its clock.
    pub(crate) fn heard(&self, host: &str, now: Instant, heartbeat_unix_ms: Option<i64>) {
        if let Some(entry) = self.lock().get_mut(host) {
            entry.last_heard = now;
            if heartbeat_unix_ms.is_some() {
                entry.last_heartbeat_unix_ms = heartbeat_unix_ms;
            }
        }
    }

    /// Tracks the host's open findings: a resolved finding closes.
    pub(crate) fn finding(&self, host: &str, finding: &Finding) {
        if let Some(entry) = self.lock().get_mut(host) {
            if finding.resolved {
                entry.open_findings.remove(&finding.id);
            } else {
                entry.open_findings.insert(finding.id.clone());
            }
        }
    }

    /// Marks offline every host not heard from within `timeout`, and drops its stream
    /// (closing it). Returns the hosts it took offline.
    pub fn sweep(&self, now: Instant, timeout: Duration) -> Vec<String> {
        let mut offline = Vec::new();
        for (host, entry) in self.lock().iter_mut() {
            if entry.stream.is_some() && now.saturating_duration_since(entry.last_heard) > timeout {
                entry.stream = None;
                offline.push(host.clone());
            }
        }
        offline.sort();
        offline
    }

    /// Whether an action of `kind` could be sent to `host` now: known, allowed by its agent,
    /// connected. The dispatcher asks before it commits a decision, and sends after.
    pub fn check_send(&self, host: &str, kind: ActionKind) -> Result<(), SendActionError> {
        let hosts = self.lock();
        check(&hosts, host, kind).map(|_| ())
    }

    /// Hands an ActionRequest to the host's live stream.
    pub fn send_action(&self, host: &str, request: ActionRequest) -> Result<(), SendActionError> {
        let hosts = self.lock();
        let kind = ActionKind::try_from(request.kind).unwrap_or(ActionKind::Unspecified);
        let outbound = check(&hosts, host, kind)?;
        let message = ControllerMessage {
            body: Some(controller_message::Body::ActionRequest(request)),
        };
        outbound.try_send(Ok(message)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendActionError::QueueFull(host.to_owned()),
            mpsc::error::TrySendError::Closed(_) => SendActionError::Offline(host.to_owned()),
        })
    }

    /// One host's view.
    pub fn host(&self, host: &str) -> Option<HostView> {
        let now = Instant::now();
        self.lock().get(host).map(|entry| view(entry, now))
    }

    /// Every host, sorted by name.
    pub fn hosts(&self) -> Vec<HostView> {
        let now = Instant::now();
        let mut hosts: Vec<_> = self.lock().values().map(|e| view(e, now)).collect();
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        hosts
    }

    /// How many hosts have a live stream.
    pub fn online(&self) -> usize {
        self.lock().values().filter(|e| e.stream.is_some()).count()
    }
}

fn view(entry: &Entry, now: Instant) -> HostView {
    HostView {
        host: entry.hello.host.clone(),
        labels: entry.hello.labels.clone(),
        agent_version: entry.hello.agent_version.clone(),
        allowed_actions: entry.hello.allowed_actions.clone(),
        online: entry.stream.is_some(),
        last_heartbeat_unix_ms: entry.last_heartbeat_unix_ms,
        silent_for: now.saturating_duration_since(entry.last_heard),
        open_findings: entry.open_findings.clone(),
    }
}

/// The stream an action of `kind` goes to on `host`, if it may go.
fn check<'a>(
    hosts: &'a HashMap<String, Entry>,
    host: &str,
    kind: ActionKind,
) -> Result<&'a Outbound, SendActionError> {
    let entry = hosts
        .get(host)
        .ok_or_else(|| SendActionError::UnknownHost(host.to_owned()))?;
    if !entry.hello.allowed_actions.contains(&kind) {
        return Err(SendActionError::NotAllowed {
            host: host.to_owned(),
            action: kind.to_string(),
        });
    }
    entry
        .stream
        .as_ref()
        .map(|(_, outbound)| outbound)
        .ok_or_else(|| SendActionError::Offline(host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(host: &str) -> Hello {
        Hello {
            host: host.into(),
            labels: BTreeMap::from([("env".into(), "prod".into())]),
            agent_version: "0.1.0".into(),
            allowed_actions: vec![ActionKind::RestartUnit],
        }
    }

    #[test]
    fn a_silent_host_goes_offline_and_a_replaced_stream_does_not_take_it_down() {
        let fleet = Fleet::new();
        let t0 = Instant::now();
        let (tx, _rx) = mpsc::channel(4);
        let first = fleet.connect(hello("web1"), tx.clone(), t0);
        let second = fleet.connect(hello("web1"), tx, t0);
        assert!(
            !fleet.disconnect("web1", first),
            "an old stream ending keeps the host online"
        );
        assert!(fleet.host("web1").unwrap().online);

        fleet.heard("web1", t0 + Duration::from_secs(5), Some(42));
        assert!(
            fleet
                .sweep(t0 + Duration::from_secs(20), Duration::from_secs(30))
                .is_empty()
        );
        assert_eq!(
            fleet.sweep(t0 + Duration::from_secs(40), Duration::from_secs(30)),
            ["web1"]
        );
        let view = fleet.host("web1").unwrap();
        assert!(!view.online);
        assert_eq!(view.last_heartbeat_unix_ms, Some(42));
        assert!(!fleet.disconnect("web1", second));
    }

    #[test]
    fn open_findings_close_when_resolved() {
        let fleet = Fleet::new();
        let (tx, _rx) = mpsc::channel(4);
        fleet.connect(hello("web1"), tx, Instant::now());
        let mut finding = Finding {
            id: "f1".into(),
            ..Default::default()
        };
        fleet.finding("web1", &finding);
        assert_eq!(fleet.host("web1").unwrap().open_findings.len(), 1);
        finding.resolved = true;
        fleet.finding("web1", &finding);
        assert!(fleet.host("web1").unwrap().open_findings.is_empty());
    }

    #[test]
    fn send_action_reaches_the_stream_only_when_allowed_and_online() {
        let fleet = Fleet::new();
        let request = |kind: ActionKind| ActionRequest {
            action_id: "a1".into(),
            kind: kind as i32,
            ..Default::default()
        };
        assert_eq!(
            fleet.send_action("web1", request(ActionKind::RestartUnit)),
            Err(SendActionError::UnknownHost("web1".into()))
        );
        let (tx, mut rx) = mpsc::channel(1);
        let conn = fleet.connect(hello("web1"), tx, Instant::now());
        assert!(matches!(
            fleet.send_action("web1", request(ActionKind::ReloadNginx)),
            Err(SendActionError::NotAllowed { .. })
        ));
        fleet
            .send_action("web1", request(ActionKind::RestartUnit))
            .unwrap();
        assert_eq!(
            fleet.send_action("web1", request(ActionKind::RestartUnit)),
            Err(SendActionError::QueueFull("web1".into()))
        );
        assert!(rx.try_recv().unwrap().is_ok());
        fleet.disconnect("web1", conn);
        assert_eq!(
            fleet.send_action("web1", request(ActionKind::RestartUnit)),
            Err(SendActionError::Offline("web1".into()))
        );
    }
}
