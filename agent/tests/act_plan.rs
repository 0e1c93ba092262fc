//! The pure stages of the actions: the allow-list (`admit`), the plans, the lock keys and the
//! small parsers they use; edit_config's refusals (closed set, allow-list, paths, bounds,
//! targets, stale files, approved diffs) and its plan. No host is touched; behaviour against systemd, nginx and php-fpm is
//! tested on the testbed (tests/tests/act_*.rs).

// Test helpers panic on what a test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gatemend_agent::act::journal::FileOwner;
use gatemend_agent::act::{
    self, Facts, Plan, ReloadVia, Settings, Upstream, admit, lock_key, matches_any, parse_listen,
};
use gatemend_agent::act::{EditFacts, FileFacts, NginxFacts};
use gatemend_agent::config::{ActionsConfig, EditName};
use gatemend_agent::edit::{
    EditableDirective, NginxEdit, PoolEdit, PoolKey, apply_edit, apply_pool_edit, sha256_hex,
};
use gatemend_agent::probe::nginx::{BlockPath, BlockStep};
use gatemend_agent::probe::php_fpm::parse_pools;
use gatemend_agent::probe::socket::{Identity, SocketInfo};
use gatemend_agent::probe::systemd::UnitState;
use gatemend_proto::v1::{ActionRequest, ConfigEdit};
use gatemend_proto::{ActionKind, ConfigKind};

const WWW_POOL: &str = "[www]\nuser = www-data\ngroup = www-data\n\
    listen = /run/php/php8.2-fpm.sock\nlisten.owner = www-data\nlisten.group = www-data\n";

fn settings() -> Settings {
    Settings {
        allowed: ActionKind::ALL.to_vec(),
        actions: ActionsConfig::default(),
        root: PathBuf::from("/"),
        state_dir: PathBuf::from("/var/lib/gatemend/state"),
    }
}

fn request(kind: ActionKind) -> ActionRequest {
    ActionRequest {
        action_id: "a1".into(),
        kind: kind as i32,
        ..ActionRequest::default()
    }
}

fn unit_request(kind: ActionKind, unit: &str) -> ActionRequest {
    ActionRequest {
        unit: unit.into(),
        ..request(kind)
    }
}

fn socket_request(path: &str) -> ActionRequest {
    ActionRequest {
        socket_path: path.into(),
        ..request(ActionKind::FixSocketOwnership)
    }
}

fn unit_state(name: &str, load: &str, active: &str) -> UnitState {
    UnitState {
        name: name.into(),
        load_state: load.into(),
        active_state: active.into(),
        sub_state: "dead".into(),
        result: Some("success".into()),
        n_restarts: Some(0),
        main_pid: Some(0),
    }
}

fn php_facts(load: &str) -> Facts {
    Facts {
        unit: Some(unit_state("php8.2-fpm.service", load, "inactive")),
        pools: parse_pools(Path::new("/etc/php/8.2/fpm/pool.d/www.conf"), WWW_POOL),
        ..Facts::default()
    }
}

fn socket_info(path: &str, uid: u32, gid: u32, mode: u32) -> SocketInfo {
    SocketInfo {
        path: path.into(),
        exists: true,
        is_socket: true,
        is_symlink: false,
        uid: Some(uid),
        gid: Some(gid),
        owner: Some(if uid == 0 { "root" } else { "www-data" }.into()),
        group: Some(if gid == 0 { "root" } else { "www-data" }.into()),
        mode: Some(mode),
    }
}

/// A root-owned 0600 php-fpm socket, the pool saying www-data:www-data 0660.
fn socket_facts() -> Facts {
    let path = "/run/php/php8.2-fpm.sock";
    Facts {
        pools: parse_pools(Path::new("/etc/php/8.2/fpm/pool.d/www.conf"), WWW_POOL),
        socket: Some(socket_info(path, 0, 0, 0o600)),
        canonical: Some(PathBuf::from(path)),
        users: BTreeMap::from([("www-data".into(), 33), ("root".into(), 0)]),
        groups: BTreeMap::from([("www-data".into(), 33), ("root".into(), 0)]),
        worker: Some(Identity {
            user: "www-data".into(),
            uid: 33,
            gid: 33,
            groups: vec![33],
        }),
        ..Facts::default()
    }
}

#[track_caller]
fn refusal(request: &ActionRequest, facts: &Facts) -> String {
    match act::plan(request, &settings(), facts) {
        Ok(plan) => panic!("expected a refusal, got {plan:?}"),
        Err(refusal) => refusal.0,
    }
}

#[test]
fn a_unit_outside_the_allow_list_is_refused_before_anything_is_read() {
    for unit in [
        "ssh.service",
        "dbus.service",
        "php8.2-fpm.socket",
        "nginx.service.d",
    ] {
        let why = admit(&unit_request(ActionKind::RestartUnit, unit), &settings())
            .expect_err(unit)
            .0;
        assert!(
            why.contains("not in this host's allow-list"),
            "{unit}: {why}"
        );
    }
    for unit in ["php8.2-fpm.service", "php7.4-fpm.service", "nginx.service"] {
        assert_eq!(
            admit(&unit_request(ActionKind::StartUnit, unit), &settings()),
            Ok(ActionKind::StartUnit)
        );
    }
}

#[test]
fn names_that_are_not_units_are_refused() {
    for unit in [
        "",
        "php8.2-fpm.service;reboot",
        "../x.service",
        "php 8.2-fpm.service",
        ".service",
    ] {
        assert!(
            admit(&unit_request(ActionKind::RestartUnit, unit), &settings()).is_err(),
            "{unit:?}"
        );
    }
}

