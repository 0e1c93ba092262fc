//! start_unit: `org.freedesktop.systemd1.Manager.StartUnit(unit, "replace")` for a unit that
//! is stopped or failed; when systemd refuses because the start limit was hit,
//! `ResetFailedUnit` then StartUnit, once. Verified as restart_unit is.

use gatemend_proto::ActionStatus;
use gatemend_proto::v1::ActionRequest;

use super::unit::{self, UnitPlan, Verb};
use super::{Facts, Recorder, Refusal, Settings};

/// The pure plan: the same checks and verification as restart_unit.
pub fn plan(
    request: &ActionRequest,
    settings: &Settings,
    facts: &Facts,
) -> Result<UnitPlan, Refusal> {
    unit::plan(request, settings, facts)
}

/// StartUnit, wait for its job (ResetFailedUnit + StartUnit once on start-limit-hit), verify.
pub async fn apply(plan: &UnitPlan, rec: &Recorder) -> (ActionStatus, String) {
    unit::apply(plan, Verb::Start, rec).await
}
