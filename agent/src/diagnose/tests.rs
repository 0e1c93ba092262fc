//! Diagnosis on probe results as the testbed's hosts show them (Debian 12, nginx 1.22,
//! php8.2-fpm), one case per root cause, and aggregation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatemend_proto::{Cause, RootCause};

use super::resolve::{ACCESS_LAST_ERROR, ProbeAnswer, RESOLVED_BY, Recovery};
use super::*;
use crate::detect::access::{AccessRates, LogFormat, Replay};
use crate::detect::classify;
use crate::pipeline::{access_view, probe_requests, recovery};
use crate::probe::listeners::Listener;
use crate::probe::php_fpm::parse_pools;
use crate::probe::snapshot::SocketProbe;
use crate::probe::socket::{Access, SocketInfo};
use crate::probe::systemd::UnitState;

const SOCK: &str = "/run/php/php8.2-fpm.sock";

fn pools() -> Vec<crate::probe::php_fpm::Pool> {
    parse_pools(
        Path::new("/etc/php/8.2/fpm/pool.d/www.conf"),
        "[www]\nuser = www-data\ngroup = www-data\nlisten = /run/php/php8.2-fpm.sock\n\
         listen.owner = www-data\nlisten.group = www-data\npm.max_children = 5\n",
    )
}

fn unit(name: &str, active: &str, sub: &str, result: &str) -> UnitState {
    UnitState {
        name: name.into(),
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: sub.into(),
        result: Some(result.into()),
        n_restarts: Some(0),
        main_pid: Some(if active == "active" { 100 } else { 0 }),
    }
}

fn socket(
    path: &str,
    owner: &str,
    mode: u32,
    allowed: bool,
    accepts: bool,
) -> (PathBuf, SocketProbe) {
    (
        PathBuf::from(path),
        SocketProbe {
            info: SocketInfo {
                path: path.into(),
                exists: true,
                is_socket: true,
                is_symlink: false,
                uid: Some(if owner == "root" { 0 } else { 33 }),
                gid: Some(if owner == "root" { 0 } else { 33 }),
                owner: Some(owner.into()),
                group: Some(owner.into()),
                mode: Some(mode),
            },
            worker: Access {
                allowed,
                why: if allowed {
                    "owner may write".into()
                } else {
                    "no write permission for www-data".into()
                },
            },
            accepts,
        },
    )
}

/// A healthy host: php-fpm up, its socket www-data:www-data 0660, nginx pointing at it.
fn healthy_host() -> Probes {
    let nginx = crate::probe::nginx::parse(
        "# configuration file /etc/nginx/nginx.conf:\nuser www-data;\nevents { worker_connections 768; }\n\
         http { server { listen 80; server_name _; location ~ \\.php$ { fastcgi_pass unix:/run/php/php8.2-fpm.sock; } } }\n",
    );
    Probes {
        nginx: Some(nginx),
        pools: pools(),
        units: [
            (
                "php8.2-fpm.service".to_owned(),
                unit("php8.2-fpm.service", "active", "running", "success"),
            ),
            (
                "nginx.service".to_owned(),
                unit("nginx.service", "active", "running", "success"),
            ),
        ]
        .into(),
        sockets: [socket(SOCK, "www-data", 0o660, true, true)].into(),
        ..Probes::default()
    }
}

fn line(text: &str) -> crate::detect::Classified<'_> {
    let c = classify(text.as_bytes());
    assert_ne!(
        c.cause,
        Cause::None,
        "the classifier did not recognise: {text}"
    );
    c
}

