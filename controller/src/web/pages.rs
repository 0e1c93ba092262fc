//! The server-rendered pages: login, fleet, incidents and their timelines, approvals with
//! Approve / Deny, audit search. A page without a live session redirects to the login form.
//! Every POST needs the session, its CSRF token in the form, and an Origin (or Referer) that
//! is this server.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::fmt::Write as _;
use std::time::Instant;

use super::api::{self, ApiError, AuditQuery, IncidentQuery};
use super::approve::{self, Verdict};
use super::html::{self, esc, url_seg};
use super::{Client, Session, SignIn, Web, retry_after_secs, session_cookie, show_time};
use crate::approvals::{Approval, State as ApprovalState};
use crate::audit::{Kind, Record};

pub(super) fn routes() -> axum::Router<Web> {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/fleet") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/fleet", get(fleet))
        .route("/incidents", get(incidents))
        .route("/incidents/{id}", get(incident))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}", get(approval))
        .route("/approvals/{id}/approve", post(approve_form))
        .route("/approvals/{id}/deny", post(deny_form))
        .route("/audit", get(audit))
}

/// The live session, or a redirect to the login form.
/// The Err is boxed: a response is large, and the Ok path is the common one.
fn logged_in(web: &Web, client: &Client, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    web.session(client, headers)
        .map(|(_, s)| s)
        .ok_or_else(|| Box::new(Redirect::to("/login").into_response()))
}

/// Whether a POST comes from one of our own pages: its Origin, or failing that its Referer,
/// must be this server (as the Host header names it).
fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let Some(host) = text(header::HOST) else {
        return Err("the request names no Host".into());
    };
    let ours = [format!("http://{host}"), format!("https://{host}")];
    if let Some(origin) = text(header::ORIGIN) {
        return if ours.iter().any(|o| o == origin) {
            Ok(())
        } else {
            Err(format!(
                "the form was sent from {origin}, not from this UI; refused"
            ))
        };
    }
    if let Some(referer) = text(header::REFERER) {
        return if ours.iter().any(|o| referer.starts_with(&format!("{o}/"))) {
            Ok(())
        } else {
            Err("the form was sent from another site's page; refused".into())
        };
    }
    Err("the form names neither its Origin nor its Referer; forms are accepted only from this UI's pages".into())
}

