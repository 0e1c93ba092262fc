//! The policy file format, exactly as written: what serde reads from the YAML text.
//!
//! Structure and YAML types are checked here, by serde, with `deny_unknown_fields`; ids,
//! durations, globs and ranges stay text or plain numbers so that the second pass
//! ([`super::validate`]) can report every bad value of a file instead of stopping at the
//! first, as serde would.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A policy file: one `policies:` list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    pub policies: Vec<PolicySpec>,
}

/// One policy as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicySpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    pub mode: String,
    #[serde(default)]
    pub actions: Vec<String>,
    pub verify: Option<VerifySpec>,
    pub guards: Option<GuardsSpec>,
    pub escalate: Option<EscalateSpec>,
    pub approval: Option<ApprovalSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalSpec {
    pub expires: DurationText,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MatchSpec {
    pub cause: Vec<String>,
    pub root_cause: Option<Vec<String>>,
    pub unit: Option<Vec<String>>,
    pub hosts: Option<HostsSpec>,
    pub threshold: Option<ThresholdSpec>,
    pub edit: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostsSpec {
    pub names: Option<Vec<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ThresholdSpec {
    pub count: u64,
    pub within: DurationText,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifySpec {
    pub timeout: DurationText,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GuardsSpec {
    pub cooldown: Option<DurationText>,
    pub max_attempts: Option<u64>,
    pub attempts_window: Option<DurationText>,
    pub fleet: Option<FleetSpec>,
    pub storm: Option<StormSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FleetSpec {
    pub max_concurrent: Option<u64>,
    pub max_percent: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StormSpec {
    pub hosts_percent: u64,
    /// Absent: [`super::model::DEFAULT_STORM_MIN_HOSTS`].
    pub min_hosts: Option<u64>,
    pub within: DurationText,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EscalateSpec {
    pub webhook: Option<String>,
    pub renotify: Option<DurationText>,
}

/// A duration's text, parsed in the second pass. Its own type so that a list or a mapping
/// where a duration belongs is refused with "expected a duration such as 30s". (A plain
/// number, `cooldown: 300`, arrives as the text `300` and is refused by the second pass as "a
/// number without a unit".)
#[derive(Debug)]
pub(super) struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m or 1h30m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_owned()))
            }
        }
        d.deserialize_str(Text)
    }
}
