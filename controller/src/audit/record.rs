//! The audit record: what was appended (`NewRecord`), what the log holds (`Record`), what a
//! query asks for (`Filter`).

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What a record is about. Stored as its snake_case name, which is also what the hash covers,
/// so a name must never change once records carry it (add new kinds instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A finding arrived from an agent.
    Finding,
    /// The policy decided on a finding (body: the decision and its reasons).
    Decision,
    /// A decision of `await_approval` created a pending approval.
    ApprovalRequested,
    /// An operator approved a pending action.
    Approved,
    /// An operator denied a pending action.
    Denied,
    /// A pending approval expired before anyone signed off.
    Expired,
    /// An action request was sent to the host's agent.
    ActionDispatched,
    /// One step of an action ran (body: its output).
    ActionStep,
    /// An action finished (body: its outcome).
    ActionResult,
    /// The agent checked whether the action fixed the fault.
    Verification,
    /// The incident is resolved.
    Resolved,
    /// The incident moved to another stage of its lifecycle (body: from, to, why).
    Incident,
    /// A human was paged about the incident, again (body: why, the page's number).
    Renotified,
    /// The incident was escalated to a human.
    Escalated,
    /// The controller refused to act (a guard, a storm hold, dry-run).
    Refused,
    /// A policy set was loaded or reloaded.
    PolicyReloaded,
    /// A policy set was rejected (the previous one stays in force).
    PolicyRejected,
    /// An agent connected.
    HostOnline,
    /// An agent went away.
    HostOffline,
    /// The review UI locked a client address out after failed logins (body: the address, the
    /// failures, how long).
    LoginLockout,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 20] = [
        Kind::Finding,
        Kind::Decision,
        Kind::ApprovalRequested,
        Kind::Approved,
        Kind::Denied,
        Kind::Expired,
        Kind::ActionDispatched,
        Kind::ActionStep,
        Kind::ActionResult,
        Kind::Verification,
        Kind::Resolved,
        Kind::Incident,
        Kind::Renotified,
        Kind::Escalated,
        Kind::Refused,
        Kind::PolicyReloaded,
        Kind::PolicyRejected,
        Kind::HostOnline,
        Kind::HostOffline,
        Kind::LoginLockout,
    ];

    /// The stored (and hashed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Finding => "finding",
            Kind::Decision => "decision",
            Kind::ApprovalRequested => "approval_requested",
            Kind::Approved => "approved",
            Kind::Denied => "denied",
            Kind::Expired => "expired",
            Kind::ActionDispatched => "action_dispatched",
            Kind::ActionStep => "action_step",
            Kind::ActionResult => "action_result",
            Kind::Verification => "verification",
            Kind::Resolved => "resolved",
            Kind::Incident => "incident",
            Kind::Renotified => "renotified",
            Kind::Escalated => "escalated",
            Kind::Refused => "refused",
            Kind::PolicyReloaded => "policy_reloaded",
            Kind::PolicyRejected => "policy_rejected",
            Kind::HostOnline => "host_online",
            Kind::HostOffline => "host_offline",
            Kind::LoginLockout => "login_lockout",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a record kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit record kind {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// A record to append; the store assigns `seq`, `prev_hash` and `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRecord {
    /// When it happened, milliseconds since the Unix epoch (the caller's clock).
    pub at: i64,
    /// What it is about.
    pub kind: Kind,
    /// The host concerned, if any.
    pub host: Option<String>,
    /// The incident (the finding id) it belongs to, if any.
    pub incident: Option<String>,
    /// Who: `controller`, or an operator's name.
    pub actor: String,
    /// The policy that decided, if any.
    pub policy: Option<String>,
    /// The digest of the policy file in force, if any.
    pub policy_digest: Option<String>,
    /// The details (evidence, decision, step output ...).
    pub body: serde_json::Value,
}

impl NewRecord {
    /// A record of `kind` by `actor` at `at` (unix ms), with no host, incident, policy or body.
    pub fn new(at: i64, kind: Kind, actor: impl Into<String>) -> Self {
        NewRecord {
            at,
            kind,
            host: None,
            incident: None,
            actor: actor.into(),
            policy: None,
            policy_digest: None,
            body: serde_json::Value::Null,
        }
    }

    /// Like [`NewRecord::new`], stamped with the system clock.
    pub fn now(kind: Kind, actor: impl Into<String>) -> Self {
        NewRecord::new(now_ms(), kind, actor)
    }

    /// Sets the host.
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Sets the incident (finding id).
    #[must_use]
    pub fn incident(mut self, incident: impl Into<String>) -> Self {
        self.incident = Some(incident.into());
        self
    }

    /// Sets the policy name and the digest of its file.
    #[must_use]
    pub fn policy(mut self, name: impl Into<String>, digest: impl Into<String>) -> Self {
        self.policy = Some(name.into());
        self.policy_digest = Some(digest.into());
        self
    }

    /// Sets the details.
    #[must_use]
    pub fn body(mut self, body: serde_json::Value) -> Self {
        self.body = body;
        self
    }
}

/// One record of the log, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the chain: 1, 2, 3 ... with no gaps.
    pub seq: i64,
    /// When it happened, milliseconds since the Unix epoch.
    pub at: i64,
    /// What it is about.
    pub kind: Kind,
    /// The host concerned, if any.
    pub host: Option<String>,
    /// The incident (finding id), if any.
    pub incident: Option<String>,
    /// Who: `controller`, or an operator's name.
    pub actor: String,
    /// The policy that decided, if any.
    pub policy: Option<String>,
    /// The digest of the policy file in force, if any.
    pub policy_digest: Option<String>,
    /// The details.
    pub body: serde_json::Value,
    /// The hash of record `seq - 1` (64 zeros for record 1), lowercase hex.
    pub prev_hash: String,
    /// This record's hash, lowercase hex (see the module docs for what it covers).
    pub hash: String,
}

/// Which records a query returns; every field that is set must match. Results are in `seq` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this host.
    pub host: Option<String>,
    /// Only this incident.
    pub incident: Option<String>,
    /// Only records at or after this time (unix ms).
    pub since: Option<i64>,
    /// Only records before this time (unix ms).
    pub until: Option<i64>,
    /// Only this kind.
    pub kind: Option<Kind>,
    /// At most this many records (the first ones in `seq` order).
    pub limit: Option<u64>,
}

/// The system clock in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_match_serde() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert!("Finding".parse::<Kind>().is_err());
    }
}
