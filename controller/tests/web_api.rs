//! The operator API, the login form, CSRF and /metrics of the real controller binary (with
//! --http-listen, --tokens, --db on SQLite): an approval made real by a raw agent stream is
//! refused to a viewer, approved exactly once by an approver, dispatched and audited with the
//! operator's name; forms without the session's CSRF token or from another origin are refused.
//! An attacker's inputs (issue 14): wrong tokens guessed from one address until it is locked
//! out, a forged `X-Forwarded-Proto`/`X-Forwarded-For` from a peer that is not the trusted
//! proxy, an audit search asking for more records than the controller will hold.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::{Agent, Controller, Launch, client};

/// A client whose requests come from `local` (any 127.x.y.z reaches the controller on
/// 127.0.0.1): another address, as far as the controller can tell.
fn client_from(local: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .local_address(IpAddr::from(local))
        .build()
        .unwrap()
}

/// GET `path` with `token` through `c`: status, Retry-After, JSON body.
async fn get_as(
    c: &reqwest::Client,
    ctl: &Controller,
    token: &str,
    path: &str,
) -> (u16, Option<u64>, serde_json::Value) {
    let response = c
        .get(ctl.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_requests_without_a_valid_token() {
    let ctl = Controller::start();
    for path in [
        "/api/v1/fleet",
        "/api/v1/incidents",
        "/api/v1/approvals",
        "/api/v1/audit?kind=finding",
        "/metrics",
    ] {
        let response = client().get(ctl.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path} without a token");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer",
            "{path} says how to authenticate"
        );
        // From an address of its own: five wrong tokens lock an address out (below).
        let (status, _, _) =
            get_as(&client_from([127, 0, 0, 2]), &ctl, "gm_not_a_token", path).await;
        assert_eq!(status, 401, "{path} with an unknown token");
    }
    // No anonymous writes, whatever the body.
    let response = client()
        .post(ctl.url("/api/v1/approvals/abc/approve"))
        .json(&serde_json::json!({ "reason": "sure" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // A token in the URL is not a token.
    let response = client()
        .get(ctl.url(&format!("/api/v1/fleet?token={}", ctl.alice)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let (status, me) = ctl.get(&ctl.vera, "/api/v1/whoami").await;
    assert_eq!(
        (status, me["name"].as_str(), me["role"].as_str()),
        (200, Some("vera"), Some("viewer"))
    );
    // Verifying the whole chain is for admins.
    let (status, body) = ctl.get(&ctl.alice, "/api/v1/audit/verify").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = ctl.get(&ctl.root, "/api/v1/audit/verify").await;
    assert_eq!(
        (status, body["intact"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_approve_an_approver_approves_once_and_the_action_runs_and_is_audited() {
    let ctl = Controller::start();
    let mut agent = Agent::connect(ctl.grpc, "web1").await;
    agent.report_fpm_down("web1", "web1/f1").await;
    let pending = ctl.pending_approval().await;
    let id = pending["id"].as_str().unwrap().to_owned();
    assert_eq!(pending["host"], "web1");
    assert_eq!(pending["incident"], "web1/f1");
    assert_eq!(pending["actions"], serde_json::json!(["restart_unit"]));
    // Nothing runs before someone approves.
    assert_eq!(agent.next_request(Duration::from_millis(500)).await, None);

    let approve = format!("/api/v1/approvals/{id}/approve");
    let (status, body) = ctl
        .post(
            &ctl.vera,
            &approve,
            serde_json::json!({ "reason": "looks right" }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "vera is a viewer; to approve needs the approver role"
    );
    let (status, body) = ctl
        .post(&ctl.alice, &approve, serde_json::json!({ "reason": "  " }))
        .await;
    assert_eq!(status, 400, "a reason is required: {body}");
    let (status, body) = ctl
        .post(
            &ctl.alice,
            "/api/v1/approvals/000000000000/approve",
            serde_json::json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, still) = ctl.get(&ctl.vera, &format!("/api/v1/approvals/{id}")).await;
    assert_eq!(still["state"], "pending", "refusals decide nothing");

    let (status, body) = ctl
        .post(
            &ctl.alice,
            &approve,
            serde_json::json!({ "reason": "php-fpm is down, restart it" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved");
    assert_eq!(body["decided_by"], "alice");
    // Exactly once: a second approval (or a denial) is a conflict naming who decided.
    let (status, body) = ctl
        .post(
            &ctl.root,
            &approve,
            serde_json::json!({ "reason": "me too" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("alice"), "{body}");
    let (status, _) = ctl
        .post(
            &ctl.root,
            &format!("/api/v1/approvals/{id}/deny"),
            serde_json::json!({ "reason": "no" }),
        )
        .await;
    assert_eq!(status, 409);

    let request = agent
        .next_request(Duration::from_secs(20))
        .await
        .expect("the approved action is dispatched");
    assert_eq!(request.unit, "php8.2-fpm.service");
    assert_eq!(
        agent.next_request(Duration::from_millis(500)).await,
        None,
        "once"
    );
    agent
        .succeed("web1", &request, "Restart php8.2-fpm.service: done")
        .await;

    let records = ctl.wait_timeline("web1/f1", "action_result").await;
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(at("finding") < at("decision"));
    assert!(at("decision") < at("approval_requested"));
    assert!(at("approval_requested") < at("approved"));
    assert!(at("approved") < at("action_dispatched"));
    assert!(at("action_dispatched") < at("action_result"));
    let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(
        (
            count("approved"),
            count("action_dispatched"),
            count("denied")
        ),
        (1, 1, 0),
        "one approval, one dispatch, the refused attempts left no record: {kinds:?}"
    );
    let approved = &records[at("approved")];
    assert_eq!(approved["actor"], "alice");
    assert_eq!(approved["body"]["reason"], "php-fpm is down, restart it");
    let result = &records[at("action_result")];
    assert_eq!(result["body"]["status"], "succeeded");
    assert_eq!(
        result["body"]["steps"][0]["output"],
        "Restart php8.2-fpm.service: done"
    );

    // The audit search finds the approval by kind, and the fleet and incidents list show it.
    let (status, found) = ctl
        .get(&ctl.vera, "/api/v1/audit?kind=approved&host=web1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let (_, fleet) = ctl.get(&ctl.vera, "/api/v1/fleet").await;
    assert_eq!(fleet[0]["host"], "web1");
    assert_eq!(fleet[0]["online"], true);
    assert_eq!(fleet[0]["labels"]["role"], "web");
    let (_, incidents) = ctl.get(&ctl.vera, "/api/v1/incidents").await;
    assert_eq!(incidents[0]["incident"], "web1/f1");
    assert_eq!(incidents[0]["status"], "action_result");
    let (status, body) = ctl.get(&ctl.vera, "/api/v1/audit?kind=nonsense").await;
    assert_eq!(status, 400, "{body}");
}

/// Logs in through the form; returns the session cookie (`name=value`).
async fn login(ctl: &Controller, token: &str) -> String {
    let response = client()
        .post(ctl.url("/login"))
        .header("origin", format!("http://{}", ctl.http))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], "/fleet");
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains(token), "the session is not the token");
    set.split(';').next().unwrap().to_owned()
}

/// A page as the session sees it: status and HTML.
async fn page(ctl: &Controller, cookie: &str, path: &str) -> (u16, String) {
    let response = client()
        .get(ctl.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=csrf value=\"").expect("a CSRF field") + "name=csrf value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_login_needs_a_known_token_and_forms_need_the_sessions_csrf_token_and_origin() {
    let ctl = Controller::start();
    let agent = Agent::connect(ctl.grpc, "web1").await;
    agent.report_fpm_down("web1", "web1/f1").await;
    let id = ctl.pending_approval().await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Pages without a session go to the login form; a wrong token does not log in.
    let (status, _) = page(&ctl, "", "/approvals").await;
    assert_eq!(status, 303);
    let response = client()
        .post(ctl.url("/login"))
        .header("origin", format!("http://{}", ctl.http))
        .form(&[("token", "gm_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().get("set-cookie").is_none());
    // A login posted from another site is refused (login CSRF).
    let response = client()
        .post(ctl.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", ctl.alice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    let cookie = login(&ctl, &ctl.alice).await;
    let (status, html) = page(&ctl, &cookie, "/approvals").await;
    assert_eq!(status, 200);
    assert!(html.contains(&id), "the pending approval is listed");
    assert!(html.contains("alice (approver)"));
    let csrf = csrf_of(&html);
    let origin = format!("http://{}", ctl.http);
    let approve = ctl.url(&format!("/approvals/{id}/approve"));
    let post = |csrf: String, origin: Option<String>, cookie: String| {
        let approve = approve.clone();
        async move {
            let mut request = client().post(approve).header("cookie", cookie);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            let response = request
                .form(&[("csrf", csrf.as_str()), ("reason", "restart it")])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, html) = post("0".repeat(64), Some(origin.clone()), cookie.clone()).await;
    assert_eq!(status, 403);
    assert!(html.contains("CSRF token does not match"), "{html}");
    let (status, html) = post(
        csrf.clone(),
        Some("http://evil.example".into()),
        cookie.clone(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(html.contains("not from this UI"), "{html}");
    let (status, _) = post(csrf.clone(), None, cookie.clone()).await;
    assert_eq!(status, 403, "neither Origin nor Referer");
    let (status, _) = post(csrf.clone(), Some(origin.clone()), String::new()).await;
    assert_eq!(status, 303, "no session: to the login form");
    let (_, still) = ctl.get(&ctl.vera, &format!("/api/v1/approvals/{id}")).await;
    assert_eq!(
        still["state"], "pending",
        "no refused form decided anything"
    );

    // A viewer's session, with its own valid CSRF token, is refused with the reason.
    let viewer = login(&ctl, &ctl.vera).await;
    let (_, html) = page(&ctl, &viewer, "/approvals").await;
    let (status, html) = post(csrf_of(&html), Some(origin.clone()), viewer).await;
    assert_eq!(status, 403);
    assert!(
        html.contains("vera is a viewer; to approve needs the approver role"),
        "{html}"
    );

    let (status, _) = post(csrf, Some(origin.clone()), cookie.clone()).await;
    assert_eq!(status, 303);
    let (_, done) = ctl.get(&ctl.vera, &format!("/api/v1/approvals/{id}")).await;
    assert_eq!(
        (done["state"].as_str(), done["decided_by"].as_str()),
        (Some("approved"), Some("alice"))
    );

    // Logging out ends the session server-side.
    let (_, html) = page(&ctl, &cookie, "/fleet").await;
    let response = client()
        .post(ctl.url("/logout"))
        .header("cookie", cookie.as_str())
        .header("origin", origin)
        .form(&[("csrf", csrf_of(&html))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let (status, _) = page(&ctl, &cookie, "/fleet").await;
    assert_eq!(status, 303, "the old cookie no longer works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_the_fleet_findings_and_approvals() {
    let ctl = Controller::start();
    let agent = Agent::connect(ctl.grpc, "web1").await;
    agent.report_fpm_down("web1", "web1/f1").await;
    ctl.pending_approval().await;
    let response = client()
        .get(ctl.url("/metrics"))
        .bearer_auth(&ctl.vera)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let mut samples = std::collections::BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            typed.contains(name) || typed.contains(base),
            "{name} has no TYPE before it"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line}");
        }
        samples.insert(series.to_owned(), value);
    }
    assert_eq!(samples["gatemend_agents_online"], 1.0, "{text}");
    assert_eq!(samples["gatemend_approvals_pending"], 1.0, "{text}");
    assert_eq!(
        samples["gatemend_findings_total{result=\"new\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples["gatemend_decisions_total{decision=\"await_approval\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples["gatemend_decisions_total{decision=\"execute\"}"],
        0.0
    );
    assert_eq!(samples["gatemend_actions_total{result=\"succeeded\"}"], 0.0);
    // The dispatcher's audit appends (one per batch: the finding, its decision, the approval
    // request together) are in the histogram; the +Inf bucket is the count and no bucket
    // holds more than it.
    let count = samples["gatemend_audit_write_seconds_count"];
    assert!(count >= 1.0, "{text}");
    // One finding arrived and was decided.
    assert_eq!(samples["gatemend_decision_seconds_count"], 1.0, "{text}");
    assert_eq!(
        samples["gatemend_decision_seconds_bucket{le=\"+Inf\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples["gatemend_audit_write_seconds_bucket{le=\"+Inf\"}"],
        count
    );
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(k, _)| k.starts_with("gatemend_audit_write_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.iter().all(|b| *b <= count), "{text}");
    assert!(samples["gatemend_audit_write_seconds_sum"] > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvals_cli_lists_and_approves_with_a_token_from_the_environment_or_a_file() {
    let ctl = Controller::start();
    let mut agent = Agent::connect(ctl.grpc, "web1").await;
    agent.report_fpm_down("web1", "web1/f1").await;
    let id = ctl.pending_approval().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let controller = ctl.url("");
    let gatemend = |args: &[&str], token: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gatemend"));
        c.arg("approvals")
            .args(args)
            .args(["--controller", &controller]);
        c.env_remove("GATEMEND_TOKEN");
        if let Some(t) = token {
            c.env("GATEMEND_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = gatemend(&["list"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEMEND_TOKEN"));

    let out = gatemend(&["list"], Some(&ctl.vera));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&id) && table.contains("web1") && table.contains("restart_unit"),
        "{table}"
    );

    let out = gatemend(&["approve", &id, "--reason", "go"], Some(&ctl.vera));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403") && err.contains("vera is a viewer"),
        "{err}"
    );

    let token_file = ctl.dir.path().join("alice.token");
    std::fs::write(&token_file, format!("{}\n", ctl.alice)).unwrap();
    let out = gatemend(
        &[
            "approve",
            &id,
            "--reason",
            "go",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("approved {id}")));
    agent
        .next_request(Duration::from_secs(20))
        .await
        .expect("dispatched after the CLI approved");

    let out = gatemend(&["deny", &id, "--reason", "late"], Some(&ctl.alice));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));
    let out = gatemend(&["list", "--state", "approved", "--json"], Some(&ctl.vera));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["decided_by"], "alice");
}

#[test]
fn a_tokens_file_with_a_bad_entry_stops_the_controller_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let good = support::token_new("alice", "approver");
    std::fs::write(
        &tokens,
        format!(
            "tokens:\n{}\n  - {{ name: bob, role: viewer, token_sha256: gm_plaintext_token }}\n",
            good.line
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatemend-controller"))
        .args(["--insecure", "--listen", &support::free_addr().to_string()])
        .args([
            "--http-listen",
            &support::free_addr().to_string(),
            "--tokens",
        ])
        .arg(&tokens)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokens[1].token_sha256: must be 64 hex digits"),
        "{err}"
    );
    // --http-listen without --tokens is refused by the argument parser.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatemend-controller"))
        .args(["--insecure", "--http-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tokens"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_list_incidents_and_search_the_audit_and_escape_what_agents_send() {
    let ctl = Controller::start();
    let agent = Agent::connect(ctl.grpc, "web1").await;
    agent
        .send(gatemend_proto::v1::agent_message::Body::Finding(
            gatemend_proto::v1::Finding {
                id: "web1/f<b>1".into(),
                revision: 1,
                host: "web1".into(),
                cause: gatemend_proto::Cause::UpstreamSocketMissing as i32,
                root_cause: gatemend_proto::RootCause::ServiceDown as i32,
                root_cause_detail: "<script>alert(1)</script>".into(),
                upstream: "unix:/run/php/php8.2-fpm.sock".into(),
                unit: "php8.2-fpm.service".into(),
                count: 1,
                first_seen_unix_ms: 1,
                last_seen_unix_ms: 2,
                ..Default::default()
            },
        ))
        .await;
    ctl.pending_approval().await;
    let cookie = login(&ctl, &ctl.vera).await;

    let (status, html) = page(&ctl, &cookie, "/incidents").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("href=\"/incidents/web1%2Ff%3Cb%3E1\""),
        "{html}"
    );
    assert!(html.contains("web1/f&lt;b&gt;1"), "{html}");
    assert!(!html.contains("<b>1"), "agent text is never markup: {html}");

    let (status, html) = page(&ctl, &cookie, "/incidents/web1%2Ff%3Cb%3E1").await;
    assert_eq!(status, 200);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("Waiting for approval"), "{html}");

    let (status, html) = page(&ctl, &cookie, "/audit?kind=approval_requested&host=web1").await;
    assert_eq!(status, 200);
    assert!(html.contains("1 records"), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    let (status, html) = page(&ctl, &cookie, "/audit?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(html.contains("is not a time"), "{html}");

    let (status, html) = page(&ctl, &cookie, "/fleet").await;
    assert_eq!(status, 200);
    assert!(html.contains("web1") && html.contains("online"), "{html}");
    assert!(html.contains("role=web"), "labels are shown: {html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_lock_their_address_out_with_429_while_other_addresses_still_get_in() {
    let ctl = Controller::start();
    let guesser = client_from([127, 0, 0, 3]);
    let operator = client_from([127, 0, 0, 4]);
    for i in 1..=5 {
        let (status, retry, body) =
            get_as(&guesser, &ctl, &format!("gm_guess_{i}"), "/api/v1/whoami").await;
        assert_eq!((status, retry), (401, None), "guess {i}: {body}");
    }
    // The sixth attempt is refused before its token is read: a right token too, so the
    // lockout tells a guesser nothing.
    for token in ["gm_guess_6", ctl.alice.as_str()] {
        let (status, retry, body) = get_as(&guesser, &ctl, token, "/api/v1/whoami").await;
        assert_eq!(status, 429, "{body}");
        let retry = retry.expect("a Retry-After");
        assert!((1..=300).contains(&retry), "Retry-After {retry}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("too many wrong operator tokens"),
            "{body}"
        );
    }
    // The login form from that address is refused the same way.
    let response = guesser
        .post(ctl.url("/login"))
        .header("origin", format!("http://{}", ctl.http))
        .form(&[("token", ctl.alice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.headers().get("set-cookie").is_none());
    // An operator elsewhere is not affected.
    let (status, _, me) = get_as(&operator, &ctl, &ctl.alice, "/api/v1/whoami").await;
    assert_eq!((status, me["name"].as_str()), (200, Some("alice")));

    // Wrong tokens on the login form count too: the sixth form is refused with 429.
    let typist = client_from([127, 0, 0, 5]);
    let mut statuses = Vec::new();
    for i in 1..=6 {
        let response = typist
            .post(ctl.url("/login"))
            .header("origin", format!("http://{}", ctl.http))
            .form(&[("token", format!("gm_typo_{i}"))])
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);

    // Logged, counted and audited.
    let metrics = ctl.metrics().await;
    assert_eq!(
        metrics["gatemend_login_failures_total"], 10.0,
        "{metrics:?}"
    );
    assert_eq!(metrics["gatemend_login_lockouts_total"], 2.0);
    assert_eq!(metrics["gatemend_login_refused_total"], 4.0);
    let (status, records) = ctl.get(&ctl.vera, "/api/v1/audit?kind=login_lockout").await;
    assert_eq!(status, 200, "{records}");
    let clients: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"]["client"].as_str().unwrap())
        .collect();
    assert_eq!(clients, ["127.0.0.3", "127.0.0.5"], "{records}");
    assert_eq!(records[0]["body"]["failures"], 5);
    assert!(
        ctl.log_text().contains("the address is locked out"),
        "{}",
        ctl.log_text()
    );
}

/// Logs in through the form from `c` with extra headers; returns the Set-Cookie value.
async fn set_cookie_of_login(
    c: &reqwest::Client,
    ctl: &Controller,
    headers: &[(&str, &str)],
) -> String {
    let mut request = c
        .post(ctl.url("/login"))
        .header("origin", format!("https://{}", ctl.http));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request
        .form(&[("token", ctl.alice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The cookie's `name=value` and the attributes after it.
fn split_cookie(set: &str) -> (&str, &str) {
    set.split_once(';').unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_tls_the_session_cookie_is_host_prefixed_and_secure() {
    let ctl = Controller::launch(&Launch {
        args: &["--http-secure-cookies"],
        ..Launch::default()
    });
    let set = set_cookie_of_login(&client(), &ctl, &[]).await;
    let (pair, attributes) = split_cookie(&set);
    assert!(pair.starts_with("__Host-gatemend_session="), "{set}");
    assert!(
        attributes.starts_with(" Secure; HttpOnly; SameSite=Strict; Path=/;"),
        "{set}"
    );
    assert!(!attributes.contains("Domain"), "{set}");
    // The session is read from the __Host- cookie only.
    let (status, _) = page(&ctl, pair, "/fleet").await;
    assert_eq!(status, 200);
    let plain = pair.replace("__Host-gatemend_session", "gatemend_session");
    let (status, _) = page(&ctl, &plain, "/fleet").await;
    assert_eq!(status, 303, "a plain cookie is not taken over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_count_from_the_trusted_proxy_only() {
    let ctl = Controller::launch(&Launch {
        args: &["--http-trusted-proxy", "127.0.0.6"],
        ..Launch::default()
    });
    let proxy = client_from([127, 0, 0, 6]);
    let stranger = client_from([127, 0, 0, 7]);
    let https = [("x-forwarded-proto", "https")];

    // The proxy says the browser came through TLS: __Host- and Secure.
    let set = set_cookie_of_login(&proxy, &ctl, &https).await;
    let (pair, attributes) = split_cookie(&set);
    assert!(pair.starts_with("__Host-gatemend_session="), "{set}");
    assert!(
        attributes.starts_with(" Secure; HttpOnly; SameSite=Strict; Path=/;"),
        "{set}"
    );
    // The proxy says plain HTTP, or says nothing: the cookie of plain HTTP.
    for headers in [&[("x-forwarded-proto", "http")][..], &[][..]] {
        let set = set_cookie_of_login(&proxy, &ctl, headers).await;
        assert!(set.starts_with("gatemend_session="), "{set}");
        assert!(!set.contains("Secure"), "{set}");
    }
    // Anyone else claiming TLS is not believed.
    let set = set_cookie_of_login(&stranger, &ctl, &https).await;
    assert!(set.starts_with("gatemend_session="), "{set}");
    assert!(!set.contains("Secure"), "{set}");

    // Through the proxy, wrong tokens count against the address it forwards for.
    let get = |c: reqwest::Client, forwarded_for: Option<&'static str>, token: String| {
        let url = ctl.url("/api/v1/whoami");
        async move {
            let mut request = c.get(url).bearer_auth(token);
            if let Some(addr) = forwarded_for {
                request = request.header("x-forwarded-for", addr);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };
    for i in 0..5 {
        let status = get(proxy.clone(), Some("192.0.2.1"), format!("gm_guess_{i}")).await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        get(proxy.clone(), Some("192.0.2.1"), ctl.alice.clone()).await,
        429
    );
    assert_eq!(
        get(proxy.clone(), Some("192.0.2.2"), ctl.alice.clone()).await,
        200,
        "another client behind the same proxy"
    );
    assert_eq!(
        get(proxy.clone(), None, ctl.alice.clone()).await,
        200,
        "the proxy itself"
    );
    // A stranger's X-Forwarded-For is ignored: its guesses count against its own address,
    // and it cannot lock out the address it names.
    for i in 0..5 {
        let status = get(stranger.clone(), Some("192.0.2.2"), format!("gm_guess_{i}")).await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        get(stranger.clone(), Some("192.0.2.3"), ctl.alice.clone()).await,
        429,
        "locked out by its own address, whatever it claims"
    );
    assert_eq!(
        get(proxy.clone(), Some("192.0.2.2"), ctl.alice.clone()).await,
        200,
        "the address the stranger named is not locked out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_search_is_clamped_and_says_when_it_was_cut_short() {
    let ctl = Controller::start();
    let agent = Agent::connect(ctl.grpc, "web1").await;
    agent.report_fpm_down("web1", "web1/f1").await;
    ctl.pending_approval().await;
    let search = |path: &'static str| {
        let url = ctl.url(path);
        let token = ctl.vera.clone();
        async move {
            let response = client().get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
            let (limit, truncated) = (header("x-gatemend-limit"), header("x-gatemend-truncated"));
            let records: serde_json::Value = response.json().await.unwrap();
            (records.as_array().unwrap().len(), limit, truncated)
        }
    };
    // The finding, its decision and the approval request at least.
    let (all, limit, truncated) = search("/api/v1/audit?incident=web1%2Ff1").await;
    assert!(all >= 3, "{all}");
    assert_eq!((limit.as_str(), truncated.as_str()), ("1000", "false"));
    // A limit past the maximum is clamped, not refused; the answer is still a JSON array.
    let (n, limit, truncated) =
        search("/api/v1/audit?incident=web1%2Ff1&limit=18446744073709551615").await;
    assert_eq!(
        (n, limit.as_str(), truncated.as_str()),
        (all, "10000", "false")
    );
    // Fewer than match: the answer says it was cut short.
    let (n, limit, truncated) = search("/api/v1/audit?incident=web1%2Ff1&limit=1").await;
    assert_eq!((n, limit.as_str(), truncated.as_str()), (1, "1", "true"));
    let (status, timeline) = ctl.get(&ctl.vera, "/api/v1/incidents/web1%2Ff1").await;
    assert_eq!(
        (status, &timeline["truncated"]),
        (200, &serde_json::json!(false))
    );
    // The page says so too.
    let cookie = login(&ctl, &ctl.vera).await;
    let (status, html) = page(&ctl, &cookie, "/audit?incident=web1%2Ff1&limit=1").await;
    assert_eq!(status, 200);
    assert!(html.contains("id=truncated"), "{html}");
    let (_, html) = page(&ctl, &cookie, "/audit?incident=web1%2Ff1").await;
    assert!(!html.contains("id=truncated"), "{html}");
}
