//! The `gatemend policy` commands as an operator runs them: the real binary, real files.

// Helpers outside `#[test]` fns: a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gatemend(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn policy_check_passes_on_the_shipped_policies() {
    let out = gatemend(&["policy", "check", "policies/"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.ends_with("in policies/\n"), "{stdout}");
}

#[test]
fn policy_check_prints_every_problem_of_every_file_and_exits_1() {
    let out = gatemend(&[
        "policy",
        "check",
        "controller/tests/fixtures/broken-policies",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let d = "controller/tests/fixtures/broken-policies";
    let expected = format!(
        "\
{d}/php.yaml:4:40: policies[0].match.cause[1]: unknown cause `upstream_gone`, expected one of: none, upstream_refused, upstream_socket_missing, upstream_socket_permission, upstream_overloaded, upstream_connect_timeout, upstream_read_timeout, upstream_reset, upstream_premature_close, upstream_invalid_response, upstream_header_too_big, no_live_upstreams, worker_connections_exhausted, dns_no_resolver, dns_resolution_failed, host_not_found_in_upstream, upstream_tls_error, fpm_max_children, config_invalid
{d}/php.yaml:9:17: policies[0].guards.cooldown: invalid duration `5 minutes`: no spaces allowed; write a number and a unit (ms, s, m, h, d), such as 30s, 5m or 1h30m
{d}/php.yaml:10:48: policies[0].guards.fleet.max_percent: must be 1..=100, got 150
{d}/php.yaml:15:14: policies[1].actions: must name at least one action in approve mode
{d}/typo.yaml:5:5: policies[0]: unknown field `actoins`, expected one of `name`, `description`, `priority`, `match`, `mode`, `actions`, `verify`, `guards`, `escalate`, `approval`
{d}/php.yaml:11:11: policies[1].name: duplicate policy name `restart-php`, first defined at {d}/php.yaml:2:11
6 problem(s) in {d}: no policy loaded
"
    );
    assert_eq!(text(&out.stderr), expected);
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn policy_check_on_a_missing_directory_exits_1_with_the_reason() {
    let out = gatemend(&["policy", "check", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("no/such/dir: cannot read: "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn policy_explain_shows_the_match_the_guards_and_the_decision() {
    let out = gatemend(&[
        "policy",
        "explain",
        "--policies",
        "policies",
        "controller/tests/fixtures/finding.json",
        "--now",
        "2025-11-21T01:00:40Z",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "finding web-1/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock: upstream_socket_missing (root cause service_down) on web-1, unit php8.2-fpm.service, 12 line(s)",
        "now 2025-11-21T01:00:40.000Z\n",
        "  restart-when-service-down (priority 100, policies/restart.yaml): MATCHED\n",
        "  escalate-dns (priority 50, policies/escalate.yaml): not reached: a policy above matched\n",
        "  reload-nginx-after-approved-fix (priority 100, policies/reload.yaml): no match: root cause service_down is not listed\n",
        "  fix-socket-ownership (priority 100, policies/socket.yaml): not reached: a policy above matched\n",
        "  restart-when-not-listening (priority 90, policies/restart.yaml): not reached: a policy above matched\n",
        "  storm: clear: 1 of 1 online host(s) showed upstream_socket_missing within 2m, a storm is 3\n",
        "  busy: clear: nothing in flight on this host\n",
        "  cooldown: clear: never acted on this host (cooldown 15s)\n",
        "  max_attempts: clear: 0 of 3 attempt(s) for upstream_socket_missing on this host (reset after 1h healthy)\n",
        "  fleet: clear: 1 busy host(s) with this one, limit 1 (max_concurrent 2, max_percent 10% of 1 online, rounded up)\n",
        "decision: execute [restart_unit] by restart-when-service-down (mode auto, verify within 20s)\n",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn policy_explain_with_a_fleet_and_dry_run() {
    let dir = std::env::temp_dir().join(format!("gatemend-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fleet = dir.join("fleet.json");
    // web-1 was restarted by this policy 10 s before (its cooldown is 15 s).
    std::fs::write(
        &fleet,
        r#"{"hosts": {"web-1": {"online": true,
            "acted": [{"policy": "restart-when-service-down", "at": 1763686830000}]}}}"#,
    )
    .unwrap();
    let out = gatemend(&[
        "policy",
        "explain",
        "--policies",
        "policies",
        "controller/tests/fixtures/finding.json",
        "--fleet",
        fleet.to_str().unwrap(),
        "--now",
        "1763686840000",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("(controller-wide dry run)"), "{stdout}");
    assert!(
        stdout.contains("decision: held by cooldown until 2025-11-21T01:00:45.000Z by restart-when-service-down\n"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_files_are_reported_with_their_cause_and_exit_2() {
    let out = gatemend(&[
        "policy",
        "explain",
        "--policies",
        "policies",
        "controller/tests/fixtures/broken-policies/php.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "gatemend: controller/tests/fixtures/broken-policies/php.yaml is not a valid finding: "
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let out = gatemend(&[
        "policy",
        "explain",
        "--policies",
        "policies",
        "controller/tests/fixtures/finding.json",
        "--now",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--now yesterday: expected RFC 3339"));
}