const MISSING: &str = "2026/11/21 01:02:03 [crit] 317#317: *113 connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 10.77.1.1, server: _, request: \"GET /index.php HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"10.77.1.2\"";
const MISSING_74: &str = "2026/11/21 01:02:03 [crit] 317#317: *113 connect() to unix:/run/php/php7.4-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 10.77.1.1, server: _, request: \"GET /index.php HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php7.4-fpm.sock:\", host: \"10.77.1.2\"";
const DENIED: &str = "2026/11/21 01:02:03 [crit] 317#317: *5 connect() to unix:/run/php/php8.2-fpm.sock failed (13: Permission denied) while connecting to upstream, client: 10.77.1.1, server: _, request: \"GET /index.php HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"10.77.1.2\"";
const REFUSED: &str = "2026/11/21 01:01:15 [error] 110#110: *5 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: fx.test, request: \"GET /app HTTP/1.1\", upstream: \"http://127.0.0.1:3000/app\", host: \"fx.test\"";
const RESET: &str = "2026/11/21 01:01:15 [error] 110#110: *7 recv() failed (104: Connection reset by peer) while reading response header from upstream, client: 127.0.0.1, server: _, request: \"GET /index.php HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"x\"";
const READ_TIMEOUT: &str = "2026/11/21 01:01:15 [error] 110#110: *9 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: _, request: \"GET /slow.php HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"x\"";
const MAX_CHILDREN: &str = "[21-Nov-2026 01:02:27] WARNING: [pool www] server reached pm.max_children setting (5), consider raising it";
const NO_RESOLVER: &str = "2026/11/21 01:01:15 [error] 110#110: *3 no resolver defined to resolve backend.example, client: 127.0.0.1, server: _, request: \"GET / HTTP/1.1\", host: \"x\"";
const EMERG: &str = "2026/11/21 01:02:46 [emerg] 568#568: unknown directive \"x\" in /etc/nginx/conf.d/broken.conf:1";

#[test]
fn a_missing_socket_with_php_fpm_failed_is_service_down_on_its_unit() {
    let mut p = healthy_host();
    p.units.insert(
        "php8.2-fpm.service".into(),
        unit("php8.2-fpm.service", "failed", "failed", "exit-code"),
    );
    p.sockets.clear();
    let d = diagnose(&line(MISSING), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::ServiceDown);
    assert_eq!(d.unit.as_deref(), Some("php8.2-fpm.service"));
    assert!(
        d.detail.contains("failed (Result=exit-code)"),
        "{}",
        d.detail
    );
    assert_eq!(
        d.probes.get("unit.ActiveState").map(String::as_str),
        Some("failed")
    );
    assert_eq!(
        healthy(
            Cause::UpstreamSocketMissing,
            "unix:/run/php/php8.2-fpm.sock",
            &p
        ),
        Some(false)
    );
    assert_eq!(
        healthy(
            Cause::UpstreamSocketMissing,
            "unix:/run/php/php8.2-fpm.sock",
            &healthy_host()
        ),
        Some(true)
    );
    // A read timeout: the probes cannot tell, the logs will.
    assert_eq!(
        healthy(
            Cause::UpstreamReadTimeout,
            "unix:/run/php/php8.2-fpm.sock",
            &healthy_host()
        ),
        None
    );
}

/// A healthy host whose nginx also passes `location` to `target` (`pass` is `fastcgi_pass` or
/// `proxy_pass`).
fn pointing_at(pass: &str, location: &str, target: &str) -> Probes {
    let mut p = healthy_host();
    p.nginx = Some(crate::probe::nginx::parse(&format!(
        "# configuration file /etc/nginx/nginx.conf:\nuser www-data;\nevents {{ worker_connections 768; }}\n\
         http {{ server {{ listen 80; server_name _; location ~ \\.php$ {{ fastcgi_pass unix:/run/php/php8.2-fpm.sock; }} \
         location {location} {{ {pass} {target}; }} }} }}\n",
    )));
    p
}

#[test]
fn a_socket_nobody_serves_while_php_fpm_listens_elsewhere_is_the_wrong_target() {
    let p = pointing_at("fastcgi_pass", "/old", "unix:/run/php/php7.4-fpm.sock");
    let d = diagnose(&line(MISSING_74), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::WrongTarget);
    assert!(
        d.detail.contains("/run/php/php7.4-fpm.sock"),
        "{}",
        d.detail
    );
    assert!(
        d.detail.contains("/run/php/php8.2-fpm.sock"),
        "{}",
        d.detail
    );
    assert_eq!(d.unit.as_deref(), Some("php8.2-fpm.service"));
    assert_eq!(
        healthy(
            Cause::UpstreamSocketMissing,
            "unix:/run/php/php7.4-fpm.sock",
            &p
        ),
        Some(false)
    );
    // Once nginx's configuration no longer points there (the pass was edited), the probes no
    // longer show the fault, though nothing will ever serve the old socket: the access log
    // and the active probe say when it works again.
    assert_eq!(
        healthy(
            Cause::UpstreamSocketMissing,
            "unix:/run/php/php7.4-fpm.sock",
            &healthy_host()
        ),
        None
    );
}