/// The session of a state-changing form, once its origin and CSRF token are checked.
fn checked_form(
    web: &Web,
    client: &Client,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Session, Box<Response>> {
    let session = logged_in(web, client, headers)?;
    if let Err(why) = same_origin(headers) {
        tracing::warn!(operator = %session.operator.name, why, "Form refused: not from this UI.");
        return Err(Box::new(html::problem(
            StatusCode::FORBIDDEN,
            &session,
            "Refused",
            &why,
        )));
    }
    if !session.csrf_ok(csrf) {
        tracing::warn!(operator = %session.operator.name, "Form refused: CSRF token does not match the session.");
        return Err(Box::new(html::problem(
            StatusCode::FORBIDDEN,
            &session,
            "Refused",
            "the form's CSRF token does not match your session; reload the page and try again",
        )));
    }
    Ok(session)
}

/// An API failure shown as a page.
fn failed(session: &Session, e: ApiError) -> Response {
    html::problem(e.status, session, "Cannot do that", &e.message)
}

async fn login_page(State(web): State<Web>, client: Client, headers: HeaderMap) -> Response {
    if web.session(&client, &headers).is_some() {
        return Redirect::to("/fleet").into_response();
    }
    html::login(StatusCode::OK, None)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // Logging in from another site's page would sign the victim in as the attacker.
    if let Err(why) = same_origin(&headers) {
        return html::login(StatusCode::FORBIDDEN, Some(&why));
    }
    let operator = match web.sign_in(&client, form.token.trim()).await {
        Ok(operator) => operator,
        Err(SignIn::LockedOut(wait)) => return html::locked_out(retry_after_secs(wait)),
        Err(SignIn::Unknown) => {
            tracing::warn!(client = %client.addr, "Login refused: unknown token.");
            return html::login(
                StatusCode::UNAUTHORIZED,
                Some("That token is not in the controller's tokens file."),
            );
        }
    };
    tracing::info!(operator = %operator.name, role = %operator.role, client = %client.addr, "Operator logged in.");
    let id = web.inner.sessions.start(operator, Instant::now());
    let mut response = Redirect::to("/fleet").into_response();
    if let Ok(value) = HeaderValue::from_str(&session_cookie(&client, Some(&id))) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(response) = checked_form(&web, &client, &headers, &form.csrf) {
        return *response;
    }
    if let Some((id, session)) = web.session(&client, &headers) {
        tracing::info!(operator = %session.operator.name, "Operator logged out.");
        web.inner.sessions.end(&id);
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&session_cookie(&client, None)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn fleet(State(web): State<Web>, client: Client, headers: HeaderMap) -> Response {
    let session = match logged_in(&web, &client, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let hosts = api::fleet_view(&web);
    let online = hosts.iter().filter(|h| h.online).count();
    let mut body = format!(
        "<p>{} hosts, {online} online.</p><table id=fleet><tr><th>Host</th><th>Online</th><th>Labels</th><th>Agent</th><th>Last heard</th><th>Open findings</th></tr>",
        hosts.len()
    );
    for h in &hosts {
        let labels: String = h
            .labels
            .iter()
            .map(|(k, v)| format!("<span class=tag>{}={}</span>", esc(k), esc(v)))
            .collect();
        let findings: String = h
            .open_findings
            .iter()
            .map(|f| format!("<a href=\"/incidents/{}\">{}</a> ", url_seg(f), esc(f)))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td class={}>{}</td><td>{labels}</td><td>{}</td><td>{} s ago</td><td>{findings}</td></tr>",
            esc(&h.host),
            if h.online { "ok" } else { "bad" },
            if h.online { "online" } else { "offline" },
            esc(&h.agent_version),
            h.silent_for_ms / 1000,
        );
    }
    body.push_str("</table>");
    html::page("Fleet", &session, &body)
}

async fn incidents(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Query(q): Query<IncidentQuery>,
) -> Response {
    let session = match logged_in(&web, &client, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let list = match api::incident_list(&web, &q).await {
        Ok(list) => list,
        Err(e) => return failed(&session, e),
    };
    let mut body = format!(
        "<form method=get action=\"/incidents\">Host <input name=host value=\"{}\"> Since <input name=since value=\"{}\" placeholder=\"7 days ago\"> Until <input name=until value=\"{}\"> <button>Show</button></form>\
<table id=incidents><tr><th>Incident</th><th>Host</th><th>Root cause</th><th>Policy</th><th>Latest</th><th>First seen</th><th>Last activity</th><th>Records</th></tr>",
        esc(q.host.as_deref().unwrap_or("")),
        esc(q.since.as_deref().unwrap_or("")),
        esc(q.until.as_deref().unwrap_or("")),
    );
    for i in &list {
        let _ = write!(
            body,
            "<tr><td><a href=\"/incidents/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url_seg(&i.incident),
            esc(&i.incident),
            esc(i.host.as_deref().unwrap_or("")),
            esc(i.root_cause.as_deref().unwrap_or("")),
            esc(i.policy.as_deref().unwrap_or("")),
            i.status,
            show_time(i.first_at),
            show_time(i.last_at),
            i.records,
        );
    }
    body.push_str("</table>");
    if list.is_empty() {
        body.push_str("<p class=muted>No incidents in this window.</p>");
    }
    html::page("Incidents", &session, &body)
}

async fn incident(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match logged_in(&web, &client, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let found = match api::timeline(&web, &id).await {
        Ok(found) => found,
        Err(e) => return failed(&session, e),
    };
    let mut body = String::new();
    // Pending approvals of this incident, to act on from here.
    if let Ok(pending) = approve::list(&web, Some(ApprovalState::Pending)).await {
        for a in pending.iter().filter(|a| a.incident == id) {
            let _ = write!(
                body,
                "<p class=flash>Waiting for approval: <a href=\"/approvals/{}\">{} on {}</a> (expires {}).</p>",
                url_seg(&a.id),
                esc(&a.actions.join(", ")),
                esc(&a.host),
                show_time(a.expires_at)
            );
        }
    }
    body.push_str("<ol class=timeline id=timeline>");
    for r in &found.records {
        body.push_str(&render_record(r));
    }
    body.push_str("</ol>");
    if found.truncated {
        let _ = write!(
            body,
            "<p class=flash id=truncated>This incident has more than {} records; only the first are shown. Search the audit for the rest.</p>",
            found.limit
        );
    }
    html::page(&format!("Incident {id}"), &session, &body)
}

/// One timeline entry: when, what, who, the policy, and the kind's own details.
fn render_record(r: &Record) -> String {
    let mut out = format!(
        "<li class=\"k-{kind}\" id=\"rec-{seq}\" data-kind=\"{kind}\"><strong>{kind}</strong> <span class=muted>#{seq} {at} by {actor}{host}</span>",
        kind = r.kind,
        seq = r.seq,
        at = show_time(r.at),
        actor = esc(&r.actor),
        host = r
            .host
            .as_deref()
            .map(|h| format!(" on {}", esc(h)))
            .unwrap_or_default(),
    );
    if let Some(p) = &r.policy {
        let _ = write!(
            out,
            "<div>policy <b>{}</b> <span class=muted>{}</span></div>",
            esc(p),
            esc(r.policy_digest.as_deref().unwrap_or(""))
        );
    }
    let b = &r.body;
    let s = |key: &str| b.get(key).and_then(|v| v.as_str()).unwrap_or("");
    match r.kind {
        Kind::Finding => {
            let _ = write!(
                out,
                "<div>{} — {}: {}</div><div class=muted>unit {} upstream {} · {} lines</div>",
                esc(s("cause")),
                esc(s("root_cause")),
                esc(s("root_cause_detail")),
                esc(s("unit")),
                esc(s("upstream")),
                b.get("count")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
            );
            let evidence = b.get("evidence");
            let lines = evidence
                .and_then(|e| e.get("lines"))
                .and_then(|l| l.as_array());
            if let Some(lines) = lines {
                out.push_str("<div>Evidence:</div><pre class=evidence>");
                for line in lines.iter().filter_map(|l| l.as_str()) {
                    out.push_str(&esc(line));
                    out.push('\n');
                }
                out.push_str("</pre>");
            }
            if let Some(probes) = evidence
                .and_then(|e| e.get("probes"))
                .and_then(|p| p.as_object())
            {
                for (k, v) in probes {
                    let _ = write!(
                        out,
                        "<span class=tag>{}={}</span>",
                        esc(k),
                        esc(v.as_str().unwrap_or(""))
                    );
                }
            }
        }
        Kind::Decision => {
            let _ = write!(
                out,
                "<div>decision <b>{}</b>: {}</div><div class=muted>{}</div>",
                esc(s("decision")),
                esc(s("detail")),
                esc(s("why"))
            );
        }
        Kind::ApprovalRequested | Kind::Escalated => {
            let _ = write!(out, "<div>{}</div>", esc(s("why")));
        }
        Kind::Approved | Kind::Denied | Kind::Expired => {
            let _ = write!(
                out,
                "<div>approval {}: reason <q>{}</q></div>",
                esc(s("approval")),
                esc(s("reason"))
            );
        }
        Kind::ActionDispatched => {
            let _ = write!(
                out,
                "<div>action <b>{}</b> <code>{}</code> {}</div>",
                esc(s("kind")),
                esc(s("action_id")),
                esc(s("unit"))
            );
            if let Some(diff) = b
                .get("edit")
                .and_then(|e| e.get("diff"))
                .and_then(|d| d.as_str())
            {
                let _ = write!(out, "<pre class=diff>{}</pre>", esc(diff));
            }
        }
        Kind::Incident | Kind::Renotified | Kind::Resolved => {
            let stage = match (b.get("from"), b.get("to")) {
                (Some(from), Some(to)) => format!(
                    "{} &rarr; <b>{}</b>: ",
                    esc(from.as_str().unwrap_or("")),
                    esc(to.as_str().unwrap_or(""))
                ),
                _ => String::new(),
            };
            let detail = [s("why"), s("evidence"), s("page")]
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(esc)
                .collect::<Vec<_>>()
                .join(" &middot; ");
            let _ = write!(out, "<div>{stage}{detail}</div>");
        }
        Kind::ActionResult | Kind::Refused | Kind::ActionStep | Kind::Verification => {
            let status = s("status");
            let class = if status == "succeeded" { "ok" } else { "bad" };
            let _ = write!(
                out,
                "<div>action <code>{}</code>: <b class={class}>{}</b> {}</div>",
                esc(s("action_id")),
                esc(status),
                esc(s("message"))
            );
            if let Some(steps) = b.get("steps").and_then(|v| v.as_array()) {
                out.push_str("<table class=steps><tr><th>Step</th><th>OK</th><th>ms</th><th>Output</th></tr>");
                for step in steps {
                    let ok = step.get("ok").and_then(serde_json::Value::as_bool) == Some(true);
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td class={}>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                        esc(step.get("name").and_then(|v| v.as_str()).unwrap_or("")),
                        if ok { "ok" } else { "bad" },
                        if ok { "yes" } else { "no" },
                        step.get("duration_ms")
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(0),
                        esc(step.get("output").and_then(|v| v.as_str()).unwrap_or("")),
                    );
                }
                out.push_str("</table>");
            }
        }
        _ => {}
    }
    if !b.is_null() {
        let _ = write!(
            out,
            "<details><summary>record</summary><pre>{}</pre></details>",
            esc(&serde_json::to_string_pretty(b).unwrap_or_default())
        );
    }
    out.push_str("</li>");
    out
}

/// The Approve / Deny form of a pending approval: one reason, two buttons.
fn decide_form(a: &Approval, session: &Session) -> String {
    let id = url_seg(&a.id);
    format!(
        "<form method=post action=\"/approvals/{id}/approve\" class=decide id=\"decide-{id}\">\
<input type=hidden name=csrf value=\"{csrf}\">\
<textarea name=reason rows=2 required placeholder=\"Reason (required)\"></textarea><br>\
<button class=approve name=verdict value=approve>Approve</button> \
<button class=deny formaction=\"/approvals/{id}/deny\" name=verdict value=deny>Deny</button></form>",
        csrf = esc(&session.csrf)
    )
}

async fn approvals(State(web): State<Web>, client: Client, headers: HeaderMap) -> Response {
    let session = match logged_in(&web, &client, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let all = match approve::list(&web, None).await {
        Ok(all) => all,
        Err(e) => return failed(&session, e),
    };
    let (pending, decided): (Vec<&Approval>, Vec<&Approval>) =
        all.iter().partition(|a| a.state == ApprovalState::Pending);
    let mut body = String::from(
        "<h2>Pending</h2><table id=pending><tr><th>Approval</th><th>Host</th><th>Incident</th><th>Policy</th><th>Actions</th><th>Why</th><th>Expires</th><th>Decide</th></tr>",
    );
    for a in &pending {
        let _ = write!(
            body,
            "<tr><td><a href=\"/approvals/{id}\">{}</a></td><td>{}</td><td><a href=\"/incidents/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.id),
            esc(&a.host),
            url_seg(&a.incident),
            esc(&a.incident),
            esc(&a.policy),
            esc(&a.actions.join(", ")),
            esc(&a.why),
            show_time(a.expires_at),
            decide_form(a, &session),
            id = url_seg(&a.id),
        );
    }
    body.push_str("</table>");
    if pending.is_empty() {
        body.push_str("<p class=muted>Nothing waits for approval.</p>");
    }
    body.push_str("<h2>Decided</h2><table id=decided><tr><th>Approval</th><th>Host</th><th>Incident</th><th>State</th><th>By</th><th>Reason</th><th>When</th></tr>");
    for a in decided.iter().take(50) {
        let _ = write!(
            body,
            "<tr><td><a href=\"/approvals/{}\">{}</a></td><td>{}</td><td><a href=\"/incidents/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url_seg(&a.id),
            esc(&a.id),
            esc(&a.host),
            url_seg(&a.incident),
            esc(&a.incident),
            a.state.id(),
            esc(a.decided_by.as_deref().unwrap_or("")),
            esc(a.reason.as_deref().unwrap_or("")),
            a.decided_at.map(show_time).unwrap_or_default(),
        );
    }
    body.push_str("</table>");
    html::page("Approvals", &session, &body)
}

async fn approval(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match logged_in(&web, &client, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let a = match approve::get(&web, &id).await {
        Ok(a) => a,
        Err(e) => return failed(&session, e),
    };
    let mut body = format!(
        "<table id=approval><tr><th>State</th><td id=state>{}</td></tr><tr><th>Host</th><td>{}</td></tr>\
<tr><th>Incident</th><td><a href=\"/incidents/{}\" id=incident-link>{}</a></td></tr><tr><th>Policy</th><td>{} <span class=muted>{}</span></td></tr>\
<tr><th>Actions</th><td>{}</td></tr><tr><th>Why</th><td>{}</td></tr><tr><th>Requested</th><td>{}</td></tr><tr><th>Expires</th><td>{}</td></tr>",
        a.state.id(),
        esc(&a.host),
        url_seg(&a.incident),
        esc(&a.incident),
        esc(&a.policy),
        esc(&a.policy_digest),
        esc(&a.actions.join(", ")),
        esc(&a.why),
        show_time(a.created_at),
        show_time(a.expires_at),
    );
    if a.state != ApprovalState::Pending {
        let _ = write!(
            body,
            "<tr><th>Decided by</th><td>{}</td></tr><tr><th>Reason</th><td>{}</td></tr><tr><th>When</th><td>{}</td></tr>",
            esc(a.decided_by.as_deref().unwrap_or("")),
            esc(a.reason.as_deref().unwrap_or("")),
            a.decided_at.map(show_time).unwrap_or_default()
        );
    }
    body.push_str("</table>");
    if let Some(e) = &a.finding.edit {
        // What approving applies: the one directive's change, as the agent proposed it.
        let _ = write!(
            body,
            "<h2>Configuration edit</h2><p id=edit-summary>{}</p><p class=muted>{}</p>\
             <p class=muted>file SHA-256 before: <code>{}</code></p><pre id=edit-diff>{}</pre>",
            esc(&e.summary()),
            esc(&e.why),
            esc(&e.file_sha256),
            esc(&e.diff)
        );
    }
    let _ = write!(
        body,
        "<h2>Finding</h2><pre>{}</pre>",
        esc(&serde_json::to_string_pretty(&a.finding).unwrap_or_default())
    );
    if a.state == ApprovalState::Pending {
        body.push_str("<h2>Decide</h2>");
        body.push_str(&decide_form(&a, &session));
    }
    html::page(&format!("Approval {}", a.id), &session, &body)
}

#[derive(Debug, Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn approve_form(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    decide_page(web, client, headers, id, form, Verdict::Approve).await
}

async fn deny_form(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    decide_page(web, client, headers, id, form, Verdict::Deny).await
}

async fn decide_page(
    web: Web,
    client: Client,
    headers: HeaderMap,
    id: String,
    form: DecideForm,
    verdict: Verdict,
) -> Response {
    let session = match checked_form(&web, &client, &headers, &form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match approve::decide(&web, &session.operator, &id, verdict, &form.reason).await {
        // The incident's timeline shows the decision and, as it comes, the action.
        Ok(a) => Redirect::to(&format!("/incidents/{}", url_seg(&a.incident))).into_response(),
        Err(e) => failed(&session, e),
    }
}

async fn audit(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let session = match logged_in(&web, &client, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let kinds: String = std::iter::once(String::from("<option value=\"\">any</option>"))
        .chain(Kind::ALL.iter().map(|k| {
            let selected = if q.kind.as_deref() == Some(k.as_str()) {
                " selected"
            } else {
                ""
            };
            format!("<option{selected}>{k}</option>")
        }))
        .collect();
    let field = |v: &Option<String>| esc(v.as_deref().unwrap_or(""));
    let mut body = format!(
        "<form method=get action=\"/audit\" id=search>Host <input name=host value=\"{}\"> Incident <input name=incident value=\"{}\"> Kind <select name=kind>{kinds}</select> \
Since <input name=since value=\"{}\" placeholder=\"2026-11-21T03:00:00Z\"> Until <input name=until value=\"{}\"> Limit <input name=limit size=6 value=\"{}\"> <button>Search</button></form>",
        field(&q.host),
        field(&q.incident),
        field(&q.since),
        field(&q.until),
        field(&q.limit),
    );
    let searched = [&q.host, &q.incident, &q.kind, &q.since, &q.until]
        .iter()
        .any(|v| v.as_deref().is_some_and(|v| !v.is_empty()));
    if !searched {
        body.push_str("<p class=muted>Give a host, an incident, a kind or a time range.</p>");
        return html::page("Audit", &session, &body);
    }
    let found = match api::audit_search(&web, &q).await {
        Ok(found) => found,
        Err(e) => return failed(&session, e),
    };
    let _ = write!(
        body,
        "<p>{} records (oldest first; at most the limit, {} unless set, {} at most).</p>",
        found.records.len(),
        api::DEFAULT_AUDIT_LIMIT,
        api::MAX_AUDIT_LIMIT,
    );
    if found.truncated {
        let _ = write!(
            body,
            "<p class=flash id=truncated>More records match than the limit of {} shown here: narrow the search (a later <i>since</i>, a host, a kind).</p>",
            found.limit
        );
    }
    body.push_str("<table id=records><tr><th>Seq</th><th>Time</th><th>Kind</th><th>Host</th><th>Incident</th><th>Actor</th><th>Policy</th><th>Body</th></tr>");
    for r in &found.records {
        let mut text = r.body.to_string();
        if text.len() > 300 {
            let cut = (0..=300)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        let incident = r
            .incident
            .as_deref()
            .map(|i| format!("<a href=\"/incidents/{}\">{}</a>", url_seg(i), esc(i)))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{incident}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            r.seq,
            show_time(r.at),
            r.kind,
            esc(r.host.as_deref().unwrap_or("")),
            esc(&r.actor),
            esc(r.policy.as_deref().unwrap_or("")),
            esc(&text),
        );
    }
    body.push_str("</table>");
    html::page("Audit", &session, &body)
}