#[test]
fn an_action_outside_allowed_actions_is_refused() {
    let mut settings = settings();
    settings.allowed = vec![ActionKind::RestartUnit];
    let why = admit(&request(ActionKind::ReloadNginx), &settings)
        .unwrap_err()
        .0;
    assert!(
        why.contains("`reload_nginx` is not in this host's allowed_actions"),
        "{why}"
    );
    let unknown = ActionRequest {
        kind: 42,
        ..request(ActionKind::Escalate)
    };
    assert!(admit(&unknown, &settings).is_err());
    assert!(admit(&request(ActionKind::Unspecified), &self::settings()).is_err());
}

#[test]
fn socket_globs_do_not_cross_directories_and_paths_must_be_plain() {
    let s = settings();
    assert!(admit(&socket_request("/run/php/php8.2-fpm.sock"), &s).is_ok());
    for path in [
        "/run/php/sub/x.sock",
        "/run/php/../../etc/shadow.sock",
        "/run/php/./x.sock",
        "/run//php/x.sock",
        "run/php/x.sock",
        "/run/php/x.sock/",
        "/tmp/x.sock",
        "",
    ] {
        assert!(admit(&socket_request(path), &s).is_err(), "{path:?}");
    }
    assert!(matches_any(
        &["php*-fpm.service".into()],
        "php8.2-fpm.service"
    ));
    assert!(
        !matches_any(&["[".into()], "["),
        "a broken glob matches nothing"
    );
}

#[test]
fn restart_plan_names_the_dbus_calls_and_the_pools_socket() {
    let plan = act::plan(
        &unit_request(ActionKind::RestartUnit, "php8.2-fpm.service"),
        &settings(),
        &php_facts("loaded"),
    )
    .unwrap();
    let Plan::RestartUnit(unit) = &plan else {
        panic!("{plan:?}")
    };
    assert_eq!(
        unit.upstreams,
        [Upstream::Unix("/run/php/php8.2-fpm.sock".into())]
    );
    assert_eq!(unit.verify_timeout_ms, 10_000);
    let lines = plan.lines().join("\n");
    assert!(lines.contains("Manager.Subscribe()"), "{lines}");
    assert!(
        lines.contains("RestartUnit(\"php8.2-fpm.service\", \"replace\")"),
        "{lines}"
    );
    assert!(
        lines.contains("ResetFailedUnit(\"php8.2-fpm.service\")"),
        "{lines}"
    );
    assert!(
        lines.contains("unix:/run/php/php8.2-fpm.sock accepts"),
        "{lines}"
    );
}

#[test]
fn start_plan_of_nginx_verifies_its_http_address_and_a_request_socket_wins() {
    let facts = Facts {
        unit: Some(unit_state("nginx.service", "loaded", "failed")),
        ..Facts::default()
    };
    let plan = act::plan(
        &unit_request(ActionKind::StartUnit, "nginx.service"),
        &settings(),
        &facts,
    )
    .unwrap();
    let Plan::StartUnit(unit) = plan else {
        panic!()
    };
    assert_eq!(
        unit.upstreams,
        [Upstream::Tcp("127.0.0.1:80".parse().unwrap())]
    );

    let mut asked = unit_request(ActionKind::StartUnit, "php8.2-fpm.service");
    asked.socket_path = "/run/php/other.sock".into();
    asked.verify_timeout_ms = 1234;
    let Plan::StartUnit(unit) = act::plan(&asked, &settings(), &php_facts("loaded")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        unit.upstreams,
        [Upstream::Unix("/run/php/other.sock".into())]
    );
    assert_eq!(unit.verify_timeout_ms, 1234);
}

#[test]
fn masked_and_missing_units_are_refused() {
    let req = unit_request(ActionKind::RestartUnit, "php8.2-fpm.service");
    assert!(refusal(&req, &php_facts("masked")).contains("masked"));
    assert!(refusal(&req, &php_facts("not-found")).contains("does not exist"));
    assert!(refusal(&req, &php_facts("error")).contains("LoadState=error"));
}

#[test]
fn socket_plan_takes_the_pools_values_and_shows_old_and_new() {
    let plan = act::plan(
        &socket_request("/run/php/php8.2-fpm.sock"),
        &settings(),
        &socket_facts(),
    )
    .unwrap();
    let Plan::FixSocketOwnership(socket) = &plan else {
        panic!()
    };
    assert_eq!(
        (socket.to.uid, socket.to.gid, socket.to.mode),
        (33, 33, 0o660)
    );
    assert_eq!(
        (socket.from.uid, socket.from.gid, socket.from.mode),
        (0, 0, 0o600)
    );
    assert!(socket.source.contains("pool [www]"), "{}", socket.source);
    assert_eq!(socket.lasting_note, None, "the pool agrees with the fix");
    let lines = plan.lines().join("\n");
    assert!(
        lines.contains(
            "chown /run/php/php8.2-fpm.sock root:root (0:0) -> www-data:www-data (33:33)"
        ),
        "{lines}"
    );
    assert!(
        lines.contains("chmod /run/php/php8.2-fpm.sock 0600 -> 0660"),
        "{lines}"
    );
}

#[test]
fn values_the_hosts_config_allows_are_applied_and_the_result_says_the_pool_makes_it_last() {
    let mut req = socket_request("/run/php/php8.2-fpm.sock");
    req.mode = "0600".into();
    let mut settings = settings();
    settings.actions.socket_ownership.modes = vec!["0600".into()];
    let Plan::FixSocketOwnership(socket) = act::plan(&req, &settings, &socket_facts()).unwrap()
    else {
        panic!()
    };
    assert_eq!(socket.to.mode, 0o600);
    assert!(
        socket.source.starts_with("the request"),
        "{}",
        socket.source
    );
    let note = socket.lasting_note.unwrap();
    assert!(note.contains("/etc/php/8.2/fpm/pool.d/www.conf"), "{note}");
    assert!(
        note.contains("the pool file is what makes this fix last"),
        "{note}"
    );
}

