//! Validation: every problem of every file, each at its exact position.

use std::path::PathBuf;
use std::time::Duration;

use gatemend_proto::{ActionKind, Cause, RootCause};
use sha2::{Digest as _, Sha256};

use super::*;

fn run(files: &[(&str, &[u8])]) -> Result<PolicySet, Vec<String>> {
    let files = files
        .iter()
        .map(|(name, bytes)| (PathBuf::from(name), Ok(bytes.to_vec())))
        .collect();
    from_files(files).map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

#[track_caller]
fn errors_of(name: &str, text: &str) -> Vec<String> {
    match run(&[(name, text.as_bytes())]) {
        Ok(_) => panic!("{name} was accepted"),
        Err(errors) => errors,
    }
}

const VALID: &str = "\
policies:
  - name: restart-php-fpm-when-down
    description: php-fpm is down; a restart brings the socket back.
    priority: 100
    match:
      cause: [upstream_refused, upstream_socket_missing]
      root_cause: [service_down]
      unit: [\"php*-fpm.service\"]
      hosts: { names: [\"web-*\"], labels: { env: prod } }
      threshold: { count: 3, within: 30s }
    mode: auto
    actions: [restart_unit]
    verify: { timeout: 20s }
    guards:
      cooldown: 5m
      max_attempts: 3
      attempts_window: 1h
      fleet: { max_concurrent: 2, max_percent: 10 }
      storm: { hosts_percent: 30, min_hosts: 3, within: 2m }
    escalate: { webhook: \"http://127.0.0.1:9099/hook\" }
";

#[test]
fn the_issue_example_loads_with_every_field_typed() {
    let set = run(&[("p/php.yaml", VALID.as_bytes())]).unwrap();
    let [p] = set.policies() else {
        panic!("one policy expected");
    };
    assert_eq!(p.name, "restart-php-fpm-when-down");
    assert_eq!(p.priority, 100);
    assert_eq!(
        p.matcher.causes,
        [Cause::UpstreamRefused, Cause::UpstreamSocketMissing]
    );
    assert_eq!(p.matcher.root_causes, [RootCause::ServiceDown]);
    assert!(
        p.matcher
            .units
            .as_ref()
            .unwrap()
            .is_match("php8.2-fpm.service")
    );
    assert!(!p.matcher.units.as_ref().unwrap().is_match("nginx.service"));
    let hosts = p.matcher.hosts.as_ref().unwrap();
    assert!(hosts.names.as_ref().unwrap().is_match("web-17"));
    assert_eq!(hosts.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(
        p.matcher.threshold,
        Some(Threshold {
            count: 3,
            within: Duration::from_secs(30)
        })
    );
    assert_eq!(p.mode, Mode::Auto);
    assert_eq!(p.actions, [ActionKind::RestartUnit]);
    assert_eq!(p.verify.timeout, Duration::from_secs(20));
    assert_eq!(
        p.guards,
        Guards {
            cooldown: Duration::from_secs(300),
            max_attempts: 3,
            attempts_window: Duration::from_secs(3600),
            fleet: FleetLimit {
                max_concurrent: 2,
                max_percent: 10
            },
            storm: Some(Storm {
                hosts_percent: 30,
                min_hosts: 3,
                within: Duration::from_secs(120)
            }),
        }
    );
    assert_eq!(p.webhook(), Some("http://127.0.0.1:9099/hook"));
    assert_eq!(p.source.file.path, PathBuf::from("p/php.yaml"));
    assert_eq!(p.source.index, 0);
}

#[test]
fn each_policy_carries_the_sha256_of_its_file() {
    let set = run(&[("p/php.yaml", VALID.as_bytes())]).unwrap();
    let expected: [u8; 32] = Sha256::digest(VALID.as_bytes()).into();
    assert_eq!(set.policies()[0].source.file.digest, Digest(expected));
    assert_eq!(set.files()[0].digest, Digest(expected));
    let text = set.files()[0].digest.to_string();
    assert!(
        text.starts_with("sha256:") && text.len() == 7 + 64,
        "{text}"
    );
}

#[test]
fn absent_guards_take_the_conservative_defaults() {
    let set = run(&[(
        "p.yaml",
        b"policies:\n  - name: a\n    match: { cause: [upstream_refused] }\n    mode: approve\n    actions: [restart_unit]\n",
    )])
    .unwrap();
    let p = &set.policies()[0];
    assert_eq!(p.guards, Guards::default());
    assert_eq!(p.guards.fleet.max_concurrent, 1);
    assert_eq!(p.verify, Verify::default());
    assert_eq!(p.priority, 0);
}

#[test]
fn policies_are_evaluated_by_priority_then_file_then_position() {
    let a = "policies:\n  - { name: a-low, match: { cause: [upstream_refused] }, mode: dry_run }\n  - { name: a-high, priority: 5, match: { cause: [upstream_refused] }, mode: dry_run }\n";
    let b = "policies:\n  - { name: b-low, match: { cause: [upstream_refused] }, mode: dry_run }\n";
    let set = run(&[("b.yaml", b.as_bytes()), ("a.yaml", a.as_bytes())]).unwrap();
    let names: Vec<&str> = set.policies().iter().map(|p| p.name.as_str()).collect();
    // Files come in the order given (load sorts them by name).
    assert_eq!(names, ["a-high", "b-low", "a-low"]);
    let for_refused: Vec<&str> = set
        .for_cause(Cause::UpstreamRefused)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(for_refused, names);
    assert_eq!(set.for_cause(Cause::DnsNoResolver).count(), 0);
}

#[test]
fn the_issue_example_error_is_printed_at_the_value() {
    let text = VALID.replace("max_percent: 10 }", "max_percent: 150 }");
    assert_eq!(
        errors_of("policies/php.yaml", &text),
        ["policies/php.yaml:18:48: policies[0].guards.fleet.max_percent: must be 1..=100, got 150"]
    );
}

#[test]
fn an_unknown_key_is_refused_where_it_is_written() {
    let text = VALID.replace("    priority: 100\n", "    priority: 100\n    retries: 3\n");
    let errors = errors_of("p.yaml", &text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("p.yaml:5:5: policies[0]: unknown field `retries`, expected one of"),
        "{}",
        errors[0]
    );
    let text = VALID.replace("cooldown: 5m", "cooldown: 5m\n      cooldwn: 5m");
    let errors = errors_of("p.yaml", &text);
    assert!(
        errors[0].starts_with("p.yaml:16:7: policies[0].guards: unknown field `cooldwn`"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_wrong_type_is_refused_at_the_value() {
    let text = VALID.replace("priority: 100", "priority: high");
    assert_eq!(
        errors_of("p.yaml", &text),
        ["p.yaml:4:15: policies[0].priority: invalid type: string \"high\", expected i32"]
    );
    let text = VALID.replace("cooldown: 5m", "cooldown: 300");
    assert_eq!(
        errors_of("p.yaml", &text),
        [
            "p.yaml:15:17: policies[0].guards.cooldown: invalid duration `300`: a number without a unit; write a number and a unit (ms, s, m, h, d), such as 30s, 5m or 1h30m"
        ]
    );
    let text = VALID.replace("max_attempts: 3", "max_attempts: -1");
    assert_eq!(
        errors_of("p.yaml", &text),
        ["p.yaml:16:21: policies[0].guards.max_attempts: invalid type: integer `-1`, expected u64"]
    );
    let text = VALID.replace("cooldown: 5m", "cooldown: [5m]");
    assert_eq!(
        errors_of("p.yaml", &text),
        [
            "p.yaml:15:17: policies[0].guards.cooldown: invalid type: sequence, expected a duration such as 30s, 5m or 1h30m"
        ]
    );
}

#[test]
fn unknown_ids_are_each_refused_at_their_index() {
    let text = VALID
        .replace(
            "cause: [upstream_refused, upstream_socket_missing]",
            "cause: [upstream_refused, upstream_down]",
        )
        .replace("root_cause: [service_down]", "root_cause: [down]")
        .replace(
            "actions: [restart_unit]",
            "actions: [restart_unit, run_command]",
        )
        .replace("mode: auto", "mode: yolo");
    let errors = errors_of("p.yaml", &text);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].starts_with(
            "p.yaml:6:33: policies[0].match.cause[1]: unknown cause `upstream_down`, expected one of: none, upstream_refused,"
        ),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with(
            "p.yaml:7:20: policies[0].match.root_cause[0]: unknown root cause `down`, expected one of: service_down,"
        ),
        "{}",
        errors[1]
    );
    assert_eq!(
        errors[2],
        "p.yaml:11:11: policies[0].mode: unknown mode `yolo`, expected one of: auto, approve, dry_run"
    );
    assert!(
        errors[3].starts_with(
            "p.yaml:12:29: policies[0].actions[1]: unknown action `run_command`, expected one of: restart_unit, start_unit, fix_socket_ownership, reload_nginx, escalate"
        ),
        "{}",
        errors[3]
    );
}

#[test]
fn bad_and_zero_durations_are_refused() {
    let text = VALID
        .replace("cooldown: 5m", "cooldown: 5 minutes")
        .replace("within: 30s", "within: 0s")
        .replace("attempts_window: 1h", "attempts_window: 30m1h");
    assert_eq!(
        errors_of("p.yaml", &text),
        [
            "p.yaml:10:38: policies[0].match.threshold.within: must be longer than 0, got `0s`",
            "p.yaml:15:17: policies[0].guards.cooldown: invalid duration `5 minutes`: no spaces allowed; write a number and a unit (ms, s, m, h, d), such as 30s, 5m or 1h30m",
            "p.yaml:17:24: policies[0].guards.attempts_window: invalid duration `30m1h`: units must go from the largest to the smallest, each once; write a number and a unit (ms, s, m, h, d), such as 30s, 5m or 1h30m",
        ]
    );
}

#[test]
fn a_storm_without_min_hosts_takes_the_documented_default() {
    // As a new user writes it: the share and the window, no minimum.
    let text = VALID.replace(
        "storm: { hosts_percent: 30, min_hosts: 3, within: 2m }",
        "storm: { hosts_percent: 30, within: 2m }",
    );
    let set = run(&[("p.yaml", text.as_bytes())]).unwrap();
    assert_eq!(
        set.policies()[0].guards.storm,
        Some(Storm {
            hosts_percent: 30,
            min_hosts: DEFAULT_STORM_MIN_HOSTS,
            within: Duration::from_secs(120)
        })
    );
    assert_eq!(
        DEFAULT_STORM_MIN_HOSTS, 3,
        "as the format in policy/mod.rs says"
    );
    // The share and the window define the storm: they stay required.
    let no_window = VALID.replace("min_hosts: 3, within: 2m", "min_hosts: 3");
    assert_eq!(
        errors_of("p.yaml", &no_window),
        ["p.yaml:19:14: policies[0].guards.storm: missing field `within`"]
    );
}

#[test]
fn percentages_outside_1_to_100_and_zero_counts_are_refused() {
    let text = VALID
        .replace("count: 3,", "count: 0,")
        .replace("max_attempts: 3", "max_attempts: 0")
        .replace(
            "max_concurrent: 2, max_percent: 10",
            "max_concurrent: 0, max_percent: 0",
        )
        .replace(
            "hosts_percent: 30, min_hosts: 3",
            "hosts_percent: 101, min_hosts: 0",
        );
    assert_eq!(
        errors_of("p.yaml", &text),
        [
            "p.yaml:10:27: policies[0].match.threshold.count: must be at least 1, got 0",
            "p.yaml:16:21: policies[0].guards.max_attempts: must be at least 1, got 0",
            "p.yaml:18:32: policies[0].guards.fleet.max_concurrent: must be at least 1, got 0",
            "p.yaml:18:48: policies[0].guards.fleet.max_percent: must be 1..=100, got 0",
            "p.yaml:19:31: policies[0].guards.storm.hosts_percent: must be 1..=100, got 101",
            "p.yaml:19:47: policies[0].guards.storm.min_hosts: must be at least 1, got 0",
        ]
    );
}

#[test]
fn auto_and_approve_need_actions_but_dry_run_does_not() {
    let absent =
        "policies:\n  - name: a\n    match: { cause: [upstream_refused] }\n    mode: auto\n";
    assert_eq!(
        errors_of("p.yaml", absent),
        ["p.yaml:2:5: policies[0].actions: must name at least one action in auto mode"]
    );
    let empty = VALID
        .replace("actions: [restart_unit]", "actions: []")
        .replace("mode: auto", "mode: approve");
    assert_eq!(
        errors_of("p.yaml", &empty),
        ["p.yaml:12:14: policies[0].actions: must name at least one action in approve mode"]
    );
    let dry = VALID
        .replace("actions: [restart_unit]", "actions: []")
        .replace("mode: auto", "mode: dry_run");
    assert!(run(&[("p.yaml", dry.as_bytes())]).is_ok());
}

#[test]
fn invalid_globs_and_empty_lists_are_refused() {
    let text = VALID
        .replace(
            "unit: [\"php*-fpm.service\"]",
            "unit: [\"php[-fpm.service\", \"ok*\"]",
        )
        .replace("names: [\"web-*\"]", "names: []")
        .replace(
            "cause: [upstream_refused, upstream_socket_missing]",
            "cause: []",
        );
    assert_eq!(
        errors_of("p.yaml", &text),
        [
            "p.yaml:6:14: policies[0].match.cause: must not be empty",
            "p.yaml:8:14: policies[0].match.unit[0]: invalid glob `php[-fpm.service`: unclosed character class; missing ']'",
            "p.yaml:9:23: policies[0].match.hosts.names: must not be empty",
        ]
    );
}

#[test]
fn a_bad_webhook_an_empty_name_and_a_repeated_action_are_refused() {
    let text = VALID
        .replace("http://127.0.0.1:9099/hook", "127.0.0.1:9099")
        .replace("name: restart-php-fpm-when-down", "name: \"\"")
        .replace(
            "actions: [restart_unit]",
            "actions: [restart_unit, restart_unit]",
        );
    assert_eq!(
        errors_of("p.yaml", &text),
        [
            "p.yaml:2:11: policies[0].name: must not be empty",
            "p.yaml:12:29: policies[0].actions[1]: `restart_unit` is listed twice",
            "p.yaml:20:26: policies[0].escalate.webhook: must be an http:// or https:// URL, got `127.0.0.1:9099`",
        ]
    );
}

#[test]
fn duplicate_names_across_files_point_back_at_the_first() {
    let a = "policies:\n  - { name: same, match: { cause: [upstream_refused] }, mode: dry_run }\n";
    let b = "# another file\npolicies:\n  - name: other\n    match: { cause: [upstream_refused] }\n    mode: dry_run\n  - name: same\n    match: { cause: [upstream_refused] }\n    mode: dry_run\n";
    let errors = run(&[("d/a.yaml", a.as_bytes()), ("d/b.yaml", b.as_bytes())]).unwrap_err();
    assert_eq!(
        errors,
        [
            "d/b.yaml:6:11: policies[1].name: duplicate policy name `same`, first defined at d/a.yaml:2:13"
        ]
    );
}

#[test]
fn files_that_are_not_yaml_are_refused_with_the_parsers_position() {
    let errors = run(&[
        ("d/a.yaml", b"policies: [\n  - name: a\n"),
        ("d/b.yaml", b"\xff\xfe binary"),
        ("d/c.yaml", b"just some text\n"),
        ("d/d.yaml", b""),
    ])
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "d/a.yaml:2:3: did not find expected node content, while parsing a flow node",
            "d/b.yaml: not a YAML file: the bytes are not UTF-8 text",
            "d/c.yaml:1:1: invalid type: string \"just some text\", expected struct PolicyFile",
            "d/d.yaml:1:1: missing field `policies`",
        ]
    );
}

#[test]
fn every_error_of_every_file_comes_in_one_run() {
    let a = VALID.replace("max_percent: 10", "max_percent: 150");
    let b = VALID
        .replace("restart-php-fpm-when-down", "b")
        .replace("cooldown: 5m", "cooldown: soon")
        .replace("min_hosts: 3", "min_hosts: 0");
    let c = "policies:\n  - name: c\n    mode: auto\n";
    let errors = run(&[
        ("d/a.yaml", a.as_bytes()),
        ("d/b.yaml", b.as_bytes()),
        ("d/c.yaml", c.as_bytes()),
    ])
    .unwrap_err();
    let files: Vec<&str> = errors.iter().map(|e| &e[..8]).collect();
    assert_eq!(
        files,
        ["d/a.yaml", "d/b.yaml", "d/b.yaml", "d/c.yaml"],
        "{errors:#?}"
    );
    assert!(errors[3].starts_with("d/c.yaml:2:5: policies[0]: missing field `match`"));
}

#[test]
fn a_set_without_policies_is_refused() {
    assert_eq!(
        run(&[("d/a.yaml", b"policies: []\n")]).unwrap_err(),
        ["d/a.yaml: the policy files define no policy: every finding would get no_policy"]
    );
}

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatemend-policy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn load_reads_only_yaml_files_of_the_directory() {
    let dir = temp_dir("reads");
    std::fs::write(dir.join("php.yaml"), VALID).unwrap();
    std::fs::write(dir.join("README.md"), "not a policy").unwrap();
    std::fs::create_dir(dir.join("sub.yaml")).unwrap();
    let set = load(&dir).unwrap();
    assert_eq!(set.policies().len(), 1);
    assert_eq!(set.files().len(), 1);
    assert_eq!(set.files()[0].path, dir.join("php.yaml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_or_missing_directory_is_refused() {
    let dir = temp_dir("empty");
    let errors = load(&dir).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}: no policy files (*.yaml) in this directory",
            dir.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let errors = load(&dir).unwrap_err();
    assert!(matches!(errors[0].problem, Problem::Read(_)));
    assert!(
        errors[0].to_string().contains("cannot read: "),
        "{}",
        errors[0]
    );
}

#[test]
fn an_approval_expiry_is_read_and_a_zero_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "policies:\n  - name: fix\n    match: { cause: [upstream_socket_permission] }\n    \
         mode: approve\n    actions: [fix_socket_ownership]\n    approval: { expires: 10m }\n",
    )
    .unwrap();
    let set = load(dir.path()).unwrap();
    assert_eq!(set.policies()[0].approval_expires, Duration::from_secs(600));
    std::fs::write(
        dir.path().join("p.yaml"),
        "policies:\n  - name: fix\n    match: { cause: [upstream_socket_permission] }\n    \
         mode: approve\n    actions: [fix_socket_ownership]\n    approval: { expires: 0s }\n",
    )
    .unwrap();
    let errors = load(dir.path()).unwrap_err();
    assert!(
        errors[0].to_string().contains("p.yaml:6:")
            && errors[0].to_string().contains("approval.expires"),
        "{}",
        errors[0]
    );
}

#[test]
fn an_edit_needs_match_edit_naming_known_directives_and_renotify_is_a_duration() {
    let text = VALID
        .replace("actions: [restart_unit]", "actions: [edit_config]")
        .replace("mode: auto", "mode: approve");
    let errors = errors_of("e.yaml", &text);
    assert_eq!(
        errors,
        [
            "e.yaml:6:7: policies[0].match.edit: a policy with edit_config must name the directives it applies in match.edit"
        ],
    );
    let text = text.replace(
        "      threshold: { count: 3, within: 30s }\n",
        "      threshold: { count: 3, within: 30s }\n      edit: [fastcgi_pass, write_anything]\n",
    );
    let errors = errors_of("e.yaml", &text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with(
            "e.yaml:11:28: policies[0].match.edit[1]: unknown editable directive `write_anything`, expected one of: fastcgi_pass, proxy_pass,"
        ),
        "{}",
        errors[0]
    );
    let set = run(&[(
        "e.yaml",
        text.replace(", write_anything", "")
            .replace(
                "escalate: { webhook: \"http://127.0.0.1:9099/hook\" }",
                "escalate: { renotify: 10m }",
            )
            .as_bytes(),
    )])
    .unwrap();
    let p = &set.policies()[0];
    assert_eq!(
        p.matcher.edits.as_deref(),
        Some(&["fastcgi_pass".to_owned()][..])
    );
    assert_eq!(p.renotify(), Duration::from_secs(600));
    assert_eq!(p.webhook(), None);
    let errors = errors_of(
        "r.yaml",
        &VALID.replace(
            "escalate: { webhook: \"http://127.0.0.1:9099/hook\" }",
            "escalate: { renotify: 0s }",
        ),
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("policies[0].escalate.renotify"),
        "{}",
        errors[0]
    );
}
