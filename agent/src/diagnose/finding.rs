//! A finding as the agent reports it: on the wire (`gatemend.v1.Finding`) and as JSON
//! (`gatemend-agent diagnose --json`), the shape `gatemend policy explain` reads (see the
//! controller's `decide/finding.rs`).

use std::collections::BTreeMap;

use gatemend_proto::v1;
use gatemend_proto::{Cause, RootCause};
use serde::Serialize;

use super::ProposedEdit;
use crate::detect::Time;

/// One diagnosed problem: a (cause, upstream) on this host, its root cause, its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `<host>/<cause>/<upstream>#<first seen ms>`: stable across resends, new for each
    /// episode (the same problem back after it was resolved is a new finding).
    pub id: String,
    /// 1 for the first report, +1 for each update.
    pub revision: u64,
    pub host: String,
    pub cause: Cause,
    pub root_cause: RootCause,
    pub root_cause_detail: String,
    pub upstream: String,
    /// Empty when diagnosis found none.
    pub unit: String,
    /// Lines aggregated.
    pub count: u64,
    /// Milliseconds since the Unix epoch.
    pub first_seen: i64,
    pub last_seen: i64,
    pub resolved: bool,
    pub evidence: Evidence,
    /// The configuration edit diagnosis proposes to mend it (`edit` in JSON, the name
    /// `gatemend policy explain` reads).
    #[serde(rename = "edit", skip_serializing_if = "Option::is_none")]
    pub proposed_edit: Option<ProposedEdit>,
}

/// What the finding rests on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The first lines and the latest ones (bounded).
    pub lines: Vec<String>,
    /// Probe results: `unit.ActiveState` -> `failed`.
    pub probes: BTreeMap<String, String>,
}

impl Finding {
    /// The wire form.
    pub fn to_wire(&self) -> v1::Finding {
        v1::Finding {
            id: self.id.clone(),
            revision: self.revision,
            host: self.host.clone(),
            cause: self.cause as i32,
            root_cause: self.root_cause as i32,
            root_cause_detail: self.root_cause_detail.clone(),
            upstream: self.upstream.clone(),
            unit: self.unit.clone(),
            evidence: Some(v1::Evidence {
                lines: self.evidence.lines.clone(),
                probes: self.evidence.probes.clone().into_iter().collect(),
            }),
            first_seen_unix_ms: self.first_seen,
            last_seen_unix_ms: self.last_seen,
            count: self.count,
            resolved: self.resolved,
            proposed_edit: self.proposed_edit.as_ref().map(ProposedEdit::to_wire),
        }
    }
}

/// A log's wall-clock time as milliseconds since the Unix epoch, given the host's offset from
/// UTC in seconds (nginx and php-fpm write local time).
pub fn unix_ms(t: Time, utc_offset_secs: i64) -> i64 {
    let days = days_from_civil(i64::from(t.year), i64::from(t.month), i64::from(t.day));
    let secs =
        days * 86_400 + i64::from(t.hour) * 3_600 + i64::from(t.minute) * 60 + i64::from(t.second)
            - utc_offset_secs;
    secs * 1_000
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Time {
        Time {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
    }

    #[test]
    fn log_times_become_unix_milliseconds() {
        assert_eq!(unix_ms(t(1970, 1, 1, 0, 0, 0), 0), 0);
        // date -u -d '2026-11-21 01:02:03' +%s
        assert_eq!(unix_ms(t(2026, 11, 21, 1, 2, 3), 0), 1_795_222_923_000);
        assert_eq!(unix_ms(t(2024, 2, 29, 12, 0, 0), 0), 1_709_208_000_000);
        // 01:02:03 at UTC+01:00 is 00:02:03 UTC.
        assert_eq!(
            unix_ms(t(2026, 11, 21, 1, 2, 3), 3_600),
            1_795_222_923_000 - 3_600_000
        );
    }
}
