//! escalate: nothing runs on the host; the controller notifies a human.
//!
//! It answers Succeeded (Planned in a dry run) with one step that says nothing ran, rather
//! than Refused: the host did all an escalation asks of it, and a Refused would read in the
//! audit as the host declining, which it did not.

use std::time::Instant;

use gatemend_proto::ActionStatus;
use gatemend_proto::v1::ActionRequest;
use serde::Serialize;

use super::Recorder;

/// Escalate touches nothing; the plan only names the finding it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EscalatePlan {
    pub finding_id: String,
}

impl EscalatePlan {
    pub(super) fn lines(&self) -> Vec<String> {
        vec!["nothing runs on this host; the controller notifies a human".to_owned()]
    }
}

pub fn plan(request: &ActionRequest) -> EscalatePlan {
    EscalatePlan {
        finding_id: request.finding_id.clone(),
    }
}

pub fn apply(plan: &EscalatePlan, rec: &Recorder) -> (ActionStatus, String) {
    rec.record("do", Instant::now(), true, plan.lines().join("\n"));
    (
        ActionStatus::Succeeded,
        "escalated: nothing ran on the host; the controller notifies".to_owned(),
    )
}