#[test]
fn a_socket_the_worker_may_not_open_is_socket_permission_with_the_pools_values() {
    let mut p = healthy_host();
    p.sockets = [socket(SOCK, "root", 0o600, false, true)].into();
    let d = diagnose(&line(DENIED), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::SocketPermission);
    assert_eq!(d.unit.as_deref(), Some("php8.2-fpm.service"));
    assert!(d.detail.contains("root:root 0600"), "{}", d.detail);
    assert!(
        d.detail.contains("expects www-data:www-data 0660"),
        "{}",
        d.detail
    );
    assert_eq!(
        d.probes.get("nginx.user").map(String::as_str),
        Some("www-data")
    );
}

#[test]
fn php_fpm_active_without_its_socket_is_not_listening() {
    let mut p = healthy_host();
    p.sockets.clear();
    let d = diagnose(&line(MISSING), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::ServiceNotListening);
    assert!(d.detail.contains("does not exist"), "{}", d.detail);
}

#[test]
fn a_refused_port_is_traced_to_the_unit_last_seen_listening_there() {
    let mut p = healthy_host();
    p.remembered.insert(3000, "backend.service".into());
    p.units.insert(
        "backend.service".into(),
        unit("backend.service", "inactive", "dead", "signal"),
    );
    let d = diagnose(&line(REFUSED), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::ServiceDown);
    assert_eq!(d.unit.as_deref(), Some("backend.service"));
    assert!(d.detail.contains("last listener"), "{}", d.detail);

    // The live listener wins, and a unit that is up but not on that port, while nginx points
    // at that port, is the wrong target.
    let mut p = pointing_at("proxy_pass", "/app", "http://127.0.0.1:3000");
    p.units_map
        .insert("127.0.0.1:3000".into(), "backend.service".into());
    p.units.insert(
        "backend.service".into(),
        unit("backend.service", "active", "running", "success"),
    );
    p.listeners.push(Listener {
        addr: "0.0.0.0:3001".parse().unwrap(),
        inode: 1,
        pids: vec![7],
        unit: Some("backend.service".into()),
        process: Some("python3".into()),
    });
    let d = diagnose(&line(REFUSED), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::WrongTarget, "{}", d.detail);
    assert!(d.detail.contains("0.0.0.0:3001"), "{}", d.detail);
}

#[test]
fn a_refused_port_no_unit_is_known_for_is_unknown_and_says_how_to_map_one() {
    let d = diagnose(&line(REFUSED), &healthy_host()).unwrap();
    assert_eq!(d.root_cause, RootCause::Unknown);
    assert_eq!(d.unit, None);
    assert!(d.detail.contains("units:"), "{}", d.detail);
}

