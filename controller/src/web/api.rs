//! `/api/v1/`: JSON for everything the pages show and do. Bearer tokens only (no cookies), so
//! a browser on another site cannot make these requests on an operator's behalf.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::approve::{self, Verdict};
use super::incidents::{IncidentSummary, Summaries};
use super::{Client, Operator, Role, SignIn, Web, parse_time, retry_after_secs};
use crate::approvals::{Approval, State as ApprovalState};
use crate::audit::{Filter, Kind, Record, Verification, now_ms};

/// Records an audit search returns unless told otherwise.
pub const DEFAULT_AUDIT_LIMIT: u64 = 1_000;
/// Records an audit search (or an incident's timeline) returns at most, whatever `limit`
/// asks: each is held in memory while the answer is built, and any viewer may ask.
pub const MAX_AUDIT_LIMIT: u64 = 10_000;
/// The response header that says more records matched than the answer holds.
pub const TRUNCATED_HEADER: &str = "x-gatemend-truncated";
/// The response header that says how many records the answer could hold (the limit applied).
pub const LIMIT_HEADER: &str = "x-gatemend-limit";
/// The incidents list covers this far back unless told otherwise.
pub const DEFAULT_INCIDENT_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

pub(super) fn routes() -> axum::Router<Web> {
    axum::Router::new()
        .route("/whoami", get(whoami))
        .route("/fleet", get(fleet))
        .route("/incidents", get(incidents))
        .route("/incidents/{id}", get(incident))
        .route("/audit", get(audit))
        .route("/audit/verify", get(verify))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}", get(approval))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
}

/// An API failure: its status and a message for the operator, as `{"error": "..."}`.
#[derive(Debug)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// For a 429: how many seconds to wait (the Retry-After header).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: the client is locked out after wrong tokens, for `wait` more.
    pub fn locked_out(wait: std::time::Duration) -> ApiError {
        let secs = retry_after_secs(wait);
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "too many wrong operator tokens from this address; try again in {secs} s"
            ),
            retry_after: Some(secs),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn no_audit() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller keeps no audit log (start it with --db)",
        )
    }

    pub fn internal(what: &str, e: &dyn std::error::Error) -> ApiError {
        tracing::error!(error = %e, what, "Review UI request failed.");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The operator behind the request's bearer token, with at least `needed`. A wrong token
/// counts against the client's address; a locked-out address gets 429 whatever it presents.
pub(super) async fn authorize(
    web: &Web,
    client: &Client,
    headers: &HeaderMap,
    needed: Role,
    to: &str,
) -> Result<Operator, ApiError> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "an operator token is required: Authorization: Bearer <token>",
        )
    };
    // No token is no guess: it is not counted.
    let token = Web::bearer(headers).ok_or_else(unauthorized)?;
    let operator = match web.sign_in(client, token).await {
        Ok(operator) => operator,
        Err(SignIn::LockedOut(wait)) => return Err(ApiError::locked_out(wait)),
        Err(SignIn::Unknown) => return Err(unauthorized()),
    };
    operator
        .may(needed, to)
        .map_err(|why| ApiError::new(StatusCode::FORBIDDEN, why))?;
    Ok(operator)
}

async fn whoami(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<Operator>, ApiError> {
    authorize(&web, &client, &headers, Role::Viewer, "read")
        .await
        .map(Json)
}

/// A host as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct HostJson {
    pub host: String,
    pub online: bool,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub allowed_actions: Vec<String>,
    pub last_heartbeat_unix_ms: Option<i64>,
    pub silent_for_ms: u64,
    pub open_findings: Vec<String>,
}

pub(super) fn fleet_view(web: &Web) -> Vec<HostJson> {
    let mut hosts: Vec<HostJson> = web
        .fleet()
        .hosts()
        .into_iter()
        .map(|h| HostJson {
            host: h.host,
            online: h.online,
            labels: h.labels,
            agent_version: h.agent_version,
            allowed_actions: h.allowed_actions.iter().map(ToString::to_string).collect(),
            last_heartbeat_unix_ms: h.last_heartbeat_unix_ms,
            silent_for_ms: u64::try_from(h.silent_for.as_millis()).unwrap_or(u64::MAX),
            open_findings: h.open_findings.into_iter().collect(),
        })
        .collect();
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    hosts
}

