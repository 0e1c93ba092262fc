//! Incidents as the audit log tells them: the records that share an `incident` field (the
//! finding id), summarised for the list. Pure: records in, summaries out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::{Kind, Record};

/// One incident in the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentSummary {
    /// The finding id.
    pub incident: String,
    /// The host it happened on (of its first record that names one).
    pub host: Option<String>,
    /// Its first and latest records' times (unix ms).
    pub first_at: i64,
    pub last_at: i64,
    /// How many records it has.
    pub records: u64,
    /// The policy that decided (the latest one named).
    pub policy: Option<String>,
    /// Where it stands: the kind of its latest record that moves an incident along.
    pub status: Kind,
    /// The root cause the finding reported, when its body names one.
    pub root_cause: Option<String>,
    /// Its lifecycle stage (detected, acting, awaiting_approval, held, escalated, recovering,
    /// resolved), from its latest `incident` or `resolved` record; `None` for incidents
    /// recorded before stages were.
    pub stage: Option<String>,
    /// Pages sent about it: the first and every re-notification.
    pub pages: u32,
}

/// Folds records (in seq order) into per-incident summaries, newest activity first.
#[derive(Debug, Default)]
pub struct Summaries {
    by_id: BTreeMap<String, IncidentSummary>,
}

impl Summaries {
    pub fn add(&mut self, r: &Record) {
        let Some(id) = r.incident.as_deref().filter(|i| !i.is_empty()) else {
            return;
        };
        let s = self
            .by_id
            .entry(id.to_owned())
            .or_insert_with(|| IncidentSummary {
                incident: id.to_owned(),
                host: None,
                first_at: r.at,
                last_at: r.at,
                records: 0,
                policy: None,
                status: r.kind,
                root_cause: None,
                stage: None,
                pages: 0,
            });
        s.records += 1;
        s.first_at = s.first_at.min(r.at);
        s.last_at = s.last_at.max(r.at);
        if s.host.is_none() {
            s.host.clone_from(&r.host);
        }
        if r.policy.is_some() {
            s.policy.clone_from(&r.policy);
        }
        if r.kind == Kind::Finding
            && let Some(root) = r.body.get("root_cause").and_then(|v| v.as_str())
        {
            s.root_cause = Some(root.to_owned());
        }
        match r.kind {
            Kind::Incident => {
                if let Some(to) = r.body.get("to").and_then(|v| v.as_str()) {
                    s.stage = Some(to.to_owned());
                }
            }
            Kind::Resolved => s.stage = Some("resolved".to_owned()),
            Kind::Escalated | Kind::Renotified => s.pages += 1,
            _ => {}
        }
        // A later finding revision or a step does not hide that it was resolved or escalated
        // only if nothing moved after it; the latest telling record wins.
        if moves(r.kind) {
            s.status = r.kind;
        }
    }

    /// The summaries, latest activity first.
    pub fn into_list(self) -> Vec<IncidentSummary> {
        let mut list: Vec<IncidentSummary> = self.by_id.into_values().collect();
        list.sort_by(|a, b| b.last_at.cmp(&a.last_at).then(a.incident.cmp(&b.incident)));
        list
    }
}

/// Kinds that say where an incident stands (the others are details of a step).
fn moves(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::ActionStep | Kind::PolicyReloaded | Kind::PolicyRejected | Kind::Incident
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, at: i64, kind: Kind, incident: Option<&str>) -> Record {
        Record {
            seq,
            at,
            kind,
            host: Some("web1".into()),
            incident: incident.map(Into::into),
            actor: "controller".into(),
            policy: (kind == Kind::Decision).then(|| "restart".into()),
            policy_digest: None,
            body: if kind == Kind::Finding {
                serde_json::json!({ "root_cause": "service_down" })
            } else {
                serde_json::Value::Null
            },
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn records_group_by_incident_with_the_latest_activity_first() {
        let mut s = Summaries::default();
        for r in [
            record(1, 10, Kind::Finding, Some("f1")),
            record(2, 11, Kind::Decision, Some("f1")),
            record(3, 12, Kind::HostOnline, None),
            record(4, 20, Kind::Finding, Some("f2")),
            record(5, 30, Kind::ActionResult, Some("f1")),
            record(6, 31, Kind::ActionStep, Some("f1")),
        ] {
            s.add(&r);
        }
        let list = s.into_list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].incident, "f1");
        assert_eq!(list[0].records, 4);
        assert_eq!((list[0].first_at, list[0].last_at), (10, 31));
        assert_eq!(list[0].status, Kind::ActionResult);
        assert_eq!(list[0].policy.as_deref(), Some("restart"));
        assert_eq!(list[0].root_cause.as_deref(), Some("service_down"));
        assert_eq!(list[1].incident, "f2");
        assert_eq!(list[1].status, Kind::Finding);
    }
}