#[test]
fn resets_timeouts_and_limits_have_their_root_causes() {
    let p = healthy_host();
    let d = diagnose(&line(RESET), &p).unwrap();
    assert_eq!(
        (d.root_cause, d.unit.as_deref()),
        (RootCause::UpstreamCrashing, Some("php8.2-fpm.service"))
    );
    let d = diagnose(&line(READ_TIMEOUT), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::UpstreamSlow);
    let d = diagnose(&line(MAX_CHILDREN), &p).unwrap();
    assert_eq!(
        (d.root_cause, d.unit.as_deref()),
        (RootCause::CapacityExhausted, Some("php8.2-fpm.service"))
    );
    assert!(d.detail.contains("pm.max_children = 5"), "{}", d.detail);
    let d = diagnose(&line(NO_RESOLVER), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::DnsFailure);
    assert!(d.detail.contains("backend.example"), "{}", d.detail);
    let mut broken = healthy_host();
    broken.nginx_error = Some("nginx: [emerg] unknown directive \"x\" in /etc/nginx/conf.d/broken.conf:1\nnginx: configuration file /etc/nginx/nginx.conf test failed\n".into());
    let d = diagnose(&line(EMERG), &broken).unwrap();
    assert_eq!(
        (d.root_cause, d.unit.as_deref()),
        (RootCause::ConfigInvalid, Some("nginx.service"))
    );
    assert!(d.detail.contains("unknown directive"), "{}", d.detail);
    assert_eq!(
        diagnose(
            &classify(b"2026/11/21 01:02:03 [notice] 1#1: signal process started"),
            &p
        ),
        None
    );
}

#[test]
fn ten_thousand_identical_lines_are_one_finding_resent_when_it_changes_then_resolved() {
    let mut p = healthy_host();
    p.units.insert(
        "php8.2-fpm.service".into(),
        unit("php8.2-fpm.service", "failed", "failed", "exit-code"),
    );
    p.sockets.clear();
    let mut agg = Aggregator::new("web1", Duration::from_secs(10));
    let c = line(MISSING);
    let d = diagnose(&c, &p).unwrap();
    for i in 0..10_000 {
        agg.observe(&c, MISSING.as_bytes(), &d, 1_000 + i);
    }
    let sent = agg.changed();
    assert_eq!(sent.len(), 1);
    let f = &sent[0];
    assert_eq!((f.count, f.revision, f.resolved), (10_000, 1, false));
    assert_eq!(
        f.id,
        "web1/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock#1000"
    );
    assert_eq!((f.first_seen, f.last_seen), (1_000, 10_999));
    assert_eq!(f.evidence.lines.len(), EVIDENCE_LINES);
    assert_eq!(f.unit, "php8.2-fpm.service");
    assert!(agg.changed().is_empty(), "nothing new, nothing re-sent");

    agg.observe(&c, MISSING.as_bytes(), &d, 12_000);
    let sent = agg.changed();
    assert_eq!((sent[0].count, sent[0].revision), (10_001, 2));

    // Still failing: not resolved, however quiet.
    let rates = AccessRates::new(60);
    let sick = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    assert!(agg.review(100_000, 0, |_| None, sick).is_empty());
    // Healthy but not yet quiet: open.
    let fine = healthy_host();
    let well = |f: &Finding, r: &Requests| recovery(f, r, &fine, &rates, None);
    assert!(agg.review(15_000, 0, |_| None, well).is_empty());
    let sent = agg.review(22_001, 0, |_| None, well);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].resolved);
    assert_eq!(sent[0].revision, 3);
    // php-fpm's socket accepts again for the worker, and no access log says otherwise.
    assert_eq!(
        resolved_by(&sent[0]),
        "probes: healthy again (unix:/run/php/php8.2-fpm.sock); no error line since 00:00:12"
    );
    assert!(agg.open().is_empty());

    // The same fault again is a new episode: a new id.
    agg.observe(&c, MISSING.as_bytes(), &d, 30_000);
    assert_eq!(
        agg.changed()[0].id,
        "web1/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock#30000"
    );
}

#[test]
fn a_finding_whose_root_cause_changes_is_sent_again() {
    let mut p = healthy_host();
    p.sockets.clear();
    let mut agg = Aggregator::new("web1", Duration::from_secs(10));
    let c = line(MISSING);
    agg.observe(&c, MISSING.as_bytes(), &diagnose(&c, &p).unwrap(), 1_000);
    assert_eq!(agg.changed()[0].root_cause, RootCause::ServiceNotListening);
    p.units.insert(
        "php8.2-fpm.service".into(),
        unit("php8.2-fpm.service", "failed", "failed", "exit-code"),
    );
    let again = |f: &Finding| {
        let l = crate::detect::Classified {
            cause: f.cause,
            upstream: Some(f.upstream.as_str().into()),
            ..crate::detect::Classified::none()
        };
        diagnose(&l, &p)
    };
    let sick = |_: &Finding, _: &Requests| Recovery {
        health: Some(false),
        ..Recovery::default()
    };
    let sent = agg.review(2_000, 0, again, sick);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].root_cause, sent[0].revision),
        (RootCause::ServiceDown, 2)
    );
}