#[test]
fn a_request_repeating_the_pools_values_is_the_pools_plan() {
    let mut req = socket_request("/run/php/php8.2-fpm.sock");
    req.owner = "www-data".into();
    req.group = "www-data".into();
    req.mode = "660".into();
    let Plan::FixSocketOwnership(socket) = act::plan(&req, &settings(), &socket_facts()).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (socket.to.uid, socket.to.gid, socket.to.mode),
        (33, 33, 0o660)
    );
    assert!(socket.source.contains("pool [www]"), "{}", socket.source);
}

/// What a controller (or whoever holds its key) might ask to widen a socket: each is refused
/// by a host whose config allows nothing beyond the pool's values.
#[test]
fn a_controller_cannot_widen_a_sockets_permissions() {
    let path = "/run/php/php8.2-fpm.sock";
    let asks: [(&str, &str, &str, &str); 6] = [
        ("", "", "0777", "mode 0777"),
        ("", "", "0666", "mode 0666"),
        ("", "", "0662", "mode 0662"),
        ("root", "", "", "owner `root`"),
        ("", "root", "", "group `root`"),
        ("", "", "0600", "mode 0600"),
    ];
    for (owner, group, mode, named) in asks {
        let mut req = socket_request(path);
        req.owner = owner.into();
        req.group = group.into();
        req.mode = mode.into();
        let why = refusal(&req, &socket_facts());
        assert!(why.contains(named), "{owner}:{group} {mode}: {why}");
        assert!(
            why.contains("does not allow"),
            "{owner}:{group} {mode}: {why}"
        );
    }
}

#[test]
fn others_bits_are_never_set_unless_the_config_says_so() {
    // Listed in the config, but without allow_others: still refused.
    let mut settings = settings();
    settings.actions.socket_ownership.modes = vec!["0666".into()];
    let mut req = socket_request("/run/php/php8.2-fpm.sock");
    req.mode = "0666".into();
    let why = act::plan(&req, &settings, &socket_facts()).unwrap_err().0;
    assert!(why.contains("every local user"), "{why}");
    assert!(why.contains("allow_others"), "{why}");

    // A pool that itself says 0666: refused, and the pool file is named as what must change.
    let mut facts = socket_facts();
    facts.pools = parse_pools(
        Path::new("/etc/php/8.2/fpm/pool.d/www.conf"),
        &format!("{WWW_POOL}listen.mode = 0666\n"),
    );
    let why = refusal(&socket_request("/run/php/php8.2-fpm.sock"), &facts);
    assert!(why.contains("mode 0666"), "{why}");
    assert!(
        why.contains("www.conf (listen.mode) is what must change"),
        "{why}"
    );

    // The host says so: allowed.
    settings.actions.socket_ownership.allow_others = true;
    let Plan::FixSocketOwnership(socket) = act::plan(&req, &settings, &socket_facts()).unwrap()
    else {
        panic!()
    };
    assert_eq!(socket.to.mode, 0o666);
}

#[test]
fn the_pools_defaults_are_php_fpms_user_group_and_0660() {
    // No listen.owner/group/mode: php-fpm uses the pool's user and group, and 0660.
    let mut facts = socket_facts();
    facts.pools = parse_pools(
        Path::new("/etc/php/8.2/fpm/pool.d/www.conf"),
        "[www]\nuser = www-data\ngroup = www-data\nlisten = /run/php/php8.2-fpm.sock\n",
    );
    let Plan::FixSocketOwnership(socket) = act::plan(
        &socket_request("/run/php/php8.2-fpm.sock"),
        &settings(),
        &facts,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        (
            socket.to.owner.as_str(),
            socket.to.group.as_str(),
            socket.to.mode
        ),
        ("www-data", "www-data", 0o660)
    );

    // A pool naming no user at all gives nothing to set.
    facts.pools = parse_pools(
        Path::new("/etc/php/8.2/fpm/pool.d/www.conf"),
        "[www]\nlisten = /run/php/php8.2-fpm.sock\n",
    );
    let why = refusal(&socket_request("/run/php/php8.2-fpm.sock"), &facts);
    assert!(why.contains("no owner to set"), "{why}");
}

#[test]
fn a_pool_that_locks_nginx_out_is_refused_and_blamed() {
    let mut facts = socket_facts();
    facts.pools = parse_pools(
        Path::new("/etc/php/8.2/fpm/pool.d/www.conf"),
        "[www]\nuser = root\ngroup = root\nlisten = /run/php/php8.2-fpm.sock\nlisten.mode = 0600\n",
    );
    let why = refusal(&socket_request("/run/php/php8.2-fpm.sock"), &facts);
    assert!(why.contains("www-data (uid 33) may not connect"), "{why}");
    assert!(
        why.contains("www.conf (listen.owner/group/mode) is what must change"),
        "{why}"
    );
}

#[test]
fn links_files_missing_paths_and_links_above_are_refused() {
    let path = "/run/php/php8.2-fpm.sock";
    let req = socket_request(path);
    let mut facts = socket_facts();
    facts.socket.as_mut().unwrap().is_socket = false;
    assert!(refusal(&req, &facts).contains("not a socket"));

    let mut facts = socket_facts();
    let info = facts.socket.as_mut().unwrap();
    info.is_socket = false;
    info.is_symlink = true;
    assert!(refusal(&req, &facts).contains("symlink"));

    let mut facts = socket_facts();
    facts.socket.as_mut().unwrap().exists = false;
    assert!(refusal(&req, &facts).contains("nothing is at"));

    let mut facts = socket_facts();
    facts.canonical = Some("/var/run/elsewhere/php8.2-fpm.sock".into());
    assert!(refusal(&req, &facts).contains("resolves through a link"));
}

