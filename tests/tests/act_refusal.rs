//! Refusals on real hosts: a unit outside the allow-list, an action outside allowed_actions
//! and a masked unit are refused with the reason, and the unit is left exactly as it was.
//! escalate runs nothing.

mod act_support;

use act_support::{PHP_UNIT, act, boot, nginx_pids, prop};

/// What shows that a unit was touched: its main process, restarts and last activation.
fn fingerprint(host: &gatemend_tests::testbed::Host, unit: &str) -> Vec<String> {
    [
        "MainPID",
        "NRestarts",
        "ActiveEnterTimestampMonotonic",
        "ActiveState",
    ]
    .iter()
    .map(|p| prop(host, unit, p))
    .collect()
}

#[test]
fn units_outside_the_allow_list_are_refused_and_untouched() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let refused = act(host, &["restart_unit", "--unit", "ssh.service"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(
        refused
            .message()
            .contains("unit `ssh.service` is not in this host's allow-list"),
        "{refused}"
    );

    // A unit that exists and runs, but is not the host's to let anyone restart.
    let unit = "systemd-journald.service";
    let before = fingerprint(host, unit);
    for kind in ["restart_unit", "start_unit"] {
        let refused = act(host, &[kind, "--unit", unit]);
        assert_eq!(refused.status(), "refused", "{refused}");
        assert_eq!(refused.step_names(), ["precheck"], "{refused}");
    }
    assert_eq!(fingerprint(host, unit), before);
}

#[test]
fn an_action_outside_allowed_actions_is_refused() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let config = act_support::CONFIG.replace(
        "allowed_actions: [restart_unit, start_unit, fix_socket_ownership, reload_nginx, escalate]",
        "allowed_actions: [restart_unit]",
    );
    host.write("/etc/gatemend/agent.yaml", &config).unwrap();
    let pids = nginx_pids(host);
    let refused = act(host, &["reload_nginx"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused
            .message()
            .contains("action `reload_nginx` is not in this host's allowed_actions"),
        "{refused}"
    );
    assert_eq!(nginx_pids(host), pids);
}

#[test]
fn a_masked_unit_is_refused_even_when_allow_listed() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.exec(&["systemctl", "mask", PHP_UNIT]).unwrap();
    let before = fingerprint(host, PHP_UNIT);
    let refused = act(host, &["restart_unit", "--unit", PHP_UNIT]);
    assert_eq!(refused.code, 1, "{refused}");
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(refused.message().contains("is masked"), "{refused}");
    assert_eq!(fingerprint(host, PHP_UNIT), before);
}

#[test]
fn escalate_runs_nothing_on_the_host() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let escalated = act(host, &["escalate"]);
    assert_eq!(escalated.code, 0, "{escalated}");
    assert_eq!(escalated.status(), "succeeded", "{escalated}");
    assert!(
        escalated.message().contains("nothing ran on the host"),
        "{escalated}"
    );
}