fn resolved_by(f: &Finding) -> &str {
    f.evidence
        .probes
        .get(RESOLVED_BY)
        .map(String::as_str)
        .unwrap_or_default()
}

/// nginx's predefined `combined` plus the upstream's address and status, as the testbed's
/// `fixtures/access/upstream.log` was written.
const UPSTREAM_FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $upstream_addr $upstream_status"#;

/// A fixture's lines.
fn fixture(path: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Records access-log lines in `format`, one a second from `start` (Unix seconds).
fn record(rates: &mut AccessRates, format: &str, lines: &[String], start: u64) {
    let format = LogFormat::compile(format).unwrap();
    for (i, line) in lines.iter().enumerate() {
        let fields = format
            .parse(line.as_bytes())
            .unwrap_or_else(|| panic!("does not fit the format: {line}"));
        rates.record(&fields, start + i as u64);
    }
}

/// The first line of a fixture that names this request.
fn error_line(fixture_path: &str, request: &str) -> String {
    fixture(fixture_path)
        .into_iter()
        .find(|l| l.contains(&format!("request: \"{request}")))
        .unwrap_or_else(|| panic!("no line for {request} in {fixture_path}"))
}

/// An aggregator (quiet period 4 s) holding one finding for `raw`, seen at `at_ms`.
fn one_finding(raw: &str, probes: &Probes, at_ms: i64) -> Aggregator {
    let mut agg = Aggregator::new("web1", Duration::from_secs(4));
    let c = classify(raw.as_bytes());
    let d = diagnose(&c, probes).unwrap();
    agg.observe(&c, raw.as_bytes(), &d, at_ms);
    assert_eq!(agg.changed().len(), 1);
    agg
}

/// nginx listening on port 80, as the listener probe shows it.
fn nginx_on_80() -> Listener {
    Listener {
        addr: "0.0.0.0:80".parse().unwrap(),
        inode: 1,
        pids: vec![10],
        unit: Some("nginx.service".into()),
        process: Some("nginx".into()),
    }
}

#[test]
fn an_upstream_no_unit_is_known_for_has_unknown_health_until_it_accepts() {
    let mut p = healthy_host();
    // Nothing listens on 3000 and no unit is known for it: the probes cannot tell.
    assert_eq!(healthy(Cause::UpstreamRefused, "127.0.0.1:3000", &p), None);
    p.listeners.push(Listener {
        addr: "127.0.0.1:3000".parse().unwrap(),
        inode: 2,
        pids: vec![20],
        unit: None,
        process: Some("python3".into()),
    });
    assert_eq!(
        healthy(Cause::UpstreamRefused, "127.0.0.1:3000", &p),
        Some(true)
    );
    // php-fpm's socket: mended only while it accepts for the worker.
    let mut p = healthy_host();
    p.units.clear();
    p.sockets = [socket(SOCK, "www-data", 0o660, true, false)].into();
    assert_eq!(
        healthy(
            Cause::UpstreamSocketMissing,
            "unix:/run/php/php8.2-fpm.sock",
            &p
        ),
        None
    );
}

#[test]
fn quiet_with_unknown_health_while_the_access_log_still_shows_502_is_not_resolved() {
    let p = healthy_host();
    let refused = error_line("lines/no_live.log", "GET /pair");
    // The error line at 1000 s; nginx then marks the peer down and logs no more for it,
    // while every request still gets a 502 (fixtures/access/upstream.log, from 1001 s).
    let mut agg = one_finding(&refused, &p, 1_000_000);
    let mut rates = AccessRates::new(60);
    let access = fixture("access/upstream.log");
    record(&mut rates, UPSTREAM_FORMAT, &access, 1_001);
    // 127.0.0.1:3000's last 502: `/redirect`, the 11th line, at 1011 s.
    assert_eq!(
        rates.traffic("127.0.0.1:3000").unwrap().last_error,
        Some(1_011)
    );
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    assert!(agg.review(1_012_000, 0, |_| None, rec).is_empty());
    // Not even a probe answering 200: the users' requests still fail.
    let probe = ProbeAnswer {
        at: 1_012_000,
        sent: "GET /pair (Host fx.test) via 127.0.0.1:80".into(),
        outcome: Ok(200),
    };
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, Some(&probe));
    assert!(agg.review(1_012_000, 0, |_| None, rec).is_empty());
    assert_eq!(agg.open().len(), 1);

    // Still failing: re-sent as a new revision that says when it last failed, and again
    // only when the access log shows a newer 502.
    let view = |f: &Finding, r: &Requests| access_view(f, r, &p, &rates);
    agg.still_failing(0, view);
    let sent = agg.changed();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].revision, 2);
    assert!(!sent[0].resolved);
    assert_eq!(
        sent[0]
            .evidence
            .probes
            .get(ACCESS_LAST_ERROR)
            .map(String::as_str),
        Some("00:16:51")
    );
    agg.still_failing(0, view);
    assert!(agg.changed().is_empty(), "no newer 502, nothing re-sent");
    let pair = access
        .iter()
        .find(|l| l.contains("GET /pair HTTP"))
        .unwrap()
        .clone();
    record(&mut rates, UPSTREAM_FORMAT, &[pair], 1_015);
    let view = |f: &Finding, r: &Requests| access_view(f, r, &p, &rates);
    agg.still_failing(0, view);
    assert_eq!(agg.changed()[0].revision, 3);

    // Long quiet since, and no traffic: no 502 any more, but nothing shows it answers either.
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    assert!(agg.review(1_100_000, 0, |_| None, rec).is_empty());
    let waiting = agg.awaiting_evidence(1_100_000, rec);
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        waiting[0].1.replay,
        Some(Replay {
            path: "/pair".into(),
            host: Some("fx.test".into()),
            port: None,
        })
    );
}