#[test]
fn unknown_owners_bad_modes_and_no_pool_are_refused() {
    let mut req = socket_request("/run/php/php8.2-fpm.sock");
    req.owner = "nobody-here".into();
    assert!(refusal(&req, &socket_facts()).contains("does not allow `nobody-here`"));
    // Even a name the host's config lists must exist.
    let mut settings = settings();
    settings.actions.socket_ownership.owners = vec!["nobody-here".into()];
    let why = act::plan(&req, &settings, &socket_facts()).unwrap_err().0;
    assert!(why.contains("no user `nobody-here`"), "{why}");

    let mut req = socket_request("/run/php/php8.2-fpm.sock");
    req.mode = "4770".into();
    assert!(refusal(&req, &socket_facts()).contains("set-id or sticky"));
    req.mode = "rw-rw----".into();
    assert!(refusal(&req, &socket_facts()).contains("not an octal mode"));

    let mut facts = socket_facts();
    facts.pools.clear();
    assert!(
        refusal(&socket_request("/run/php/php8.2-fpm.sock"), &facts).contains("no php-fpm pool")
    );
    assert_eq!(act::fix_socket_ownership::parse_mode("660"), Ok(0o660));
    assert_eq!(act::fix_socket_ownership::parse_mode("0660"), Ok(0o660));
}

#[test]
fn reload_goes_over_dbus_when_nginx_is_a_running_unit_else_by_signal() {
    let mut facts = Facts {
        nginx_unit: Some(unit_state("nginx.service", "loaded", "active")),
        ..Facts::default()
    };
    let plan = act::plan(&request(ActionKind::ReloadNginx), &settings(), &facts).unwrap();
    let Plan::ReloadNginx(reload) = &plan else {
        panic!()
    };
    assert_eq!(
        reload.via,
        ReloadVia::Systemd {
            unit: "nginx.service".into()
        }
    );
    assert_eq!(reload.test, ["/usr/sbin/nginx", "-t"]);
    let lines = plan.lines().join("\n");
    assert!(lines.contains("run `/usr/sbin/nginx -t`"), "{lines}");
    assert!(
        lines.contains("ReloadUnit(\"nginx.service\", \"replace\")"),
        "{lines}"
    );

    facts.nginx_unit = Some(unit_state("nginx.service", "not-found", "inactive"));
    let Plan::ReloadNginx(reload) =
        act::plan(&request(ActionKind::ReloadNginx), &settings(), &facts).unwrap()
    else {
        panic!()
    };
    assert_eq!(reload.via, ReloadVia::Signal);
}

#[test]
fn escalate_plans_nothing_on_the_host() {
    let plan = act::plan(
        &request(ActionKind::Escalate),
        &settings(),
        &Facts::default(),
    )
    .unwrap();
    assert!(plan.lines().join(" ").contains("nothing runs on this host"));
}

#[test]
fn actions_on_a_socket_lock_its_pools_unit() {
    let s = settings();
    let pools = parse_pools(Path::new("/etc/php/8.2/fpm/pool.d/www.conf"), WWW_POOL);
    assert_eq!(
        lock_key(&socket_request("/run/php/php8.2-fpm.sock"), &s, &pools).as_deref(),
        Some("php8.2-fpm.service")
    );
    assert_eq!(
        lock_key(&socket_request("/run/php/lonely.sock"), &s, &pools).as_deref(),
        Some("/run/php/lonely.sock")
    );
    assert_eq!(
        lock_key(
            &unit_request(ActionKind::RestartUnit, "php8.2-fpm.service"),
            &s,
            &pools
        )
        .as_deref(),
        Some("php8.2-fpm.service")
    );
    assert_eq!(
        lock_key(&request(ActionKind::ReloadNginx), &s, &pools).as_deref(),
        Some("nginx.service")
    );
    assert_eq!(lock_key(&request(ActionKind::Escalate), &s, &pools), None);
}

#[test]
fn listen_values_become_what_to_connect_to() {
    let tcp = |s: &str| Some(Upstream::Tcp(s.parse().unwrap()));
    assert_eq!(parse_listen("9000"), tcp("127.0.0.1:9000"));
    assert_eq!(parse_listen("127.0.0.1:9001"), tcp("127.0.0.1:9001"));
    assert_eq!(parse_listen("0.0.0.0:9002"), tcp("127.0.0.1:9002"));
    assert_eq!(parse_listen("[::]:9003"), tcp("[::1]:9003"));
    assert_eq!(parse_listen("localhost:9004"), tcp("127.0.0.1:9004"));
    assert_eq!(
        parse_listen("/run/php/x.sock"),
        Some(Upstream::Unix("/run/php/x.sock".into()))
    );
    for junk in ["", "db.example:9000", "x", ":", "99999", "\u{0}"] {
        assert_eq!(parse_listen(junk), None, "{junk:?}");
    }
}

/// restart_unit and start_unit connect to their socket_path as root to verify: the path gets
/// the same rules as a socket to fix.
#[test]
fn a_restart_or_start_socket_path_must_be_plain_and_allow_listed() {
    let s = settings();
    for kind in [ActionKind::RestartUnit, ActionKind::StartUnit] {
        let with = |path: &str| ActionRequest {
            socket_path: path.into(),
            ..unit_request(kind, "php8.2-fpm.service")
        };
        assert_eq!(admit(&with(""), &s), Ok(kind), "no socket: a TCP upstream");
        assert_eq!(admit(&with("/run/php/php8.2-fpm.sock"), &s), Ok(kind));
        for (path, why) in [
            (
                "/run/dbus/system_bus_socket",
                "not in this host's allow-list",
            ),
            ("/var/run/docker.sock", "not in this host's allow-list"),
            (
                "/run/php/../dbus/system_bus_socket",
                "not a plain absolute path",
            ),
            ("/run/php/../../run/php/x.sock", "not a plain absolute path"),
            ("/run/php/./x.sock", "not a plain absolute path"),
            ("run/php/x.sock", "not a plain absolute path"),
            ("/run/php//x.sock", "not a plain absolute path"),
            ("/run/php/x.sock\0", "not a plain absolute path"),
        ] {
            let refused = admit(&with(path), &s).expect_err(path).0;
            assert!(refused.contains(why), "{kind} {path:?}: {refused}");
        }
    }
}

