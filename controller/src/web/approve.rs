//! Approving and denying, shared by the API and the pages: the role, a reason, the store's
//! exactly-once decision, the audit record naming the operator, then the dispatcher.

use axum::http::StatusCode;

use super::api::ApiError;
use super::{Operator, Role, Web};
use crate::approvals::{Approval, ApprovalError, State};
use crate::audit::{Kind, NewRecord, now_ms};

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    fn verb(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

pub(super) fn store_error(e: ApprovalError) -> ApiError {
    match e {
        ApprovalError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        ApprovalError::Expired { .. } | ApprovalError::AlreadyDecided { .. } => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        ApprovalError::NoReason => ApiError::bad_request(e.to_string()),
        ApprovalError::Db(_)
        | ApprovalError::Migrate(_)
        | ApprovalError::Finding { .. }
        | ApprovalError::Collision { .. } => ApiError::internal("the approvals store", &e),
    }
}

fn no_store() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the controller keeps no approvals (start it with --db)",
    )
}

/// Pending approvals (or all, newest first).
pub(super) async fn list(web: &Web, state: Option<State>) -> Result<Vec<Approval>, ApiError> {
    let store = web.approvals().ok_or_else(no_store)?;
    store.list(state).await.map_err(store_error)
}

pub(super) async fn get(web: &Web, id: &str) -> Result<Approval, ApiError> {
    let store = web.approvals().ok_or_else(no_store)?;
    store
        .get(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no approval {id}")))
}

/// Decides approval `id` as `operator`. Exactly one of concurrent deciders gets Ok; an
/// approved one is then handed to the dispatcher.
pub(super) async fn decide(
    web: &Web,
    operator: &Operator,
    id: &str,
    verdict: Verdict,
    reason: &str,
) -> Result<Approval, ApiError> {
    operator
        .may(Role::Approver, verdict.verb())
        .map_err(|why| ApiError::new(StatusCode::FORBIDDEN, why))?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::bad_request(format!(
            "a reason is required to {} an approval",
            verdict.verb()
        )));
    }
    let store = web.approvals().ok_or_else(no_store)?;
    let now = now_ms();
    let decided = match verdict {
        Verdict::Approve => store.approve(id, &operator.name, reason, now).await,
        Verdict::Deny => store.deny(id, &operator.name, reason, now).await,
    }
    .map_err(store_error)?;
    tracing::info!(approval = %decided.id, host = %decided.host, incident = %decided.incident, operator = %operator.name, verdict = verdict.verb(), reason, "Approval decided.");
    let kind = match verdict {
        Verdict::Approve => Kind::Approved,
        Verdict::Deny => Kind::Denied,
    };
    let record = NewRecord::new(now, kind, operator.name.clone())
        .host(decided.host.clone())
        .incident(decided.incident.clone())
        .policy(decided.policy.clone(), decided.policy_digest.clone())
        .body(serde_json::json!({
            "approval": decided.id,
            "actions": decided.actions,
            "reason": reason,
            "role": operator.role,
        }));
    let audited = match web.audit() {
        Some(audit) => audit.append(record).await.map(|_| ()),
        // Approvals live in the audit log's database: there is no store without it.
        None => Ok(()),
    };
    if let Err(e) = &audited {
        tracing::error!(approval = %decided.id, verdict = verdict.verb(), error = %e, "Could not audit an approval decision.");
    }
    if verdict == Verdict::Deny {
        // A denial runs nothing; it stands (the store holds it, with the operator's name),
        // and only its copy in the chain is missing, which the log above says.
        return Ok(decided);
    }
    // An approval the audit log does not hold never runs: it goes back to pending.
    let settled = store
        .settle(&decided.id, audited.is_ok())
        .await
        .map_err(store_error)?;
    if let Err(e) = audited {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "approval {} could not be written to the audit log ({e}); it is pending again \
                 and nothing runs: approve it again once the audit log is back",
                decided.id
            ),
        ));
    }
    web.hand_to_dispatcher(&settled).await;
    Ok(settled)
}
