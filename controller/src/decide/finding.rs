//! The finding as the decision engine sees it, and as JSON (`gatemend-agent diagnose --json`,
//! `gatemend policy explain FINDING.json`).
//!
//! It mirrors the wire `gatemend.v1.Finding` with snake_case ids and times in milliseconds
//! since the Unix epoch:
//!
//! ```json
//! {
//!   "id": "web-1/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock",
//!   "host": "web-1",
//!   "cause": "upstream_socket_missing",
//!   "root_cause": "service_down",
//!   "root_cause_detail": "php8.2-fpm.service is failed (Result=exit-code)",
//!   "upstream": "unix:/run/php/php8.2-fpm.sock",
//!   "unit": "php8.2-fpm.service",
//!   "count": 12,
//!   "first_seen": 1763683200000,
//!   "last_seen": 1763683230000,
//!   "labels": { "env": "prod" }
//! }
//! ```
//!
//! Required: `id`, `host`, `cause`, `first_seen`, `last_seen`. Everything else may be absent or
//! `null`: `root_cause` defaults to `unknown`, `count` to 1, `revision` to 0, `resolved` to
//! false. `first_seen_unix_ms` / `last_seen_unix_ms` (the wire names) are accepted too. Other
//! fields (`evidence`, ...) are ignored, so the agent can add to its output without breaking the
//! controller.

use std::collections::BTreeMap;

use gatemend_proto::v1;
use gatemend_proto::{Cause, ConfigKind, RootCause};
use serde::{Deserialize, Deserializer, Serialize};

use super::error::FindingError;

/// Milliseconds since the Unix epoch, the time unit of the whole decision engine.
pub type UnixMs = i64;

/// A diagnosed problem on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Unique and stable across resends.
    pub id: String,
    /// Incremented with each update of the finding.
    #[serde(default, deserialize_with = "nullable")]
    pub revision: u64,
    /// The host it was seen on.
    pub host: String,
    /// What nginx or php-fpm reported.
    pub cause: Cause,
    /// Why, as diagnosis found it.
    #[serde(default = "unknown", deserialize_with = "nullable_root_cause")]
    pub root_cause: RootCause,
    /// One line for humans.
    #[serde(default, deserialize_with = "nullable")]
    pub root_cause_detail: String,
    /// The upstream nginx tried.
    #[serde(default, deserialize_with = "nullable")]
    pub upstream: String,
    /// The systemd unit serving the upstream; empty when diagnosis found none.
    #[serde(default, deserialize_with = "nullable")]
    pub unit: String,
    /// Lines aggregated so far.
    #[serde(default = "one", deserialize_with = "nullable_count")]
    pub count: u64,
    /// First line seen.
    #[serde(alias = "first_seen_unix_ms")]
    pub first_seen: UnixMs,
    /// Latest line seen.
    #[serde(alias = "last_seen_unix_ms")]
    pub last_seen: UnixMs,
    /// The errors stopped and the probes are healthy again.
    #[serde(default, deserialize_with = "nullable")]
    pub resolved: bool,
    /// The host's labels, when the finding carries them (the fleet state's win otherwise).
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// The configuration edit diagnosis proposes to mend it, when it found one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<Edit>,
}

/// A configuration edit as diagnosis proposed it (the wire's `ConfigEdit`): one directive's
/// value in one block of one file, the diff a human approves, the hash of the file it was
/// computed against. The agent that applies it recomputes it and checks it against its own
/// allow-list; nothing here is written anywhere as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// `nginx` or `php_fpm_pool`.
    pub kind: ConfigKind,
    pub file: String,
    /// nginx: the blocks around the directive in its file, outermost first; php-fpm: the
    /// pool's name.
    pub block: Vec<String>,
    /// nginx: the blocks around the include that brings the file in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_outer: Vec<String>,
    pub directive: String,
    /// Empty when the directive is added.
    #[serde(default)]
    pub old_value: String,
    pub new_value: String,
    pub file_sha256: String,
    pub diff: String,
    #[serde(default)]
    pub why: String,
}

impl Edit {
    /// From the wire; `None` when it names no known kind of configuration or no directive.
    pub fn from_wire(e: &v1::ConfigEdit) -> Option<Edit> {
        let kind = ConfigKind::try_from(e.kind)
            .ok()
            .filter(|k| *k != ConfigKind::Unspecified)?;
        if e.file.is_empty() || e.directive.is_empty() {
            return None;
        }
        Some(Edit {
            kind,
            file: e.file.clone(),
            block: e.block.clone(),
            block_outer: e.block_outer.clone(),
            directive: e.directive.clone(),
            old_value: e.old_value.clone(),
            new_value: e.new_value.clone(),
            file_sha256: e.file_sha256.clone(),
            diff: e.diff.clone(),
            why: e.why.clone(),
        })
    }

