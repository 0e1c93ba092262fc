//! `/metrics`: Prometheus text exposition (format 0.0.4). Needs a token like the API
//! (Prometheus sends it with `authorization: { credentials_file: ... }`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::api::{ApiError, authorize};
use super::{Client, Role, Web};
use crate::approvals::State as ApprovalState;
use crate::dispatch::DispatchStats;
use crate::dispatch::stats::{ACTION_RESULTS, DECISION_KINDS, Histogram};

/// Writes one metric family: its help, type and samples (`labels` already formatted).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

pub(super) async fn metrics(
    State(web): State<Web>,
    client: Client,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&web, &client, &headers, Role::Viewer, "read metrics").await {
        return e.into_response();
    }
    let mut out = String::new();
    {
        let logins = &web.inner.login_stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        family(
            &mut out,
            "gatemend_login_failures_total",
            "counter",
            "Wrong operator tokens, on the login form or as API bearer tokens.",
            &[("", get(&logins.failures))],
        );
        family(
            &mut out,
            "gatemend_login_lockouts_total",
            "counter",
            "Client addresses locked out after wrong operator tokens.",
            &[("", get(&logins.lockouts))],
        );
        family(
            &mut out,
            "gatemend_login_refused_total",
            "counter",
            "Tokens refused unread because their address was locked out.",
            &[("", get(&logins.refused))],
        );
    }
    if let Some(stats) = &web.inner.ingest {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        family(
            &mut out,
            "gatemend_findings_total",
            "counter",
            "Findings received from agents, new (or a new revision) or a duplicate resend.",
            &[
                ("result=\"new\"", get(&stats.findings_new)),
                ("result=\"duplicate\"", get(&stats.findings_duplicate)),
            ],
        );
        family(
            &mut out,
            "gatemend_action_results_received_total",
            "counter",
            "Action results received from agents.",
            &[("", get(&stats.action_results))],
        );
        family(
            &mut out,
            "gatemend_ingest_refused_total",
            "counter",
            "Agent messages refused (invalid, or from a host other than the peer's).",
            &[("", get(&stats.refused))],
        );
        family(
            &mut out,
            "gatemend_ingest_rate_limited_total",
            "counter",
            "Agent messages refused by the per-agent rate limit.",
            &[("", get(&stats.rate_limited))],
        );
        family(
            &mut out,
            "gatemend_ingest_streams_refused_total",
            "counter",
            "Agent streams refused (no Hello, wrong certificate).",
            &[("", get(&stats.streams_refused))],
        );
        family(
            &mut out,
            "gatemend_ingest_forward_dropped_total",
            "counter",
            "Ingest events the decision stage could not take.",
            &[("", get(&stats.forward_dropped))],
        );
    }
    if let Some(stats) = &web.inner.dispatch_stats {
        dispatch(&mut out, stats);
    }
    let hosts = web.fleet().hosts();
    let online = hosts.iter().filter(|h| h.online).count();
    family(
        &mut out,
        "gatemend_agents_online",
        "gauge",
        "Agents connected and heard from within the heartbeat timeout.",
        &[("", u64::try_from(online).unwrap_or(u64::MAX))],
    );
    family(
        &mut out,
        "gatemend_agents_known",
        "gauge",
        "Hosts that said Hello since the controller started.",
        &[("", u64::try_from(hosts.len()).unwrap_or(u64::MAX))],
    );
    if let Some(store) = web.approvals() {
        match store.list(Some(ApprovalState::Pending)).await {
            Ok(pending) => family(
                &mut out,
                "gatemend_approvals_pending",
                "gauge",
                "Approvals waiting for an operator.",
                &[("", u64::try_from(pending.len()).unwrap_or(u64::MAX))],
            ),
            Err(e) => {
                return ApiError::internal("counting pending approvals", &e).into_response();
            }
        }
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The dispatch stage's counters: decisions by kind, actions by result, escalations, and the
/// audit write and decision latencies as histograms.
fn dispatch(out: &mut String, stats: &DispatchStats) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let decisions: Vec<(String, u64)> = DECISION_KINDS
        .iter()
        .zip(&stats.decisions)
        .map(|(k, v)| (format!("decision=\"{k}\""), get(v)))
        .collect();
    let decisions: Vec<(&str, u64)> = decisions.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        out,
        "gatemend_decisions_total",
        "counter",
        "Decisions on findings, by what was decided.",
        &decisions,
    );
    let actions: Vec<(String, u64)> = ACTION_RESULTS
        .iter()
        .zip(&stats.actions)
        .map(|(k, v)| (format!("result=\"{k}\""), get(v)))
        .collect();
    let actions: Vec<(&str, u64)> = actions.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        out,
        "gatemend_actions_total",
        "counter",
        "Action results from agents, by result.",
        &actions,
    );
    family(
        out,
        "gatemend_escalations_total",
        "counter",
        "Escalations to a human: the first page about an incident.",
        &[("", get(&stats.escalations))],
    );
    family(
        out,
        "gatemend_pages_total",
        "counter",
        "Notices sent to humans, by event: the first page about an incident, a re-notification while it keeps failing, the notice that a paged incident resolved.",
        &[
            ("event=\"page\"", get(&stats.escalations)),
            ("event=\"renotify\"", get(&stats.renotifications)),
            ("event=\"resolved\"", get(&stats.resolved_notices)),
        ],
    );
    family(
        out,
        "gatemend_pages_suppressed_total",
        "counter",
        "Pages not sent because a human was paged about the incident already.",
        &[("", get(&stats.pages_suppressed))],
    );
    let stages: Vec<(String, u64)> = crate::decide::Stage::ALL
        .iter()
        .zip(&stats.incidents)
        .filter(|(s, _)| **s != crate::decide::Stage::Resolved)
        .map(|(s, v)| (format!("stage=\"{s}\""), get(v)))
        .collect();
    let stages: Vec<(&str, u64)> = stages.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        out,
        "gatemend_incidents_open",
        "gauge",
        "Open incidents, by stage.",
        &stages,
    );
    family(
        out,
        "gatemend_incidents_held",
        "gauge",
        "Open incidents whose action a guard holds (cooldown, max_attempts, fleet, storm).",
        &[("", get(&stats.incidents_held))],
    );
    family(
        out,
        "gatemend_audit_write_failures_total",
        "counter",
        "Audit appends by the dispatcher that failed.",
        &[("", get(&stats.audit_failures))],
    );
    histogram(
        out,
        "gatemend_audit_write_seconds",
        "How long the dispatcher's audit appends took (one per batch of decisions; durable when they return).",
        &stats.audit,
    );
    histogram(
        out,
        "gatemend_decision_seconds",
        "From a finding's arrival to its decision committed to the fleet state.",
        &stats.decision_latency,
    );
}

/// One histogram family.
fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (le, bucket) in h.bounds.iter().zip(&h.buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", get(bucket));
    }
    let count = get(&h.count);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    // Microseconds to seconds: a float, as Prometheus sums are.
    #[allow(clippy::cast_precision_loss)]
    let sum = get(&h.sum_micros) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}
