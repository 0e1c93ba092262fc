//! restart_unit and start_unit on real hosts: php-fpm comes back with a new MainPID and its
//! socket accepts again; a unit that cannot start is reported with its Result and journal,
//! and started at most once more (only when its start limit was hit).

mod act_support;

use act_support::{PHP_SOCKET, PHP_UNIT, act, assert_php_serves, boot, get, prop};

#[test]
fn stopped_php_fpm_is_started_and_a_running_one_restarted_with_a_new_main_pid() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let first_pid = prop(host, PHP_UNIT, "MainPID");
    host.exec(&["systemctl", "stop", PHP_UNIT]).unwrap();
    assert_eq!(get(host, 80, "/index.php").unwrap().status, 502);

    let started = act(host, &["start_unit", "--unit", PHP_UNIT]);
    assert_eq!(started.code, 0, "{started}");
    assert_eq!(started.status(), "succeeded", "{started}");
    assert_eq!(
        started.step_names(),
        ["precheck", "do", "verify"],
        "{started}"
    );
    assert!(
        started
            .step("do")
            .contains("StartUnit(\"php8.2-fpm.service\", \"replace\")"),
        "{started}"
    );
    assert!(started.step("do").contains("result=done"), "{started}");
    assert!(
        started
            .step("verify")
            .contains(&format!("connect unix:{PHP_SOCKET}: accepted")),
        "{started}"
    );
    let second_pid = prop(host, PHP_UNIT, "MainPID");
    assert_ne!(second_pid, "0");
    assert_ne!(second_pid, first_pid);
    assert_eq!(prop(host, PHP_UNIT, "ActiveState"), "active");
    assert_php_serves(host);

    let restarted = act(host, &["restart_unit", "--unit", PHP_UNIT]);
    assert_eq!(restarted.code, 0, "{restarted}");
    assert_eq!(restarted.status(), "succeeded", "{restarted}");
    assert!(restarted.step("do").contains("RestartUnit("), "{restarted}");
    let third_pid = prop(host, PHP_UNIT, "MainPID");
    assert_ne!(third_pid, "0");
    assert_ne!(third_pid, second_pid);
    assert!(
        restarted
            .step("verify")
            .contains(&format!("MainPID {second_pid} -> {third_pid}")),
        "{restarted}"
    );
    assert_php_serves(host);
}

/// A oneshot unit that counts its runs in /var/tmp/NAME.runs and fails loudly.
fn broken_unit(name: &str, extra: &str) -> String {
    format!(
        "[Unit]\nDescription=gatemend test unit that cannot start\n{extra}\n\
         [Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c 'echo run >> /var/tmp/{name}.runs; echo \"{name}: cannot open /etc/{name}.conf\" >&2; exit 3'\n"
    )
}

#[test]
fn a_unit_that_fails_to_start_is_reported_with_result_and_journal_and_run_once() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let name = "gatemend-broken";
    host.write(
        &format!("/etc/systemd/system/{name}.service"),
        &broken_unit(name, ""),
    )
    .unwrap();
    host.exec(&["systemctl", "daemon-reload"]).unwrap();

    let acted = act(host, &["start_unit", "--unit", &format!("{name}.service")]);
    assert_eq!(acted.code, 1, "{acted}");
    assert_eq!(acted.status(), "failed", "{acted}");
    assert!(acted.message().contains("Result=exit-code"), "{acted}");
    let done = acted.step("do");
    assert!(done.contains("result=failed"), "{acted}");
    assert!(
        done.contains("journalctl -u gatemend-broken.service"),
        "{acted}"
    );
    assert!(
        done.contains("cannot open /etc/gatemend-broken.conf"),
        "{acted}"
    );
    assert!(
        !done.contains("ResetFailedUnit"),
        "no start limit was hit: {acted}"
    );
    // Ran once: no retry loop (the agent has exited; nothing of ours can start it again).
    assert_eq!(
        host.read(&format!("/var/tmp/{name}.runs")).unwrap(),
        "run\n"
    );
    assert_eq!(
        prop(host, &format!("{name}.service"), "ActiveState"),
        "failed"
    );
}

#[test]
fn a_unit_at_its_start_limit_is_reset_and_started_exactly_once_more() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let name = "gatemend-broken-limited";
    let unit = format!("{name}.service");
    host.write(
        &format!("/etc/systemd/system/{unit}"),
        &broken_unit(name, "StartLimitIntervalSec=1h\nStartLimitBurst=1"),
    )
    .unwrap();
    host.exec(&["systemctl", "daemon-reload"]).unwrap();
    // The one start its limit allows, used up by hand.
    let first = host.output(&["systemctl", "start", &unit]).unwrap();
    assert!(!first.status.success());
    assert_eq!(
        host.read(&format!("/var/tmp/{name}.runs")).unwrap(),
        "run\n"
    );

    let acted = act(host, &["start_unit", "--unit", &unit]);
    assert_eq!(acted.code, 1, "{acted}");
    assert_eq!(acted.status(), "failed", "{acted}");
    let done = acted.step("do");
    assert!(done.contains("start-limit-hit"), "{acted}");
    assert!(
        done.contains("ResetFailedUnit(\"gatemend-broken-limited.service\") -> ok"),
        "{acted}"
    );
    assert_eq!(
        done.matches("StartUnit(").count(),
        2,
        "one start, one after the reset: {acted}"
    );
    assert!(acted.message().contains("Result=exit-code"), "{acted}");
    // The reset allowed exactly one more run.
    assert_eq!(
        host.read(&format!("/var/tmp/{name}.runs")).unwrap(),
        "run\nrun\n"
    );
}

#[test]
fn an_action_past_its_deadline_is_timed_out_with_the_steps_done_so_far() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let unit = "gatemend-broken-slow.service";
    host.write(
        &format!("/etc/systemd/system/{unit}"),
        "[Service]\nType=oneshot\nExecStart=/bin/sleep 600\n",
    )
    .unwrap();
    host.exec(&["systemctl", "daemon-reload"]).unwrap();

    let acted = act(
        host,
        &["start_unit", "--unit", unit, "--deadline-ms", "1500"],
    );
    assert_eq!(acted.code, 1, "{acted}");
    assert_eq!(acted.status(), "timed_out", "{acted}");
    assert!(acted.message().contains("1500 ms"), "{acted}");
    // The step under way is reported with what it had done: the job it queued.
    assert_eq!(acted.step_names(), ["precheck", "do"], "{acted}");
    let done = acted.step("do");
    assert!(done.contains("StartUnit(\"gatemend-broken-slow.service\", \"replace\") -> /org/freedesktop/systemd1/job/"), "{acted}");
    assert!(done.contains("the deadline of 1500 ms passed"), "{acted}");
    assert_eq!(prop(host, unit, "ActiveState"), "activating");
}
