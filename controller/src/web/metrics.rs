//! `/metrics`: Prometheus text exposition (format 0.0.4). Needs a token like the API
//! (Prometheus sends it with `authorization: { credentials_file: ... }`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::api::{ApiError, authorize};
use super::{Role, Web};
use crate::approvals::State as ApprovalState;

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

pub(super) async fn metrics(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&web, &headers, Role::Viewer, "read metrics") {
        return e.into_response();
    }
    let mut out = String::new();
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
