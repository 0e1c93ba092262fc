//! restart_unit: `org.freedesktop.systemd1.Manager.RestartUnit(unit, "replace")`, wait for the
//! job, then verify that the unit is active and its upstream accepts a connection.
//!
//! Precheck: the unit matches the allow-list (in `admit`), exists and is not masked.

use gatemend_proto::ActionStatus;
use gatemend_proto::v1::ActionRequest;

use super::unit::{self, UnitPlan, Verb};
use super::{Facts, Recorder, Refusal, Settings};

/// The pure plan: the unit, where it must accept afterwards, how long verification waits.
pub fn plan(
    request: &ActionRequest,
    settings: &Settings,
    facts: &Facts,
) -> Result<UnitPlan, Refusal> {
    unit::plan(request, settings, facts)
}

/// RestartUnit, wait for its job (ResetFailedUnit + StartUnit once on start-limit-hit), verify.
pub async fn apply(plan: &UnitPlan, rec: &Recorder) -> (ActionStatus, String) {
    unit::apply(plan, Verb::Restart, rec).await
}
