//! Dry runs on real hosts: every action returns its plan (the D-Bus calls, the chown with old
//! and new owner and mode, the nginx -t it would run) and changes nothing: NRestarts, MainPID,
//! the socket's owner and mode and nginx's worker pids stay as they were.

mod act_support;

use act_support::{PHP_SOCKET, PHP_UNIT, act, boot, lstat, nginx_pids, prop, www_data};

#[test]
fn every_action_in_dry_run_plans_and_changes_nothing() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let unit_before = (
        prop(host, PHP_UNIT, "NRestarts"),
        prop(host, PHP_UNIT, "MainPID"),
    );

    let planned = act(host, &["--dry-run", "restart_unit", "--unit", PHP_UNIT]);
    assert_eq!(planned.code, 0, "{planned}");
    assert_eq!(planned.status(), "planned", "{planned}");
    assert_eq!(planned.step_names(), ["precheck", "plan"], "{planned}");
    assert!(
        planned
            .step("plan")
            .contains("Manager.RestartUnit(\"php8.2-fpm.service\", \"replace\")"),
        "{planned}"
    );
    let planned = act(host, &["start_unit", "--dry-run", "--unit", PHP_UNIT]);
    assert_eq!(planned.status(), "planned", "{planned}");
    assert!(
        planned.step("plan").contains("Manager.StartUnit("),
        "{planned}"
    );
    assert_eq!(
        (
            prop(host, PHP_UNIT, "NRestarts"),
            prop(host, PHP_UNIT, "MainPID")
        ),
        unit_before
    );

    host.sh(&format!(
        "chown root:root {PHP_SOCKET} && chmod 600 {PHP_SOCKET}"
    ))
    .unwrap();
    let (uid, gid) = www_data(host);
    let planned = act(
        host,
        &["fix_socket_ownership", "--socket", PHP_SOCKET, "--dry-run"],
    );
    assert_eq!(planned.status(), "planned", "{planned}");
    let plan = planned.step("plan");
    assert!(
        plan.contains(&format!(
            "chown {PHP_SOCKET} root:root (0:0) -> www-data:www-data ({uid}:{gid})"
        )),
        "{planned}"
    );
    assert!(
        plan.contains(&format!("chmod {PHP_SOCKET} 0600 -> 0660")),
        "{planned}"
    );
    assert_eq!(lstat(host, PHP_SOCKET), (0, 0, 0o600, true, false));

    host.write(
        "/etc/nginx/conf.d/gatemend-dry.conf",
        "server { listen 8083; return 200; }\n",
    )
    .unwrap();
    let pids = nginx_pids(host);
    let planned = act(host, &["--dry-run", "reload_nginx"]);
    assert_eq!(planned.status(), "planned", "{planned}");
    let plan = planned.step("plan");
    assert!(plan.contains("run `/usr/sbin/nginx -t`"), "{planned}");
    assert!(
        plan.contains("ReloadUnit(\"nginx.service\", \"replace\")"),
        "{planned}"
    );
    assert_eq!(nginx_pids(host), pids);

    let planned = act(host, &["--dry-run", "escalate"]);
    assert_eq!(planned.status(), "planned", "{planned}");
}