#[test]
fn quiet_with_answers_through_the_upstream_after_its_last_error_is_resolved_by_them() {
    // php-fpm's socket refused; no probe can tell (no unit, no socket known).
    let p = Probes::default();
    let missing = MISSING;
    assert_eq!(
        healthy(
            Cause::UpstreamSocketMissing,
            "unix:/run/php/php8.2-fpm.sock",
            &p
        ),
        None
    );
    let access = fixture("access/upstream.log");
    // upstream.log: php answers 200 (1000 s), 502 x3 (1003-1005 s), ... 200 (1012 s).
    let (failing, last) = access.split_at(access.len() - 1);
    let mut agg = one_finding(missing, &p, 1_004_000);
    let mut rates = AccessRates::new(60);
    record(&mut rates, UPSTREAM_FORMAT, failing, 1_000);
    // Quiet, not failing, but no answer since the last 502: the absence of errors is not
    // enough.
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    assert!(agg.review(1_020_000, 0, |_| None, rec).is_empty());
    record(&mut rates, UPSTREAM_FORMAT, last, 1_012);
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    let sent = agg.review(1_020_000, 0, |_| None, rec);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].resolved);
    assert_eq!(
        resolved_by(&sent[0]),
        "access log: 1 answer (latest 200) via unix:/run/php/php8.2-fpm.sock since 00:16:52"
    );

    // The same with Debian's `combined` access log, which names no upstream: the path the
    // error line names is followed instead, and the static page's 200s do not count.
    let combined = fixture("access/combined.log");
    let (failing, last) = combined.split_at(combined.len() - 1);
    let mut agg = one_finding(missing, &p, 1_004_000);
    let mut rates = AccessRates::new(60);
    rates.watch_paths(agg.paths());
    record(&mut rates, "combined", failing, 1_000);
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    assert!(agg.review(1_020_000, 0, |_| None, rec).is_empty());
    record(&mut rates, "combined", last, 1_012);
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    let sent = agg.review(1_020_000, 0, |_| None, rec);
    assert_eq!(
        resolved_by(&sent[0]),
        "access log: 1 answer (latest 200) to /index.php since 00:16:52"
    );
}