#[test]
fn a_sighup_goes_only_to_a_process_that_runs_the_nginx_binary() {
    use gatemend_agent::act::reload_nginx::is_nginx;
    let binaries = [PathBuf::from("/usr/sbin/nginx")];
    let exe = |p: &str| Some(PathBuf::from(p));
    assert_eq!(
        is_nginx(
            exe("/usr/sbin/nginx").as_deref(),
            Some("nginx\n"),
            &binaries
        ),
        Ok(())
    );
    assert_eq!(
        is_nginx(exe("/usr/sbin/nginx (deleted)").as_deref(), None, &binaries),
        Ok(()),
        "a binary upgraded under a running master"
    );
    // A stale pid file whose pid now belongs to something else, even one named nginx.
    for (path, comm) in [
        ("/usr/sbin/sshd", "sshd"),
        ("/usr/bin/python3.11", "nginx"),
        ("/tmp/nginx", "nginx"),
        ("/usr/sbin/nginx-debug", "nginx-debug"),
    ] {
        let why = is_nginx(exe(path).as_deref(), Some(comm), &binaries).unwrap_err();
        assert!(why.contains("not /usr/sbin/nginx"), "{path}: {why}");
    }
    // Without a readable executable, the command name decides; no /proc entry: refused.
    assert_eq!(is_nginx(None, Some("nginx\n"), &binaries), Ok(()));
    assert!(is_nginx(None, Some("bash"), &binaries).is_err());
    assert!(is_nginx(None, None, &binaries).is_err());
    assert!(is_nginx(exe("/usr/sbin/nginx").as_deref(), None, &[]).is_err());
}

#[test]
fn the_signal_plan_says_the_process_is_checked_first() {
    let plan = act::plan(
        &request(ActionKind::ReloadNginx),
        &settings(),
        &Facts::default(),
    )
    .unwrap();
    let lines = plan.lines().join("\n");
    assert!(
        lines.contains("once /proc shows it runs /usr/sbin/nginx"),
        "{lines}"
    );
}

#[test]
fn a_deadline_is_the_requests_or_the_default_and_never_above_the_maximum() {
    let s = settings();
    let with = |ms: u32| ActionRequest {
        deadline_ms: ms,
        ..request(ActionKind::Escalate)
    };
    let d = s.deadline(&with(0));
    assert_eq!((d.duration.as_millis(), d.clamped_from_ms), (60_000, None));
    let d = s.deadline(&with(50_000));
    assert_eq!((d.duration.as_millis(), d.clamped_from_ms), (50_000, None));
    // 49 days of holding a unit's lock, asked by a u32: cut to 10 minutes.
    let d = s.deadline(&with(u32::MAX));
    assert_eq!(
        (d.duration.as_millis(), d.clamped_from_ms),
        (600_000, Some(u64::from(u32::MAX)))
    );
    let d = s.deadline(&with(600_001));
    assert_eq!(d.duration.as_millis(), 600_000);
}

// ---- edit_config ----------------------------------------------------------------------------

const SITE: &str = "/etc/nginx/sites-enabled/default";
const SITE_REAL: &str = "/etc/nginx/sites-available/default";
const POOL_FILE: &str = "/etc/php/8.2/fpm/pool.d/www.conf";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// The testbed's `nginx -T` (Debian's layout, the site pointing at php8.2's socket) with the
/// site pointed at php7.4's instead: the demo's wrong socket.
fn nginx_dump() -> String {
    fixture("nginx/debian_default.txt").replace(
        "fastcgi_pass unix:/run/php/php8.2-fpm.sock;",
        "fastcgi_pass unix:/run/php/php7.4-fpm.sock;",
    )
}

fn site_text() -> String {
    let dump = nginx_dump();
    gatemend_agent::probe::nginx::files(&dump)
        .into_iter()
        .find(|(path, _)| path == Path::new(SITE))
        .map(|(_, text)| text.to_owned())
        .unwrap()
}

/// The edit diagnosis proposes for the wrong socket, computed with the editor.
fn socket_edit(new: &str) -> ConfigEdit {
    let text = site_text();
    let typed = NginxEdit {
        file: SITE.into(),
        block_path: BlockPath {
            outer: vec![BlockStep::new("http", &[], [])],
            inner: vec![
                BlockStep::new("server", &[], [&"_".to_owned()]),
                BlockStep::new("location", &["~".into(), "\\.php$".into()], []),
            ],
        },
        directive: EditableDirective::FastcgiPass,
        old: Some("unix:/run/php/php7.4-fpm.sock".into()),
        new: new.into(),
    };
    let diff = apply_edit(&text, &typed)
        .map(|r| r.diff)
        .unwrap_or_default();
    ConfigEdit {
        kind: ConfigKind::Nginx as i32,
        file: SITE.into(),
        block: vec!["server[_]".into(), "location[~ \\.php$]".into()],
        block_outer: vec!["http".into()],
        directive: "fastcgi_pass".into(),
        old_value: "unix:/run/php/php7.4-fpm.sock".into(),
        new_value: new.into(),
        file_sha256: sha256_hex(&text),
        diff,
        why: "php8.2-fpm.service listens on /run/php/php8.2-fpm.sock".into(),
    }
}

