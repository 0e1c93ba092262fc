//! What the guards remember about the fleet, as one plain serialisable struct.
//!
//! [`FleetData`] is the state itself: hosts, in-flight actions (with where their chains
//! stand), storm episodes, the controllers deciding on it. It is shaped like the tables it is
//! kept in when several controllers share a database (`dispatch::state_db`): a row per host,
//! per in-flight action, per storm, per controller; nothing is hidden inside the policies or
//! the matcher. [`FleetState`] adds indices derived from it (rebuilt on deserialization, never
//! serialized) so that a decision costs a few lookups, not a scan of 10,000 hosts, and records
//! what changed ([`FleetState::take_changes`]) so that only that is written back.
//!
//! Reading is done by [`super::decide`]; changing only by the explicit transitions below:
//! [`FleetState::host_online`], [`FleetState::host_offline`], [`FleetState::record_finding`],
//! [`FleetState::record_acted`], [`FleetState::record_storm`],
//! [`FleetState::record_attempts_escalated`], [`FleetState::record_dispatched`],
//! [`FleetState::record_progress`], [`FleetState::record_finished`],
//! [`FleetState::record_heartbeat`], [`FleetState::forget_controller`]; and by the `set_*`
//! methods, which replace a part with what another controller wrote. [`super::apply`] applies
//! a decision's transitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use gatemend_proto::Cause;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::finding::{Finding, UnixMs};
use super::incident::{Incident, key_of};

/// Open incidents kept per host at most; a finding past that joins the newest one (logged).
pub const MAX_INCIDENTS_PER_HOST: usize = 256;

/// One host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostState {
    /// Its agent is connected.
    pub online: bool,
    /// Operator-set labels from the agent's Hello.
    pub labels: BTreeMap<String, String>,
    /// Ids of its unresolved findings; the host is healthy when this is empty.
    pub open_findings: BTreeSet<String>,
    /// Since when it has had no open finding; `None` while it has some.
    pub healthy_since: Option<UnixMs>,
    /// When each cause was last seen on it (storm detection).
    pub seen: Vec<Seen>,
    /// When each policy last acted on it (cooldown).
    pub acted: Vec<Acted>,
    /// Actions dispatched per cause (max_attempts).
    pub attempts: Vec<Attempts>,
    /// The controller its agent is connected to, while online (several controllers share one
    /// database: only that one marks it offline).
    pub controller: String,
    /// Its open incidents, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<Incident>,
}

/// A cause's latest sighting on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    /// The cause.
    pub cause: Cause,
    /// The last line's time (never later than the controller's clock).
    pub at: UnixMs,
}

/// A policy's latest act on a host: an execute, a dry run, an approval request or an
/// escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acted {
    /// The policy's name.
    pub policy: String,
    /// When.
    pub at: UnixMs,
}

/// Attempts of one policy on one host: the restarts of a service that keeps dying count
/// together whichever cause its lines showed each time (refused, reset, socket missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempts {
    /// The cause of the latest attempt.
    pub cause: Cause,
    /// The policy; empty in a state written before attempts were counted per policy (such an
    /// entry counts for nothing and is replaced at the next attempt).
    #[serde(default)]
    pub policy: String,
    /// Actions dispatched since the last reset.
    pub count: u32,
    /// The latest dispatch.
    pub last: UnixMs,
    /// The deciding policy's attempts_window: healthy this long resets the count.
    pub window_ms: u64,
    /// The exhaustion has been escalated (escalate once, then hold).
    pub escalated: bool,
}

/// A dispatched action that has not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlight {
    /// The host it runs on.
    pub host: String,
    /// The policy that decided it.
    pub policy: String,
    /// The cause it mends.
    pub cause: Cause,
    /// When it was dispatched.
    pub since: UnixMs,
    /// Where its chain of actions stands, so that whichever controller the host reconnects
    /// to can send the running action again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainState>,
}

/// Where a chain of actions stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainState {
    /// The finding it mends.
    pub finding: Finding,
    /// The index of the running action in the policy's actions.
    pub current: usize,
    /// The controller driving it (sending its actions, waiting for their results).
    pub owner: String,
    /// When the running action is given up if no result came.
    pub expires_at: UnixMs,
}

/// A storm of one cause: escalated once, held since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormEpisode {
    /// When it was escalated.
    pub escalated_at: UnixMs,
    /// The latest decision that found the storm still on.
    pub last_seen: UnixMs,
}