#[test]
fn answers_before_the_last_error_line_do_not_resolve() {
    let p = Probes::default();
    let access = fixture("access/upstream.log");
    let mut rates = AccessRates::new(60);
    record(&mut rates, UPSTREAM_FORMAT, &access, 1_000);
    // The error line came after the last answer the access log holds (1012 s).
    let agg_at = 1_012_500;
    let mut agg = one_finding(MISSING, &p, agg_at);
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    assert!(agg.review(1_030_000, 0, |_| None, rec).is_empty());
}

#[test]
fn quiet_without_traffic_a_probe_below_500_resolves_and_a_502_or_a_redirect_does_not() {
    let mut p = healthy_host();
    p.listeners.push(nginx_on_80());
    let refused = error_line("lines/upstream_refused.log", "GET /refused");
    let mut agg = one_finding(&refused, &p, 1_000_000);
    let rates = AccessRates::new(60);
    let now = 1_010_000;
    let waiting = agg.awaiting_evidence(now, |f, r| recovery(f, r, &p, &rates, None));
    assert_eq!(waiting.len(), 1);
    let (f, r) = &waiting[0];
    // The request the error line names, sent to nginx on loopback with its Host.
    let requests = probe_requests(f, r, &p, &rates);
    assert_eq!(requests.len(), 1, "nginx listens on 80 only");
    let request = &requests[0];
    assert_eq!(request.addr, "127.0.0.1:80".parse().unwrap());
    assert_eq!(
        (request.path.as_str(), request.host.as_deref()),
        ("/refused", Some("fx.test"))
    );
    let sent = request.describe();
    assert_eq!(sent, "GET /refused (Host fx.test) via 127.0.0.1:80");

    let answer = |at: i64, outcome: Result<u16, String>| ProbeAnswer {
        at,
        sent: sent.clone(),
        outcome,
    };
    for (probe, why) in [
        (answer(now, Ok(502)), "502"),
        (answer(now, Ok(504)), "504"),
        (
            answer(now, Ok(301)),
            "a redirect proves nothing of the upstream",
        ),
        (
            answer(now, Ok(400)),
            "nginx's own answer to plain http on a TLS port",
        ),
        (
            answer(now, Err("cannot connect to 127.0.0.1:80".into())),
            "no answer",
        ),
        (answer(999_000, Ok(200)), "before the last error line"),
    ] {
        let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, Some(&probe));
        assert!(agg.review(now, 0, |_| None, rec).is_empty(), "{why}");
    }
    let probe = answer(now, Ok(200));
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, Some(&probe));
    let sent = agg.review(now, 0, |_| None, rec);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].resolved);
    assert_eq!(
        resolved_by(&sent[0]),
        "GET /refused (Host fx.test) via 127.0.0.1:80 -> 200"
    );
}

