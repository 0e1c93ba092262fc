//! The review UI and the operator API (issue 7), served by the controller on its own address
//! (`--http-listen`): server-rendered pages for people, JSON under `/api/v1/` for scripts and
//! the `gatemend` CLI, `/metrics` for Prometheus.
//!
//! Everything shown is read from the live fleet ([`Fleet`]) and the audit log ([`Audit`]):
//! an incident is the audit records that share its `incident` field, in seq order, so what the
//! UI shows is what the hash chain vouches for. Approving and denying go through the
//! approvals store, which decides exactly once, and on success hand the approval to the
//! dispatcher.
//!
//! Who may do what is in [`auth`]: bearer tokens for the API, a cookie session with a CSRF
//! token for the browser, roles viewer < approver < admin. Nothing changes state anonymously.

mod api;
mod approve;
pub mod auth;
mod error;
mod html;
pub mod incidents;
mod metrics;
mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, header};
use tokio::net::TcpListener;

pub use auth::{Operator, Role, Session, Sessions, Tokens, new_token, token_hash};
pub use error::{TokensError, WebError};

use crate::approvals::{Approval, Approvals};
use crate::audit::Audit;
use crate::dispatch;
use crate::ingest::{Fleet, IngestStats};

/// How long a browser session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
const COOKIE: &str = "gatemend_session";

/// What the handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    fleet: Fleet,
    audit: Option<Audit>,
    ingest: Option<Arc<IngestStats>>,
    approvals: Option<Approvals>,
    dispatch: Option<dispatch::Handle>,
    dispatch_stats: Option<Arc<dispatch::DispatchStats>>,
    health: Option<dispatch::Health>,
    tokens: Tokens,
    sessions: Sessions,
}

impl Web {
    /// A UI over `fleet` for the operators in `tokens`.
    pub fn builder(fleet: Fleet, tokens: Tokens) -> WebBuilder {
        WebBuilder {
            inner: Inner {
                fleet,
                audit: None,
                ingest: None,
                approvals: None,
                dispatch: None,
                dispatch_stats: None,
                health: None,
                tokens,
                sessions: Sessions::new(SESSION_TTL),
            },
        }
    }

    fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    fn audit(&self) -> Option<&Audit> {
        self.inner.audit.as_ref()
    }

    fn approvals(&self) -> Option<&Approvals> {
        self.inner.approvals.as_ref()
    }

    /// Hands an approval that was just decided `approved` to the dispatcher.
    async fn hand_to_dispatcher(&self, approval: &Approval) {
        match &self.inner.dispatch {
            Some(handle) => {
                if !handle.approved(approval.clone()).await {
                    tracing::error!(approval = %approval.id, "Approved, but the dispatcher has stopped; nothing is dispatched.");
                }
            }
            None => {
                tracing::warn!(approval = %approval.id, "Approved, but no dispatcher is attached; nothing is dispatched.");
            }
        }
    }

    /// The operator a bearer token names, if the request carries a valid one.
    fn bearer(&self, headers: &HeaderMap) -> Option<Operator> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.inner.tokens.operator(token.trim()).cloned()
    }

    /// The browser session the cookie names, if it is live: (id, session).
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let session = self.inner.sessions.get(&id, Instant::now())?;
        Some((id, session))
    }
}

/// Adds the optional parts to a [`Web`].
#[derive(Debug)]
pub struct WebBuilder {
    inner: Inner,
}

impl WebBuilder {
    /// Incidents, timelines and audit search read this log.
    #[must_use]
    pub fn audit(mut self, audit: Audit) -> Self {
        self.inner.audit = Some(audit);
        self
    }

    /// `/metrics` exports the link's counters.
    #[must_use]
    pub fn ingest_stats(mut self, stats: Arc<IngestStats>) -> Self {
        self.inner.ingest = Some(stats);
        self
    }

    /// Pending approvals are listed, approved and denied through this store.
    #[must_use]
    pub fn approvals(mut self, approvals: Approvals) -> Self {
        self.inner.approvals = Some(approvals);
        self
    }

    /// Approved approvals are handed to this dispatcher.
    #[must_use]
    pub fn dispatcher(mut self, handle: dispatch::Handle) -> Self {
        self.inner.dispatch = Some(handle);
        self
    }

    /// `/metrics` exports the dispatcher's counters (decisions, actions, audit latency).
    #[must_use]
    pub fn dispatch_stats(mut self, stats: Arc<dispatch::DispatchStats>) -> Self {
        self.inner.dispatch_stats = Some(stats);
        self
    }

    /// `/healthz` reports whether this dispatcher decides.
    #[must_use]
    pub fn health(mut self, health: dispatch::Health) -> Self {
        self.inner.health = Some(health);
        self
    }

    pub fn build(self) -> Web {
        Web {
            inner: Arc::new(self.inner),
        }
    }
}

/// Every route: the pages, `/api/v1/...`, `/metrics` and `/healthz`.
pub fn router(web: Web) -> Router {
    Router::new()
        .merge(pages::routes())
        .nest("/api/v1", api::routes())
        .route("/metrics", axum::routing::get(metrics::metrics))
        .route("/healthz", axum::routing::get(healthz))
        .with_state(web)
}

/// Whether this controller decides: 200 when it does, 503 with why when it does not (its
/// database is lost). Without a token, for load balancers and service monitors: it tells no
/// more than that.
async fn healthz(
    axum::extract::State(web): axum::extract::State<Web>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let Some(health) = &web.inner.health else {
        let body = serde_json::json!({ "deciding": false, "why": "no dispatcher is attached" });
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(body),
        );
    };
    let report = health.report();
    let status = if report.deciding {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::to_value(report).unwrap_or_default()),
    )
}

/// Binds `addr` (the UI must not start half-way: a taken port is an error at startup).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, WebError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })
}

/// Serves the UI on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    web: Web,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    axum::serve(listener, router(web))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| WebError::Serve { source })
}

/// A cookie's value from the request's Cookie headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A time as the UI and API take it: unix milliseconds, RFC 3339 (`2026-11-21T03:12:00Z`), or
/// the browser's `datetime-local` form (`2026-11-21T03:12`, read as UTC). None for an empty
/// field; Err with what was wrong otherwise.
pub fn parse_time(text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Some(ms));
    }
    let parsed = humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339_weak(&format!("{text}:00")));
    match parsed {
        Ok(t) => Ok(Some(
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        )),
        Err(_) => Err(format!(
            "{text:?} is not a time: give unix milliseconds or RFC 3339 (2026-11-21T03:12:00Z)"
        )),
    }
}

/// A unix-ms time for people: RFC 3339 UTC, to the second.
pub fn show_time(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else {
        return ms.to_string();
    };
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_from_every_accepted_form_and_refuse_the_rest() {
        assert_eq!(parse_time(""), Ok(None));
        assert_eq!(parse_time("1000"), Ok(Some(1000)));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(Some(1000)));
        assert_eq!(parse_time("1970-01-01T00:01"), Ok(Some(60_000)));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("\u{0}\u{ffff}").is_err());
        assert_eq!(show_time(1000), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; gatemend_session=abc".parse().expect("header"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