async fn fleet(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<Vec<HostJson>>, ApiError> {
    authorize(&web, &client, &headers, Role::Viewer, "read").await?;
    Ok(Json(fleet_view(&web)))
}

/// `?host=&since=&until=` of the incidents list (times: unix ms or RFC 3339).
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct IncidentQuery {
    pub host: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// Incidents with activity in the window (the last 7 days unless `since` says otherwise).
pub(super) async fn incident_list(
    web: &Web,
    q: &IncidentQuery,
) -> Result<Vec<IncidentSummary>, ApiError> {
    let audit = web.audit().ok_or_else(ApiError::no_audit)?;
    let since = parse_time(q.since.as_deref().unwrap_or(""))
        .map_err(ApiError::bad_request)?
        .unwrap_or_else(|| now_ms().saturating_sub(DEFAULT_INCIDENT_WINDOW_MS));
    let filter = Filter {
        host: q.host.clone().filter(|h| !h.is_empty()),
        since: Some(since),
        until: parse_time(q.until.as_deref().unwrap_or("")).map_err(ApiError::bad_request)?,
        ..Filter::default()
    };
    // Streamed: only the summaries are held, however many records the window has.
    let mut summaries = Summaries::default();
    let mut records = audit.records(&filter);
    while let Some(r) = records
        .try_next()
        .await
        .map_err(|e| ApiError::internal("reading the audit log", &e))?
    {
        summaries.add(&r);
    }
    Ok(summaries.into_list())
}

async fn incidents(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Query(q): Query<IncidentQuery>,
) -> Result<Json<Vec<IncidentSummary>>, ApiError> {
    authorize(&web, &client, &headers, Role::Viewer, "read").await?;
    incident_list(&web, &q).await.map(Json)
}

/// One incident's records, in seq order: its first [`MAX_AUDIT_LIMIT`].
pub(super) async fn timeline(web: &Web, id: &str) -> Result<Found, ApiError> {
    let found = search(
        web,
        Filter {
            incident: Some(id.to_owned()),
            limit: Some(MAX_AUDIT_LIMIT),
            ..Filter::default()
        },
    )
    .await?;
    if found.records.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no audit records for incident {id:?}"),
        ));
    }
    Ok(found)
}

#[derive(Debug, Serialize)]
struct Timeline {
    incident: String,
    records: Vec<Record>,
    /// The incident has more records than the answer holds.
    truncated: bool,
}

async fn incident(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&web, &client, &headers, Role::Viewer, "read").await?;
    let found = timeline(&web, &id).await?;
    Ok(Json(
        serde_json::to_value(Timeline {
            incident: id,
            records: found.records,
            truncated: found.truncated,
        })
        .unwrap_or_default(),
    ))
}

/// `?host=&incident=&kind=&since=&until=&limit=` of an audit search.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct AuditQuery {
    pub host: Option<String>,
    pub incident: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
}

impl AuditQuery {
    /// The filter asked for, its limit clamped to [`MAX_AUDIT_LIMIT`].
    pub fn filter(&self) -> Result<Filter, ApiError> {
        let text = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let kind = match text(&self.kind) {
            Some(k) => Some(
                k.parse::<Kind>()
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
            None => None,
        };
        let limit = match text(&self.limit) {
            Some(l) => l
                .trim()
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("limit {l:?} is not a count")))?,
            None => DEFAULT_AUDIT_LIMIT,
        }
        .min(MAX_AUDIT_LIMIT);
        Ok(Filter {
            host: text(&self.host),
            incident: text(&self.incident),
            kind,
            since: parse_time(self.since.as_deref().unwrap_or(""))
                .map_err(ApiError::bad_request)?,
            until: parse_time(self.until.as_deref().unwrap_or(""))
                .map_err(ApiError::bad_request)?,
            limit: Some(limit),
        })
    }
}

/// The first records of a search, at most its limit.
#[derive(Debug)]
pub(super) struct Found {
    pub records: Vec<Record>,
    /// The limit applied (the one asked for, clamped).
    pub limit: u64,
    /// More records matched than `records` holds.
    pub truncated: bool,
}