fn pool_edit(new: &str) -> ConfigEdit {
    let text = fixture("php_fpm/www.conf");
    let typed = PoolEdit {
        file: POOL_FILE.into(),
        pool: "www".into(),
        key: PoolKey::MaxChildren,
        old: Some("5".into()),
        new: new.into(),
    };
    let diff = apply_pool_edit(&text, &typed)
        .map(|r| r.diff)
        .unwrap_or_default();
    ConfigEdit {
        kind: ConfigKind::PhpFpmPool as i32,
        file: POOL_FILE.into(),
        block: vec!["www".into()],
        block_outer: Vec::new(),
        directive: "pm.max_children".into(),
        old_value: "5".into(),
        new_value: new.into(),
        file_sha256: sha256_hex(&text),
        diff,
        why: String::new(),
    }
}

fn edit_request(edit: ConfigEdit) -> ActionRequest {
    ActionRequest {
        action_id: "web1/f1/edit".into(),
        edit: Some(edit),
        ..request(ActionKind::EditConfig)
    }
}

fn owner() -> FileOwner {
    FileOwner {
        uid: 0,
        gid: 0,
        mode: 0o644,
    }
}

/// What observe reads on the testbed host: the site through its link, `nginx -T`, nginx's
/// unit running.
fn site_facts() -> Facts {
    let dump = nginx_dump();
    let config = gatemend_agent::probe::nginx::parse(&dump);
    Facts {
        edit: Some(EditFacts {
            canonical: Ok(SITE_REAL.into()),
            file: Ok(FileFacts {
                text: site_text(),
                owner: owner(),
                regular: true,
            }),
            nginx: Ok(NginxFacts {
                files: config.files,
                passes: config.passes,
            }),
            nameservers: vec!["127.0.0.53".into()],
            unit: Some(unit_state("nginx.service", "loaded", "active")),
        }),
        ..Facts::default()
    }
}

fn pool_facts() -> Facts {
    let mut facts = site_facts();
    let www = fixture("php_fpm/www.conf");
    facts.pools = parse_pools(Path::new(POOL_FILE), &www);
    let edit = facts.edit.as_mut().unwrap();
    edit.canonical = Ok(POOL_FILE.into());
    edit.file = Ok(FileFacts {
        text: www,
        owner: owner(),
        regular: true,
    });
    edit.unit = Some(unit_state("php8.2-fpm.service", "loaded", "active"));
    // nginx as it is on a healthy host: PHP goes to the pool's socket.
    let config = gatemend_agent::probe::nginx::parse(&fixture("nginx/debian_default.txt"));
    edit.nginx = Ok(NginxFacts {
        files: config.files,
        passes: config.passes,
    });
    facts
}

#[track_caller]
fn edit_refused(edit: ConfigEdit, facts: &Facts) -> String {
    match act::plan(&edit_request(edit), &settings(), facts) {
        Ok(plan) => panic!("expected a refusal, got {plan:?}"),
        Err(refusal) => refusal.0,
    }
}

#[test]
fn the_wrong_socket_edit_is_planned_with_its_diff_and_every_step() {
    let edit = socket_edit("unix:/run/php/php8.2-fpm.sock");
    assert_eq!(
        admit(&edit_request(edit.clone()), &settings()),
        Ok(ActionKind::EditConfig)
    );
    let plan = act::plan(&edit_request(edit.clone()), &settings(), &site_facts()).unwrap();
    let Plan::EditConfig(p) = &plan else {
        panic!("{plan:?}")
    };
    assert_eq!(p.file, Path::new(SITE));
    assert_eq!(
        p.canonical,
        Path::new(SITE_REAL),
        "the link's target is written"
    );
    assert_eq!(p.sha256_before, edit.file_sha256);
    assert_eq!(p.diff, edit.diff);
    assert!(
        p.new_text
            .contains("fastcgi_pass unix:/run/php/php8.2-fpm.sock;")
    );
    assert_eq!(p.reload.unit, "nginx.service");
    assert_eq!(p.reload.test, ["/usr/sbin/nginx", "-t"]);
    // The temp file sits beside the file, hidden from `include *` and `*.conf`.
    let temp = p.temp.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        p.temp.parent(),
        Some(Path::new("/etc/nginx/sites-available"))
    );
    assert!(
        temp.starts_with(".default.gatemend-") && temp.ends_with(".tmp"),
        "{temp}"
    );
    // The journal and the backup are in the state directory, never under /etc/nginx.
    assert_eq!(
        p.journal_dir,
        Path::new("/var/lib/gatemend/state/edits/nginx.service")
    );
    let get = p.get.as_ref().unwrap();
    assert_eq!(
        (get.path.as_str(), get.host.as_deref()),
        ("/index.php", None)
    );
    let lines = plan.lines().join("\n");
    for wanted in [
        "-        fastcgi_pass unix:/run/php/php7.4-fpm.sock;",
        "+        fastcgi_pass unix:/run/php/php8.2-fpm.sock;",
        "/var/lib/gatemend/state/edits/nginx.service/",
        "run `/usr/sbin/nginx -t`",
        "ReloadUnit(\"nginx.service\", \"replace\")",
        "GET /index.php via 127.0.0.1:80 answers < 500",
        "restore the backup",
    ] {
        assert!(lines.contains(wanted), "{wanted:?} not in\n{lines}");
    }
    assert_eq!(
        lock_key(&edit_request(edit), &settings(), &[]).as_deref(),
        Some("nginx.service")
    );
}

#[test]
fn a_file_changed_since_the_proposal_is_refused_as_stale() {
    let mut facts = site_facts();
    if let Some(FileFacts { text, .. }) = facts.edit.as_mut().and_then(|e| e.file.as_mut().ok()) {
        text.push_str("# changed by hand\n");
    }
    let why = edit_refused(socket_edit("unix:/run/php/php8.2-fpm.sock"), &facts);
    assert!(
        why.starts_with("stale: /etc/nginx/sites-enabled/default has changed"),
        "{why}"
    );
    assert!(why.contains("nothing was changed"), "{why}");
}