/// The state itself; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetData {
    /// Every host ever heard of, by name.
    pub hosts: HashMap<String, HostState>,
    /// In-flight actions by dispatch id.
    pub in_flight: BTreeMap<String, InFlight>,
    /// Storm episodes by cause.
    pub storms: BTreeMap<Cause, StormEpisode>,
    /// The controllers deciding on this state, by id: their latest heartbeat. A controller
    /// silent too long is gone, and its hosts are offline until they reconnect elsewhere.
    pub controllers: BTreeMap<String, UnixMs>,
}

/// [`FleetData`] with the indices the guards need. Serializes as `FleetData`.
#[derive(Debug, Clone, Default)]
pub struct FleetState {
    data: FleetData,
    /// Hosts online.
    online: usize,
    /// In-flight actions per host (its length is the number of busy hosts).
    busy: HashMap<String, u32>,
    /// Per cause (by wire value): (last seen, host) of the ONLINE hosts that showed it.
    by_cause: Vec<BTreeSet<(UnixMs, String)>>,
    /// What changed since [`FleetState::take_changes`] last asked: what a shared database
    /// must be told.
    changes: Changes,
}

/// What changed in a [`FleetState`]: the hosts by name, and whether the in-flight actions or
/// the storm episodes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub hosts: BTreeSet<String>,
    pub in_flight: bool,
    pub storms: bool,
    pub controllers: bool,
}

fn slot(cause: Cause) -> usize {
    cause as usize
}

impl FleetState {
    /// An empty fleet.
    pub fn new() -> FleetState {
        FleetState::from_data(FleetData::default())
    }

    /// Builds the indices over `data`.
    pub fn from_data(data: FleetData) -> FleetState {
        let slots = Cause::ALL.iter().map(|c| slot(*c)).max().unwrap_or(0) + 1;
        let mut state = FleetState {
            online: 0,
            busy: HashMap::new(),
            by_cause: vec![BTreeSet::new(); slots],
            data,
            changes: Changes::default(),
        };
        for (name, host) in &state.data.hosts {
            if host.online {
                state.online += 1;
                for seen in &host.seen {
                    if let Some(set) = state.by_cause.get_mut(slot(seen.cause)) {
                        set.insert((seen.at, name.clone()));
                    }
                }
            }
        }
        for action in state.data.in_flight.values() {
            *state.busy.entry(action.host.clone()).or_default() += 1;
        }
        state
    }

    /// The state without its indices.
    pub fn data(&self) -> &FleetData {
        &self.data
    }

    /// One host.
    pub fn host(&self, name: &str) -> Option<&HostState> {
        self.data.hosts.get(name)
    }

    /// How many hosts are online.
    pub fn online_hosts(&self) -> usize {
        self.online
    }

    /// How many hosts have at least one action in flight.
    pub fn busy_hosts(&self) -> usize {
        self.busy.len()
    }

    /// Whether `host` has an action in flight.
    pub fn is_busy(&self, host: &str) -> bool {
        self.busy.contains_key(host)
    }

    /// When `policy` last acted on `host`.
    pub fn last_acted(&self, host: &str, policy: &str) -> Option<UnixMs> {
        let host = self.data.hosts.get(host)?;
        host.acted.iter().find(|a| a.policy == policy).map(|a| a.at)
    }

    /// Attempts on `host` for `cause` that still count at `now`, and whether their exhaustion
    /// was escalated. They stop counting once the host has been healthy for the window.
    pub fn attempts(&self, host: &str, policy: &str, now: UnixMs) -> (u32, bool) {
        let Some(host) = self.data.hosts.get(host) else {
            return (0, false);
        };
        match host.attempts.iter().find(|a| a.policy == policy) {
            Some(a) if !attempts_reset(a, host.healthy_since, now) => (a.count, a.escalated),
            _ => (0, false),
        }
    }

    /// Counts the online hosts that showed `cause` at or after `since`, stopping at
    /// `stop_at`. Also returns the time of the last host counted: when the count reached
    /// `stop_at`, the storm lasts at least until that time plus the window.
    pub fn hosts_with_cause_since(
        &self,
        cause: Cause,
        since: UnixMs,
        stop_at: usize,
    ) -> (usize, Option<UnixMs>) {
        let Some(set) = self.by_cause.get(slot(cause)) else {
            return (0, None);
        };
        let mut count = 0;
        let mut oldest = None;
        for (at, _) in set.range((since, String::new())..).rev().take(stop_at) {
            count += 1;
            oldest = Some(*at);
        }
        (count, oldest)
    }