/// Runs `filter` asking for one record past its limit, to tell whether there were more.
async fn search(web: &Web, mut filter: Filter) -> Result<Found, ApiError> {
    let audit = web.audit().ok_or_else(ApiError::no_audit)?;
    let limit = filter.limit.unwrap_or(MAX_AUDIT_LIMIT).min(MAX_AUDIT_LIMIT);
    filter.limit = Some(limit + 1);
    let mut records = audit
        .query(&filter)
        .await
        .map_err(|e| ApiError::internal("reading the audit log", &e))?;
    let keep = usize::try_from(limit).unwrap_or(usize::MAX);
    let truncated = records.len() > keep;
    records.truncate(keep);
    Ok(Found {
        records,
        limit,
        truncated,
    })
}

pub(super) async fn audit_search(web: &Web, q: &AuditQuery) -> Result<Found, ApiError> {
    search(web, q.filter()?).await
}

/// The records as a JSON array, as before limits were clamped; whether the answer was cut
/// short, and at what limit, are in headers so that array readers need no change.
async fn audit(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    authorize(&web, &client, &headers, Role::Viewer, "read").await?;
    let found = audit_search(&web, &q).await?;
    let mut response = Json(found.records).into_response();
    let h = response.headers_mut();
    h.insert(LIMIT_HEADER, HeaderValue::from(found.limit));
    h.insert(
        TRUNCATED_HEADER,
        HeaderValue::from_static(if found.truncated { "true" } else { "false" }),
    );
    Ok(response)
}

/// Recomputes the chain (reads every record: admins only).
async fn verify(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(
        &web,
        &client,
        &headers,
        Role::Admin,
        "verify the audit chain",
    )
    .await?;
    let audit = web.audit().ok_or_else(ApiError::no_audit)?;
    let verification = audit
        .verify()
        .await
        .map_err(|e| ApiError::internal("verifying the audit log", &e))?;
    Ok(Json(match verification {
        Verification::Intact { records } => {
            serde_json::json!({ "intact": true, "records": records })
        }
        Verification::Broken(broken) => {
            serde_json::json!({ "intact": false, "seq": broken.seq, "why": broken.why })
        }
    }))
}

/// `?state=pending|approved|denied|expired|all` (default pending).
#[derive(Debug, Default, Deserialize)]
struct ApprovalsQuery {
    state: Option<String>,
}

async fn approvals(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Query(q): Query<ApprovalsQuery>,
) -> Result<Json<Vec<Approval>>, ApiError> {
    authorize(&web, &client, &headers, Role::Viewer, "read").await?;
    let state = match q.state.as_deref().unwrap_or("pending") {
        "pending" => Some(ApprovalState::Pending),
        "approved" => Some(ApprovalState::Approved),
        "denied" => Some(ApprovalState::Denied),
        "expired" => Some(ApprovalState::Expired),
        "all" => None,
        other => {
            return Err(ApiError::bad_request(format!(
                "state {other:?}: expected pending, approved, denied, expired or all"
            )));
        }
    };
    approve::list(&web, state).await.map(Json)
}

async fn approval(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Approval>, ApiError> {
    authorize(&web, &client, &headers, Role::Viewer, "read").await?;
    approve::get(&web, &id).await.map(Json)
}

/// The body of approve and deny.
#[derive(Debug, Default, Deserialize)]
pub struct DecideBody {
    #[serde(default)]
    pub reason: String,
}

async fn approve(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<DecideBody>>,
) -> Result<Json<Approval>, ApiError> {
    decide(web, client, headers, id, body, Verdict::Approve).await
}

async fn deny(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<DecideBody>>,
) -> Result<Json<Approval>, ApiError> {
    decide(web, client, headers, id, body, Verdict::Deny).await
}

async fn decide(
    web: Web,
    client: Client,
    headers: HeaderMap,
    id: String,
    body: Option<Json<DecideBody>>,
    verdict: Verdict,
) -> Result<Json<Approval>, ApiError> {
    // Authenticated first: an anonymous caller learns nothing, not even what the body lacks.
    let operator = authorize(&web, &client, &headers, Role::Viewer, "read").await?;
    let reason = body.map(|Json(b)| b.reason).unwrap_or_default();
    approve::decide(&web, &operator, &id, verdict, &reason)
        .await
        .map(Json)
}