#[test]
fn a_diff_other_than_the_approved_one_is_refused() {
    let mut edit = socket_edit("unix:/run/php/php8.2-fpm.sock");
    edit.diff = edit.diff.replace("php8.2", "php8.3");
    let why = edit_refused(edit, &site_facts());
    assert!(
        why.contains("the approved diff is not what this edit does"),
        "{why}"
    );
}

#[test]
fn edits_outside_the_closed_set_the_allow_list_or_the_bounds_are_refused_before_reading() {
    let s = settings();
    let with = |f: &dyn Fn(&mut ConfigEdit)| {
        let mut edit = socket_edit("unix:/run/php/php8.2-fpm.sock");
        f(&mut edit);
        admit(&edit_request(edit), &s).map_err(|r| r.0)
    };
    type Change = Box<dyn Fn(&mut ConfigEdit)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        ("no edit", Box::new(|_| {}), ""),
        (
            "a directive outside the closed set",
            Box::new(|e| e.directive = "include".into()),
            "`include` is not an nginx directive this agent edits",
        ),
        (
            "a path outside /etc/nginx",
            Box::new(|e| e.file = "/etc/shadow".into()),
            "not in this host's allow-list for nginx edits",
        ),
        (
            "a path climbing out of /etc/nginx",
            Box::new(|e| e.file = "/etc/nginx/../shadow".into()),
            "not a plain absolute path",
        ),
        (
            "an nginx edit of a pool file",
            Box::new(|e| e.file = POOL_FILE.into()),
            "not in this host's allow-list for nginx edits",
        ),
        (
            "a target off this host",
            Box::new(|e| e.new_value = "10.0.0.9:9000".into()),
            "may not point at `10.0.0.9:9000`",
        ),
        (
            "nginx syntax in the value",
            Box::new(|e| e.new_value = "unix:/run/php/x.sock; include /etc/shadow".into()),
            "refused",
        ),
        (
            "a directive out of its context",
            Box::new(|e| e.block = vec!["server[_]".into()]),
            "fastcgi_pass belongs in a location",
        ),
        (
            "a hash that is not one",
            Box::new(|e| e.file_sha256 = "abc".into()),
            "not a SHA-256",
        ),
        (
            "no kind",
            Box::new(|e| e.kind = 0),
            "not nginx or php_fpm_pool",
        ),
    ];
    for (what, change, why) in cases {
        if what == "no edit" {
            let refused = admit(&request(ActionKind::EditConfig), &s).unwrap_err().0;
            assert!(refused.contains("names no edit"), "{refused}");
            continue;
        }
        let refused = with(&*change).expect_err(what);
        assert!(refused.contains(why), "{what}: {refused}");
    }
}

#[test]
fn values_beyond_the_hosts_bounds_are_refused() {
    let s = settings();
    let timeout = |value: &str| ConfigEdit {
        directive: "fastcgi_read_timeout".into(),
        old_value: String::new(),
        new_value: value.into(),
        ..socket_edit("unix:/run/php/php8.2-fpm.sock")
    };
    assert_eq!(
        admit(&edit_request(timeout("300s")), &s),
        Ok(ActionKind::EditConfig)
    );
    let why = admit(&edit_request(timeout("301s")), &s).unwrap_err().0;
    assert!(
        why.contains("`301s` is above actions.edits.max_timeout (300s)"),
        "{why}"
    );
    let why = admit(&edit_request(timeout("1h")), &s).unwrap_err().0;
    assert!(why.contains("max_timeout"), "{why}");
    let buffer = |directive: &str, value: &str| ConfigEdit {
        directive: directive.into(),
        new_value: value.into(),
        ..timeout("60s")
    };
    assert!(admit(&edit_request(buffer("fastcgi_buffer_size", "1m")), &s).is_ok());
    let why = admit(&edit_request(buffer("fastcgi_buffer_size", "2m")), &s)
        .unwrap_err()
        .0;
    assert!(why.contains("above actions.edits.max_buffer (1m)"), "{why}");
    let why = admit(&edit_request(buffer("fastcgi_buffers", "65 4k")), &s)
        .unwrap_err()
        .0;
    assert!(
        why.contains("65 buffers is above actions.edits.max_buffers (64)"),
        "{why}"
    );
    assert!(admit(&edit_request(pool_edit("256")), &s).is_ok());
    let why = admit(&edit_request(pool_edit("257")), &s).unwrap_err().0;
    assert!(
        why.contains("pm.max_children `257` is above actions.edits.max_children (256)"),
        "{why}"
    );
    // A host that allows only the passes refuses a timeout at once.
    let mut narrow = settings();
    narrow.actions.edits.directives = vec![
        EditName::Nginx(EditableDirective::FastcgiPass),
        EditName::Nginx(EditableDirective::ProxyPass),
    ];
    let why = admit(&edit_request(timeout("60s")), &narrow).unwrap_err().0;
    assert!(
        why.contains("`fastcgi_read_timeout` is not in this host's allow-list (actions.edits.directives: fastcgi_pass, proxy_pass)"),
        "{why}"
    );
}