    /// How many online hosts showed `cause` at any time: an upper bound of
    /// [`FleetState::hosts_with_cause_since`] that costs nothing, which rules out a storm on
    /// most decisions without counting.
    pub fn hosts_with_cause(&self, cause: Cause) -> usize {
        self.by_cause.get(slot(cause)).map_or(0, BTreeSet::len)
    }

    /// The storm episode of `cause`, if one was escalated.
    pub fn storm(&self, cause: Cause) -> Option<&StormEpisode> {
        self.data.storms.get(&cause)
    }

    /// The host's agent connected to `controller` (with the labels of its Hello).
    pub fn host_online(&mut self, name: &str, labels: BTreeMap<String, String>, controller: &str) {
        self.changes.hosts.insert(name.to_owned());
        let host = self.data.hosts.entry(name.to_owned()).or_default();
        host.labels = labels;
        controller.clone_into(&mut host.controller);
        if !host.online {
            host.online = true;
            self.mark_online(name);
        }
    }

    /// The host's agent disconnected: it no longer counts in the fleet's size or storms.
    pub fn host_offline(&mut self, name: &str) {
        let Some(host) = self.data.hosts.get_mut(name) else {
            return;
        };
        host.controller.clear();
        self.changes.hosts.insert(name.to_owned());
        self.host_offline_quietly(name);
    }