#[test]
fn a_probe_goes_nowhere_but_nginx_at_the_port_the_request_came_in_on() {
    let mut p = healthy_host();
    p.listeners.push(nginx_on_80());
    let line = |host: &str| {
        format!(
            "2026/11/21 01:01:15 [error] 110#110: *5 connect() failed (111: Connection refused) while connecting to upstream, client: 10.77.1.1, server: , request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:3000/\", host: \"{host}\""
        )
    };
    let rates = AccessRates::new(60);
    let target = |raw: &str, p: &Probes| {
        let agg = one_finding(raw, p, 1_000_000);
        let waiting = agg.awaiting_evidence(1_010_000, |f, r| recovery(f, r, p, &rates, None));
        let (f, r) = &waiting[0];
        probe_requests(f, r, p, &rates)
    };
    // Port 8080 (the Host says so): nginx does not listen there, so no probe at all.
    assert_eq!(target(&line("10.77.1.2:8080"), &p), []);
    p.listeners.push(Listener {
        addr: "0.0.0.0:8080".parse().unwrap(),
        ..nginx_on_80()
    });
    let requests = target(&line("10.77.1.2:8080"), &p);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(requests[0].host.as_deref(), Some("10.77.1.2:8080"));
    // A Host without a port (a client that leaves it out, or 443): every port of nginx's, and
    // they count only together, so the default site's 200 on :80 cannot stand for :8080.
    let requests = target(&line("10.77.1.2"), &p);
    let addrs: Vec<String> = requests.iter().map(|r| r.addr.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:80", "127.0.0.1:8080"]);
    let sent = crate::probe::http::describe_all(&requests);
    assert_eq!(
        sent,
        "GET / (Host 10.77.1.2) via 127.0.0.1:80 and 127.0.0.1:8080"
    );
    let both = resolve::combine(1, sent.clone(), &[Ok(200), Ok(502)]);
    assert_eq!(both.outcome, Ok(502));
    let both = resolve::combine(1, sent.clone(), &[Ok(200), Err("refused".into())]);
    assert_eq!(both.outcome, Err("refused".into()));
    // A TLS port answers plain http with 400: it does not count either way.
    let both = resolve::combine(1, sent.clone(), &[Ok(400), Ok(200)]);
    assert_eq!(both.outcome, Ok(200));
    let both = resolve::combine(1, sent, &[Ok(400)]);
    assert_eq!(both.outcome, Ok(400));
    assert!(!resolve::shows_recovery(400));
}

#[test]
fn probes_showing_it_mended_need_the_access_log_quiet_too() {
    // php-fpm back and its socket accepting for the worker, but /index.php still 502s.
    let p = healthy_host();
    let mut agg = one_finding(MISSING, &p, 1_000_000);
    let mut rates = AccessRates::new(60);
    rates.watch_paths(agg.paths());
    let combined = fixture("access/combined.log");
    let failing: Vec<String> = combined
        .iter()
        .filter(|l| l.contains("/index.php HTTP/1.0\" 502"))
        .cloned()
        .collect();
    record(&mut rates, "combined", &failing, 1_006);
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    assert!(agg.review(1_010_000, 0, |_| None, rec).is_empty());
    // Quiet for 4 s in both logs: the probes are the evidence.
    let sent = agg.review(1_013_000, 0, |_| None, rec);
    assert_eq!(
        resolved_by(&sent[0]),
        "probes: healthy again (unix:/run/php/php8.2-fpm.sock); no error line and no 502/504 for it in the access log since 00:16:40"
    );
}

#[test]
fn a_finding_that_names_no_upstream_or_request_resolves_when_quiet() {
    let p = healthy_host();
    let mut agg = one_finding(MAX_CHILDREN, &p, 1_000_000);
    let rates = AccessRates::new(60);
    let rec = |f: &Finding, r: &Requests| recovery(f, r, &p, &rates, None);
    assert!(agg.review(1_003_000, 0, |_| None, rec).is_empty());
    let sent = agg.review(1_004_000, 0, |_| None, rec);
    assert_eq!(
        resolved_by(&sent[0]),
        "quiet: no line since 00:16:40; it names no upstream or request to check"
    );
}

#[test]
fn a_findings_requests_are_its_failed_paths_and_its_latest_get() {
    let p = healthy_host();
    let mut agg = Aggregator::new("web1", Duration::from_secs(4));
    for line in fixture("lines/fpm_socket_refused.log")
        .iter()
        .chain(std::iter::repeat_n(&MISSING.to_owned(), 2))
    {
        let c = classify(line.as_bytes());
        if let Some(d) = diagnose(&c, &p) {
            agg.observe(&c, line.as_bytes(), &d, 1_000);
        }
    }
    let paths: Vec<&str> = agg.paths().into_iter().collect();
    assert!(paths.contains(&"/index.php"), "{paths:?}");
    assert!(
        paths.contains(&"/slow.php"),
        "query strings are cut: {paths:?}"
    );
    assert!(paths.len() <= MAX_PATHS);
}

/// The configuration edits diagnosis proposes.
mod edits;
