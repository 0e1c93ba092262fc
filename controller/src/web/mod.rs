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
//! Wrong tokens are limited per client address ([`lockout`]); who the client is, and whether
//! it came through TLS, is in [`client`].

mod api;
mod approve;
pub mod auth;
pub mod client;
mod error;
mod html;
pub mod incidents;
pub mod lockout;
mod metrics;
mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, header};
use tokio::net::TcpListener;

pub use auth::{Operator, Role, Session, Sessions, Tokens, new_token, token_hash};
pub use client::{Client, Transport};
pub use error::{TokensError, WebError};
pub use lockout::LoginLimits;

use crate::approvals::{Approval, Approvals};
use crate::audit::{Audit, Kind, NewRecord, now_ms};
use crate::dispatch;
use crate::ingest::{Fleet, IngestStats};

/// How long a browser session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name over plain HTTP.
const COOKIE: &str = "gatemend_session";
/// Its name when the browser came through TLS: a `__Host-` cookie is only taken by a browser
/// when it is `Secure`, has `Path=/` and no `Domain`, so neither a plain-HTTP page nor a
/// sibling domain can plant one.
const SECURE_COOKIE: &str = "__Host-gatemend_session";

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
    transport: Transport,
    logins: Mutex<lockout::Limiter>,
    login_stats: LoginStats,
}

/// Wrong tokens and the lockouts they caused, for `/metrics`.
#[derive(Debug, Default)]
struct LoginStats {
    failures: AtomicU64,
    lockouts: AtomicU64,
    refused: AtomicU64,
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
                transport: Transport::default(),
                logins: Mutex::new(lockout::Limiter::new(LoginLimits::default())),
                login_stats: LoginStats::default(),
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

    /// The bearer token a request presents, if any.
    fn bearer(headers: &HeaderMap) -> Option<&str> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    /// The operator holding `token`, as `client` presents it: Err(Refused) while the client is
    /// locked out (before the token is looked at), Err(Unknown) for a wrong token, which
    /// counts against the client.
    async fn sign_in(&self, client: &Client, token: &str) -> Result<Operator, SignIn> {
        if let Err(wait) = self.limiter().check(client.addr, Instant::now()) {
            self.inner
                .login_stats
                .refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(SignIn::LockedOut(wait));
        }
        if let Some(operator) = self.inner.tokens.operator(token) {
            return Ok(operator.clone());
        }
        self.login_failed(client).await;
        Err(SignIn::Unknown)
    }

    /// Counts a wrong token; a lockout it brings about is logged, counted and audited.
    async fn login_failed(&self, client: &Client) {
        let stats = &self.inner.login_stats;
        stats.failures.fetch_add(1, Ordering::Relaxed);
        let failed = self.limiter().failed(client.addr, Instant::now());
        if failed.flood_began {
            tracing::warn!(
                limit = self.limits().global,
                window_s = self.limits().window.as_secs(),
                "Wrong operator tokens from many addresses: every address that fails is now locked out at its first failure."
            );
        }
        let Some(lockout) = failed.locked else {
            tracing::info!(client = %client.addr, "Wrong operator token.");
            return;
        };
        stats.lockouts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            client = %client.addr,
            failures = lockout.failures,
            scope = lockout.scope.id(),
            lockout_s = lockout.lasts.as_secs(),
            "Too many wrong operator tokens; the address is locked out."
        );
        // During a flood every failing address is locked out: those are counted and logged,
        // but only the lockouts of single addresses (a few a minute at most) go to the audit.
        if lockout.scope == lockout::Scope::Flood {
            return;
        }
        if let Some(audit) = self.audit() {
            let record = NewRecord::new(now_ms(), Kind::LoginLockout, "controller").body(
                serde_json::json!({
                    "client": client.addr.to_string(),
                    "failures": lockout.failures,
                    "window_s": self.limits().window.as_secs(),
                    "lockout_s": lockout.lasts.as_secs(),
                }),
            );
            if let Err(e) = audit.append(record).await {
                tracing::error!(client = %client.addr, error = %e, "Could not audit a login lockout.");
            }
        }
    }

    fn limiter(&self) -> MutexGuard<'_, lockout::Limiter> {
        match self.inner.logins.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn limits(&self) -> LoginLimits {
        self.limiter().limits()
    }

    /// The browser session the client's cookie names, if it is live: (id, session). Over TLS
    /// only the `__Host-` cookie counts, over plain HTTP only the plain one.
    fn session(&self, client: &Client, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, cookie_name(client))?;
        let session = self.inner.sessions.get(&id, Instant::now())?;
        Some((id, session))
    }
}

/// Why a token did not sign an operator in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignIn {
    /// The client is locked out for this long.
    LockedOut(Duration),
    /// No operator holds the token.
    Unknown,
}

/// The session cookie's name for this client.
fn cookie_name(client: &Client) -> &'static str {
    if client.secure { SECURE_COOKIE } else { COOKIE }
}

/// The Set-Cookie value that starts (Some(id)) or ends (None) the client's session.
fn session_cookie(client: &Client, id: Option<&str>) -> String {
    let (value, max_age) = match id {
        Some(id) => (id, SESSION_TTL.as_secs()),
        None => ("", 0),
    };
    let secure = if client.secure { "; Secure" } else { "" };
    format!(
        "{name}={value}{secure}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}",
        name = cookie_name(client)
    )
}

/// Whole seconds to wait, rounded up (a Retry-After of 0 would invite a retry too soon).
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
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

    /// How the UI is reached: TLS in front of it, trusted proxies.
    #[must_use]
    pub fn transport(mut self, transport: Transport) -> Self {
        self.inner.transport = transport;
        self
    }

    /// The failed-login limits (the defaults unless a test needs others).
    #[must_use]
    pub fn login_limits(mut self, limits: LoginLimits) -> Self {
        self.inner.logins = Mutex::new(lockout::Limiter::new(limits));
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
    // With the peer's address: failed logins are counted per client.
    let app = router(web).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
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

    #[test]
    fn over_tls_the_cookie_is_host_prefixed_and_secure_and_over_http_as_before() {
        let addr = std::net::IpAddr::from([127, 0, 0, 1]);
        let tls = Client { addr, secure: true };
        let plain = Client {
            addr,
            secure: false,
        };
        assert_eq!(
            session_cookie(&tls, Some("abc")),
            "__Host-gatemend_session=abc; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200"
        );
        assert_eq!(
            session_cookie(&plain, Some("abc")),
            "gatemend_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200"
        );
        assert_eq!(
            session_cookie(&plain, None),
            "gatemend_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
        // Each transport reads only its own cookie.
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "gatemend_session=plain".parse().expect("header"),
        );
        assert_eq!(cookie(&h, cookie_name(&tls)), None);
        assert_eq!(cookie(&h, cookie_name(&plain)).as_deref(), Some("plain"));
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(300)), 300);
    }
}