    /// A finding (new, updated or resolved) arrived at `controller` at `now`. Its host is
    /// online: it spoke.
    pub fn record_finding(&mut self, f: &Finding, now: UnixMs, controller: &str) {
        if !self.data.hosts.get(&f.host).is_some_and(|h| h.online) {
            let labels = self
                .data
                .hosts
                .get(&f.host)
                .map(|h| h.labels.clone())
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| f.labels.clone());
            self.host_online(&f.host, labels, controller);
        }
        let Some(host) = self.data.hosts.get_mut(&f.host) else {
            return;
        };
        self.changes.hosts.insert(f.host.clone());
        if f.resolved {
            host.open_findings.remove(&f.id);
            if host.open_findings.is_empty() && host.healthy_since.is_none() {
                host.healthy_since = Some(now);
            }
            return;
        }
        if let Some(since) = host.healthy_since.take() {
            // The host falls ill again: forget the attempts its healthy spell has reset.
            host.attempts
                .retain(|a| !attempts_reset(a, Some(since), now));
        }
        host.open_findings.insert(f.id.clone());
        // The agent's clock may run ahead; a sighting is never in the controller's future.
        let at = f.last_seen.min(now);
        let set = self.by_cause.get_mut(slot(f.cause));
        match host.seen.iter_mut().find(|s| s.cause == f.cause) {
            Some(seen) if seen.at >= at => {}
            Some(seen) => {
                if let Some(set) = set {
                    set.remove(&(seen.at, f.host.clone()));
                    set.insert((at, f.host.clone()));
                }
                seen.at = at;
            }
            None => {
                host.seen.push(Seen { cause: f.cause, at });
                if let Some(set) = set {
                    set.insert((at, f.host.clone()));
                }
            }
        }
    }

    /// `policy` acted on `host` at `now` (starts its cooldown).
    pub fn record_acted(&mut self, host: &str, policy: &str, now: UnixMs) {
        self.changes.hosts.insert(host.to_owned());
        let host = self.data.hosts.entry(host.to_owned()).or_default();
        match host.acted.iter_mut().find(|a| a.policy == policy) {
            Some(acted) => acted.at = now,
            None => host.acted.push(Acted {
                policy: policy.to_owned(),
                at: now,
            }),
        }
    }

    /// A storm of `cause` was escalated (`escalated`) or found still on at `now`.
    pub fn record_storm(&mut self, cause: Cause, escalated: bool, now: UnixMs) {
        self.changes.storms = true;
        match self.data.storms.get_mut(&cause) {
            Some(episode) if !escalated => episode.last_seen = now,
            _ => {
                self.data.storms.insert(
                    cause,
                    StormEpisode {
                        escalated_at: now,
                        last_seen: now,
                    },
                );
            }
        }
    }

    /// The exhausted attempts of `cause` on `host` were escalated.
    pub fn record_attempts_escalated(&mut self, host: &str, policy: &str) {
        self.changes.hosts.insert(host.to_owned());
        if let Some(a) = self
            .data
            .hosts
            .get_mut(host)
            .and_then(|h| h.attempts.iter_mut().find(|a| a.policy == policy))
        {
            a.escalated = true;
        }
    }

    /// An action was sent to `host`'s agent: it is in flight and counts as an attempt.
    pub fn record_dispatched(
        &mut self,
        id: &str,
        action: InFlight,
        attempts_window: Duration,
        now: UnixMs,
    ) {
        let window_ms = u64::try_from(attempts_window.as_millis()).unwrap_or(u64::MAX);
        self.changes.hosts.insert(action.host.clone());
        self.changes.in_flight = true;
        let host = self.data.hosts.entry(action.host.clone()).or_default();
        let healthy_since = host.healthy_since;
        match host.attempts.iter_mut().find(|a| a.policy == action.policy) {
            Some(a) if attempts_reset(a, healthy_since, now) => {
                *a = Attempts {
                    cause: action.cause,
                    policy: action.policy.clone(),
                    count: 1,
                    last: now,
                    window_ms,
                    escalated: false,
                };
            }
            Some(a) => {
                a.cause = action.cause;
                a.count = a.count.saturating_add(1);
                a.last = now;
                a.window_ms = window_ms;
            }
            None => host.attempts.push(Attempts {
                cause: action.cause,
                policy: action.policy.clone(),
                count: 1,
                last: now,
                window_ms,
                escalated: false,
            }),
        }
        *self.busy.entry(action.host.clone()).or_default() += 1;
        if let Some(old) = self.data.in_flight.insert(id.to_owned(), action) {
            // The same id dispatched twice: the earlier entry is replaced, not counted twice.
            self.release(&old.host);
        }
    }

    /// The action `id` finished (whatever its outcome); returns it if it was in flight.
    pub fn record_finished(&mut self, id: &str) -> Option<InFlight> {
        let action = self.data.in_flight.remove(id)?;
        self.changes.in_flight = true;
        self.release(&action.host);
        Some(action)
    }

    /// The in-flight action `id`'s chain moved on (or changed hands).
    pub fn record_progress(&mut self, id: &str, chain: ChainState) {
        if let Some(action) = self.data.in_flight.get_mut(id) {
            action.chain = Some(chain);
            self.changes.in_flight = true;
        }
    }

    /// The open incident finding `f` belongs to, opening one when it fails and none takes it.
    /// `None` for a resolved finding of no open incident. Returns the incident's id.
    pub fn incident_for(&mut self, f: &Finding, now: UnixMs) -> Option<String> {
        self.changes.hosts.insert(f.host.clone());
        let host = self.data.hosts.entry(f.host.clone()).or_default();
        // Its own incident first (a later revision), then one of the same upstream.
        let found = host
            .incidents
            .iter()
            .position(|i| i.failing.contains(&f.id) || i.id == f.id)
            .or_else(|| host.incidents.iter().position(|i| i.takes(f)));
        if let Some(at) = found {
            return host.incidents.get(at).map(|i| i.id.clone());
        }
        if f.resolved {
            return None;
        }
        if host.incidents.len() >= MAX_INCIDENTS_PER_HOST {
            tracing::warn!(host = %f.host, finding = %f.id, key = %key_of(f), max = MAX_INCIDENTS_PER_HOST, "Too many open incidents on one host; the finding joins the newest.");
            return host.incidents.last().map(|i| i.id.clone());
        }
        host.incidents.push(Incident::open(f, now));
        Some(f.id.clone())
    }

    /// The open incident `id` of `host`, to change (the change is recorded).
    pub fn incident_mut(&mut self, host: &str, id: &str) -> Option<&mut Incident> {
        let state = self.data.hosts.get_mut(host)?;
        let incident = state.incidents.iter_mut().find(|i| i.id == id)?;
        self.changes.hosts.insert(host.to_owned());
        Some(incident)
    }

    /// The open incident `id` of `host`.
    pub fn incident(&self, host: &str, id: &str) -> Option<&Incident> {
        self.data
            .hosts
            .get(host)?
            .incidents
            .iter()
            .find(|i| i.id == id)
    }

    /// The id of the open incident of `host` whose action chain is `chain`, or which holds
    /// finding `finding`.
    pub fn incident_of(&self, host: &str, chain: Option<&str>, finding: &str) -> Option<String> {
        let incidents = &self.data.hosts.get(host)?.incidents;
        incidents
            .iter()
            .find(|i| chain.is_some() && i.chain.as_deref() == chain)
            .or_else(|| {
                incidents
                    .iter()
                    .find(|i| i.id == finding || i.failing.contains(finding))
            })
            .map(|i| i.id.clone())
    }

    /// The open incident of `host` waiting for approval `approval`.
    pub fn incident_of_approval(&self, host: &str, approval: &str) -> Option<String> {
        self.data
            .hosts
            .get(host)?
            .incidents
            .iter()
            .find(|i| i.approval.as_ref().is_some_and(|(a, _)| a == approval))
            .map(|i| i.id.clone())
    }

    /// Forgets the resolved incidents of `host`.
    pub fn drop_resolved(&mut self, host: &str) {
        if let Some(state) = self.data.hosts.get_mut(host) {
            let before = state.incidents.len();
            state.incidents.retain(Incident::is_open);
            if state.incidents.len() != before {
                self.changes.hosts.insert(host.to_owned());
            }
        }
    }

    /// Every open incident, with its host.
    pub fn incidents(&self) -> impl Iterator<Item = (&str, &Incident)> {
        self.data
            .hosts
            .iter()
            .flat_map(|(name, h)| h.incidents.iter().map(move |i| (name.as_str(), i)))
    }

    /// What changed since the last call; resets the record.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Replaces one host with what another controller wrote (keeps the indices right).
    pub fn set_host(&mut self, name: &str, host: HostState) {
        self.host_offline_quietly(name);
        let online = host.online;
        self.data.hosts.insert(name.to_owned(), host);
        if online {
            self.mark_online(name);
        }
    }

    /// Replaces the in-flight actions with what the database holds.
    pub fn set_in_flight(&mut self, in_flight: BTreeMap<String, InFlight>) {
        self.busy.clear();
        for action in in_flight.values() {
            *self.busy.entry(action.host.clone()).or_default() += 1;
        }
        self.data.in_flight = in_flight;
    }

    /// Replaces the storm episodes with what the database holds.
    pub fn set_storms(&mut self, storms: BTreeMap<Cause, StormEpisode>) {
        self.data.storms = storms;
    }

    /// Replaces the controllers' heartbeats with what the database holds.
    pub fn set_controllers(&mut self, controllers: BTreeMap<String, UnixMs>) {
        self.data.controllers = controllers;
    }

    /// `controller` is alive at `now`.
    pub fn record_heartbeat(&mut self, controller: &str, now: UnixMs) {
        self.changes.controllers = true;
        self.data.controllers.insert(controller.to_owned(), now);
    }

    /// The controllers not heard from for `silent` at `now`.
    pub fn silent_controllers(&self, now: UnixMs, silent: Duration) -> Vec<String> {
        let silent = window_ms(silent);
        self.data
            .controllers
            .iter()
            .filter(|(_, at)| now.saturating_sub(**at) >= silent)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// `controller` is gone: its hosts are offline (until they say Hello to another one).
    /// Returns them.
    pub fn forget_controller(&mut self, controller: &str) -> Vec<String> {
        self.changes.controllers = true;
        self.data.controllers.remove(controller);
        let hosts: Vec<String> = self
            .data
            .hosts
            .iter()
            .filter(|(_, h)| h.online && h.controller == controller)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &hosts {
            self.host_offline(name);
        }
        hosts
    }

    /// Takes a host out of the online indices without recording a change.
    fn host_offline_quietly(&mut self, name: &str) {
        let Some(host) = self.data.hosts.get_mut(name) else {
            return;
        };
        if host.online {
            host.online = false;
            self.online -= 1;
            for seen in &host.seen {
                if let Some(set) = self.by_cause.get_mut(slot(seen.cause)) {
                    set.remove(&(seen.at, name.to_owned()));
                }
            }
        }
    }

    /// Puts an online host into the indices.
    fn mark_online(&mut self, name: &str) {
        let Some(host) = self.data.hosts.get(name) else {
            return;
        };
        self.online += 1;
        for seen in &host.seen {
            if let Some(set) = self.by_cause.get_mut(slot(seen.cause)) {
                set.insert((seen.at, name.to_owned()));
            }
        }
    }

    fn release(&mut self, host: &str) {
        if let Some(n) = self.busy.get_mut(host) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(host);
            }
        }
    }
}

/// Attempts stop counting once the host has been healthy for their window since the last one.
fn attempts_reset(a: &Attempts, healthy_since: Option<UnixMs>, now: UnixMs) -> bool {
    let window = i64::try_from(a.window_ms).unwrap_or(i64::MAX);
    healthy_since.is_some_and(|h| h >= a.last && now.saturating_sub(h) >= window)
}

/// The window in milliseconds, for comparisons with [`UnixMs`].
pub(super) fn window_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Serialize for FleetState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(s)
    }
}

impl<'de> Deserialize<'de> for FleetState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FleetData::deserialize(d).map(FleetState::from_data)
    }
}