    /// To the wire, for the ActionRequest that applies it.
    pub fn to_wire(&self) -> v1::ConfigEdit {
        v1::ConfigEdit {
            kind: self.kind as i32,
            file: self.file.clone(),
            block: self.block.clone(),
            block_outer: self.block_outer.clone(),
            directive: self.directive.clone(),
            old_value: self.old_value.clone(),
            new_value: self.new_value.clone(),
            file_sha256: self.file_sha256.clone(),
            diff: self.diff.clone(),
            why: self.why.clone(),
        }
    }

    /// `directive old -> new in FILE (block)`, one line.
    pub fn summary(&self) -> String {
        let old = if self.old_value.is_empty() {
            "(absent)"
        } else {
            &self.old_value
        };
        format!(
            "{} {old} -> {} in {} ({})",
            self.directive,
            self.new_value,
            self.file,
            self.block_outer
                .iter()
                .chain(&self.block)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" > ")
        )
    }
}

fn unknown() -> RootCause {
    RootCause::Unknown
}

fn one() -> u64 {
    1
}

fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

fn nullable_root_cause<'de, D: Deserializer<'de>>(d: D) -> Result<RootCause, D::Error> {
    Option::<RootCause>::deserialize(d).map(|r| r.unwrap_or(RootCause::Unknown))
}

fn nullable_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Option::<u64>::deserialize(d).map(|c| c.unwrap_or(1))
}

impl TryFrom<&v1::Finding> for Finding {
    type Error = FindingError;

    fn try_from(f: &v1::Finding) -> Result<Self, Self::Error> {
        let cause = Cause::try_from(f.cause)
            .ok()
            .filter(|c| *c != Cause::Unspecified)
            .ok_or_else(|| FindingError::UnknownCause {
                id: f.id.clone(),
                value: f.cause,
            })?;
        if f.host.is_empty() {
            return Err(FindingError::NoHost(f.id.clone()));
        }
        // An unknown or unspecified root cause is what diagnosis calls `unknown`.
        let root_cause = RootCause::try_from(f.root_cause)
            .ok()
            .filter(|r| *r != RootCause::Unspecified)
            .unwrap_or(RootCause::Unknown);
        Ok(Finding {
            id: f.id.clone(),
            revision: f.revision,
            host: f.host.clone(),
            cause,
            root_cause,
            root_cause_detail: f.root_cause_detail.clone(),
            upstream: f.upstream.clone(),
            unit: f.unit.clone(),
            count: f.count,
            first_seen: f.first_seen_unix_ms,
            last_seen: f.last_seen_unix_ms,
            resolved: f.resolved,
            labels: BTreeMap::new(),
            edit: f.proposed_edit.as_ref().and_then(Edit::from_wire),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_json_and_ignores_extra_fields() {
        let f: Finding = serde_json::from_str(
            r#"{"id":"f1","host":"web-1","cause":"upstream_socket_missing",
                "root_cause":"service_down","unit":"php8.2-fpm.service","count":12,
                "first_seen":1000,"last_seen":2000,"evidence":{"lines":["x"]},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(f.cause, Cause::UpstreamSocketMissing);
        assert_eq!(f.root_cause, RootCause::ServiceDown);
        assert_eq!(f.count, 12);
        assert_eq!((f.first_seen, f.last_seen), (1000, 2000));
    }

    #[test]
    fn absent_and_null_fields_take_their_defaults_and_wire_names_are_accepted() {
        let f: Finding = serde_json::from_str(
            r#"{"id":"f1","host":"web-1","cause":"upstream_refused","root_cause":null,
                "unit":null,"first_seen_unix_ms":5,"last_seen_unix_ms":6}"#,
        )
        .unwrap();
        assert_eq!(f.root_cause, RootCause::Unknown);
        assert_eq!(f.unit, "");
        assert_eq!(f.count, 1);
        assert_eq!((f.first_seen, f.last_seen), (5, 6));
    }

    #[test]
    fn an_unknown_cause_id_is_refused() {
        let err = serde_json::from_str::<Finding>(
            r#"{"id":"f1","host":"h","cause":"upstream_down","first_seen":1,"last_seen":1}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown cause `upstream_down`"),
            "{err}"
        );
    }

    #[test]
    fn converts_from_the_wire_message() {
        let wire = v1::Finding {
            id: "f".into(),
            host: "web-1".into(),
            cause: Cause::UpstreamRefused as i32,
            root_cause: RootCause::Unspecified as i32,
            count: 3,
            ..Default::default()
        };
        let f = Finding::try_from(&wire).unwrap();
        assert_eq!(f.root_cause, RootCause::Unknown);
        let bad = v1::Finding {
            cause: 999,
            ..wire.clone()
        };
        assert!(matches!(
            Finding::try_from(&bad),
            Err(FindingError::UnknownCause { value: 999, .. })
        ));
        let nohost = v1::Finding {
            host: String::new(),
            ..wire
        };
        assert_eq!(
            Finding::try_from(&nohost),
            Err(FindingError::NoHost("f".into()))
        );
    }
}
