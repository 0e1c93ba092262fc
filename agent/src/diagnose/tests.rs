//! Diagnosis on probe results as the testbed's hosts show them (Debian 12, nginx 1.22,
//! php8.2-fpm), one case per root cause, and aggregation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatemend_proto::{Cause, RootCause};

use super::*;
use crate::detect::classify;
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

#[test]
fn a_socket_nobody_serves_while_php_fpm_listens_elsewhere_is_the_wrong_target() {
    let d = diagnose(&line(MISSING_74), &healthy_host()).unwrap();
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
            &healthy_host()
        ),
        Some(false)
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

    // The live listener wins, and a unit that is up but not on that port is "not listening".
    let mut p = healthy_host();
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
    let sick = |f: &Finding| healthy(f.cause, &f.upstream, &p) != Some(false);
    assert!(agg.review(100_000, |_| None, sick).is_empty());
    // Healthy but not yet quiet: open.
    let fine = healthy_host();
    let well = |f: &Finding| healthy(f.cause, &f.upstream, &fine) != Some(false);
    assert!(agg.review(15_000, |_| None, well).is_empty());
    let sent = agg.review(22_001, |_| None, well);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].resolved);
    assert_eq!(sent[0].revision, 3);
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
    let sent = agg.review(2_000, again, |_| false);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].root_cause, sent[0].revision),
        (RootCause::ServiceDown, 2)
    );
}