#[test]
fn a_link_out_of_the_allowed_directories_a_file_nginx_does_not_read_and_a_stopped_unit_are_refused()
{
    let edit = || socket_edit("unix:/run/php/php8.2-fpm.sock");
    let mut escaped = site_facts();
    escaped.edit.as_mut().unwrap().canonical = Ok("/root/evil.conf".into());
    let why = edit_refused(edit(), &escaped);
    assert!(
        why.contains("resolves to /root/evil.conf, outside this host's allow-list"),
        "{why}"
    );

    let mut unread = site_facts();
    if let Ok(n) = unread.edit.as_mut().unwrap().nginx.as_mut() {
        n.files.retain(|f| f != Path::new(SITE));
    }
    let why = edit_refused(edit(), &unread);
    assert!(
        why.contains("nginx does not read /etc/nginx/sites-enabled/default"),
        "{why}"
    );

    let mut broken = site_facts();
    broken.edit.as_mut().unwrap().nginx = Err("`/usr/sbin/nginx -T` fails now: [emerg] x".into());
    let why = edit_refused(edit(), &broken);
    assert!(why.contains("does not test clean"), "{why}");

    let mut stopped = site_facts();
    stopped.edit.as_mut().unwrap().unit = Some(unit_state("nginx.service", "loaded", "inactive"));
    let why = edit_refused(edit(), &stopped);
    assert!(why.contains("nginx.service is inactive"), "{why}");

    // An editor refusal reaches the operator as it is: the old value is not in the file.
    let mut stale_value = edit();
    stale_value.old_value = "unix:/run/php/php7.3-fpm.sock".into();
    stale_value.diff.clear();
    let why = edit_refused(stale_value, &site_facts());
    assert!(
        why.contains("stale edit: fastcgi_pass is `unix:/run/php/php7.4-fpm.sock`"),
        "{why}"
    );
}

#[test]
fn a_resolver_may_only_name_the_hosts_own_name_servers() {
    let resolver = |value: &str| ConfigEdit {
        block: Vec::new(),
        directive: "resolver".into(),
        old_value: String::new(),
        new_value: value.into(),
        diff: String::new(),
        ..socket_edit("unix:/run/php/php8.2-fpm.sock")
    };
    // The site file has no http block of its own: the outer path says where it is included.
    let why = edit_refused(resolver("9.9.9.9 valid=30s"), &site_facts());
    assert!(why.contains("resolver `9.9.9.9` is not one of this host's name servers (/etc/resolv.conf: 127.0.0.53)"), "{why}");
}

#[test]
fn a_pool_edit_reloads_its_php_fpm_and_is_verified_through_the_location_using_its_socket() {
    let edit = pool_edit("8");
    let facts = pool_facts();
    let plan = act::plan(&edit_request(edit.clone()), &settings(), &facts).unwrap();
    let Plan::EditConfig(p) = &plan else {
        panic!("{plan:?}")
    };
    assert_eq!(p.reload.unit, "php8.2-fpm.service");
    assert_eq!(p.reload.test, ["/usr/sbin/php-fpm8.2", "-t"]);
    assert_eq!(p.place, "[www]");
    assert!(p.diff.contains("+pm.max_children = 8"), "{}", p.diff);
    // The fixture's site passes PHP to the pool's socket in `location ~ \.php$`.
    assert_eq!(p.get.as_ref().map(|g| g.path.as_str()), Some("/index.php"));
    assert_eq!(
        lock_key(&edit_request(edit.clone()), &settings(), &facts.pools).as_deref(),
        Some("php8.2-fpm.service")
    );
    let mut wrong_pool = edit;
    wrong_pool.block = vec!["other".into()];
    wrong_pool.diff.clear();
    let why = edit_refused(wrong_pool, &facts);
    assert!(why.contains("holds no php-fpm pool [other]"), "{why}");
}

#[test]
fn the_verify_get_is_a_path_the_location_matches() {
    let addr = "127.0.0.1:80".parse().unwrap();
    let at = |steps: &[(&str, &str)]| {
        let inner = steps
            .iter()
            .map(|(d, k)| {
                BlockStep::try_from(if k.is_empty() {
                    d.to_string()
                } else {
                    format!("{d}[{k}]")
                })
                .unwrap()
            })
            .collect();
        let get = act::edit_config::verify_get(
            &BlockPath {
                outer: Vec::new(),
                inner,
            },
            addr,
        );
        (get.path, get.host)
    };
    assert_eq!(
        at(&[("http", ""), ("server", "_"), ("location", "~ \\.php$")]),
        ("/index.php".into(), None)
    );
    assert_eq!(
        at(&[
            ("http", ""),
            ("server", "shop.example www.shop.example"),
            ("location", "/api/")
        ]),
        ("/api/".into(), Some("shop.example".into()))
    );
    assert_eq!(
        at(&[
            ("http", ""),
            ("server", "*.example"),
            ("location", "= /health")
        ]),
        ("/health".into(), None)
    );
    assert_eq!(at(&[("http", ""), ("server", "_")]), ("/".into(), None));
    assert_eq!(at(&[("events", "")]), ("/".into(), None));
    assert_eq!(
        at(&[("http", ""), ("server", "_"), ("location", "@backend")]),
        ("/".into(), None)
    );
}

#[test]
fn an_edit_is_read_as_diagnose_prints_it() {
    let json = r#"{"kind":"nginx","file":"/etc/nginx/sites-enabled/default","block":["server[_]","location[~ \\.php$]"],"block_outer":["http"],"directive":"fastcgi_pass","old_value":"unix:/run/php/php7.4-fpm.sock","new_value":"unix:/run/php/php8.2-fpm.sock","file_sha256":"00","diff":"d","why":"w"}"#;
    let edit = act::edit_config::parse_edit_json(json).unwrap();
    assert_eq!(edit.kind, ConfigKind::Nginx as i32);
    assert_eq!(edit.block, ["server[_]", "location[~ \\.php$]"]);
    assert_eq!(edit.block_outer, ["http"]);
    assert!(act::edit_config::parse_edit_json(r#"{"kind":"apache"}"#).is_err());
    assert!(act::edit_config::parse_edit_json(&json.replace("\"new_value\"", "\"new\"")).is_err());
}
