//! edit_config on a real host (real nginx, php-fpm, systemd over D-Bus), one host for every
//! scenario, in order:
//!
//! 1. nginx pointed at the old php7.4 socket: diagnosis proposes the edit, `act edit_config`
//!    applies it: nginx tested and reloaded, /index.php answers 200, owner and mode kept, the
//!    site's link kept, nothing left in /etc/nginx or the journal;
//! 2. an edit `nginx -t` passes but verification fails (a socket nothing listens on): rolled
//!    back, tested, reloaded, the old configuration serves;
//! 3. the file changed after the proposal: refused as stale, untouched;
//! 4. outside the allow-list (a directive, a link out of /etc/nginx) or beyond a bound:
//!    refused, untouched;
//! 5. a dry run: the diff returned, the file's hash unchanged;
//! 6. the agent SIGKILLed after the write, while verifying: at its next start it rolls back,
//!    and the temp file a killed write leaves is removed;
//! 7. a pool edit of pm.max_children: `php-fpm8.2 -t`, php-fpm reloaded, PHP serves; with
//!    no room left for its backup (a full state directory), not written at all;
//! 8. both kinds again under the sandbox of the shipped unit (`deploy/systemd/`): what ships
//!    can write, test and reload.
//!
//! Around them all: nothing under /etc/nginx or /etc/php exists afterwards that did not exist
//! before (no directory, temp file or backup).
//!
//! Then the figures: the time from request to verified of an applied edit, and of a rollback
//! (medians of a few runs, printed; nothing is asserted about time).

mod act_support;

use std::time::{Duration, Instant};

use act_support::{AGENT, Acted, act, assert_php_serves, boot, get, nginx_pids};
use gatemend_agent::edit::{
    EditableDirective, NginxEdit, PoolEdit, PoolKey, apply_edit, apply_pool_edit, sha256_hex,
};
use gatemend_agent::probe::nginx::{BlockPath, BlockStep};
use gatemend_tests::testbed::Host;
use serde_json::{Value, json};

const SITE: &str = "/etc/nginx/sites-enabled/default";
const SITE_REAL: &str = "/etc/nginx/sites-available/default";
const POOL: &str = "/etc/php/8.2/fpm/pool.d/www.conf";
const JOURNAL: &str = "/var/lib/gatemend/state/edits";
const PHP82: &str = "unix:/run/php/php8.2-fpm.sock";
const PHP74: &str = "unix:/run/php/php7.4-fpm.sock";
/// A socket nothing listens on: `nginx -t` passes, requests fail.
const DEAD: &str = "unix:/run/php/php9.9-fpm.sock";

/// act_support's config with edit_config allowed (and the default `actions.edits`).
fn config() -> String {
    act_support::CONFIG.replace("escalate]", "escalate, edit_config]")
}

/// A file's text as the host reads it (through its links, inside the host).
fn text(host: &Host, path: &str) -> String {
    host.exec(&["cat", path]).unwrap()
}

fn sha(host: &Host, path: &str) -> String {
    sha256_hex(&text(host, path))
}

/// `uid:gid mode` of a path, links followed, inside the host.
fn owner_mode(host: &Host, path: &str) -> String {
    host.exec(&["stat", "-L", "-c", "%u:%g %a", path])
        .unwrap()
        .trim()
        .to_owned()
}

/// Files anywhere under the configuration directories that an edit could have left.
fn leftovers(host: &Host) -> String {
    host.sh("find /etc/nginx /etc/php \\( -name '*gatemend*' -o -name '*.tmp' -o -name '*.backup' \\) -print")
        .unwrap()
}

/// What the journal holds besides the units' lock files.
fn journal(host: &Host) -> String {
    host.sh(&format!(
        "find {JOURNAL} -type f ! -name lock -print 2>/dev/null; true"
    ))
    .unwrap()
}

fn location_php() -> BlockPath {
    BlockPath {
        outer: vec![BlockStep::new("http", &[], [])],
        inner: vec![
            BlockStep::new("server", &[], [&"_".to_owned()]),
            BlockStep::new("location", &["~".into(), "\\.php$".into()], []),
        ],
    }
}

/// The JSON `diagnose --json` prints as a finding's edit, computed here with the editor
/// against the file's current text, for a directive in the PHP location of the site.
fn site_edit(host: &Host, directive: EditableDirective, old: Option<&str>, new: &str) -> String {
    let current = text(host, SITE);
    let edit = NginxEdit {
        file: SITE.into(),
        block_path: location_php(),
        directive,
        old: old.map(str::to_owned),
        new: new.to_owned(),
    };
    let result = apply_edit(&current, &edit).unwrap();
    json!({
        "kind": "nginx",
        "file": SITE,
        "block": ["server[_]", "location[~ \\.php$]"],
        "block_outer": ["http"],
        "directive": directive.name(),
        "old_value": old.unwrap_or_default(),
        "new_value": new,
        "file_sha256": result.sha256_before,
        "diff": result.diff,
        "why": "act_edit test",
    })
    .to_string()
}

fn pool_edit(host: &Host, old: &str, new: &str) -> String {
    let current = text(host, POOL);
    let edit = PoolEdit {
        file: POOL.into(),
        pool: "www".into(),
        key: PoolKey::MaxChildren,
        old: Some(old.to_owned()),
        new: new.to_owned(),
    };
    let result = apply_pool_edit(&current, &edit).unwrap();
    json!({
        "kind": "php_fpm_pool",
        "file": POOL,
        "block": ["www"],
        "directive": "pm.max_children",
        "old_value": old,
        "new_value": new,
        "file_sha256": result.sha256_before,
        "diff": result.diff,
    })
    .to_string()
}

fn edit_config(host: &Host, edit: &str, extra: &[&str]) -> Acted {
    let mut args = vec!["edit_config", "--edit", edit];
    args.extend_from_slice(extra);
    act(host, &args)
}

fn duration(acted: &Acted, step: &str) -> u64 {
    acted.json["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == step)
        .filter_map(|s| s["duration_ms"].as_u64())
        .sum()
}

fn elapsed(acted: &Acted) -> u64 {
    acted.json["elapsed_ms"].as_u64().unwrap_or_default()
}

#[track_caller]
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests /index.php from outside until nginx answers `status`.
#[track_caller]
fn until_php(host: &Host, status: u16) {
    wait_until(
        &format!("/index.php answers {status}"),
        Duration::from_secs(30),
        || get(host, 80, "/index.php").is_ok_and(|r| r.status == status),
    );
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

#[test]
fn edit_config_on_a_real_host() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.write("/etc/gatemend/agent.yaml", &config()).unwrap();
    let tree = config_tree(host);
    // An owner and mode the edit must keep (the master reads the file as root).
    host.sh(&format!(
        "chown root:www-data {SITE_REAL} && chmod 0640 {SITE_REAL}"
    ))
    .unwrap();

    the_wrong_socket_is_mended_through_the_proposed_edit(host);
    an_edit_that_fails_verification_is_rolled_back(host);
    a_stale_edit_is_refused_and_the_file_untouched(host);
    edits_outside_the_allow_list_or_bounds_are_refused_and_the_file_untouched(host);
    a_dry_run_returns_the_diff_and_changes_nothing(host);
    an_agent_killed_after_the_write_rolls_back_at_its_next_start(host);
    a_pool_edit_is_tested_with_php_fpm_and_reloads_it(host);
    an_edit_without_a_backup_is_not_written(host);
    the_shipped_units_sandbox_lets_both_kinds_apply(host);
    figures(host);
    assert_eq!(
        config_tree(host),
        tree,
        "nothing was created or left in /etc"
    );
}

/// Every path under the configuration directories, with its type.
fn config_tree(host: &Host) -> String {
    host.sh("find /etc/nginx /etc/php -printf '%y %p\\n' | sort")
        .unwrap()
}

/// `gatemend-agent act ARGS` in a transient unit with the sandbox of the shipped unit file
/// (every `[Service]` setting but how it starts and restarts).
fn act_in_shipped_unit(host: &Host, args: &[&str]) -> Acted {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/systemd/gatemend-agent.service"),
    )
    .unwrap();
    let mut argv: Vec<String> = vec![
        "systemd-run".into(),
        "--wait".into(),
        "--pipe".into(),
        "--quiet".into(),
    ];
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        if in_service
            && !line.starts_with('#')
            && !["Type", "ExecStart", "Restart", "RestartSec"].contains(&key)
        {
            argv.push("-p".into());
            argv.push(line.to_owned());
        }
    }
    argv.extend([AGENT.to_owned(), "act".to_owned()]);
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = host.output(&argv).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("act {args:?}: not JSON ({e}): {stdout}\nstderr: {stderr}"));
    Acted {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr,
    }
}

fn the_shipped_units_sandbox_lets_both_kinds_apply(host: &Host) {
    let edit = site_edit(host, EditableDirective::FastcgiConnectTimeout, None, "30s");
    let applied = act_in_shipped_unit(host, &["edit_config", "--edit", &edit]);
    assert_eq!(applied.status(), "succeeded", "{applied}");
    assert!(text(host, SITE).contains("fastcgi_connect_timeout 30s;"));
    let edit = pool_edit(host, "8", "9");
    let applied = act_in_shipped_unit(host, &["edit_config", "--edit", &edit]);
    assert_eq!(applied.status(), "succeeded", "{applied}");
    assert!(text(host, POOL).contains("\npm.max_children = 9\n"));
    assert_eq!(leftovers(host), "");
    assert_eq!(journal(host), "");
    assert_php_serves(host);
}

fn the_wrong_socket_is_mended_through_the_proposed_edit(host: &Host) {
    host.sh(&format!(
        "sed -i 's/php8.2-fpm.sock/php7.4-fpm.sock/' {SITE_REAL} && nginx -t && systemctl reload nginx"
    ))
    .unwrap();
    until_php(host, 502);
    let out = host.output(&[AGENT, "diagnose", "--json"]).unwrap();
    let findings: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let edit = findings
        .iter()
        .find(|f| f["root_cause"] == "wrong_target")
        .map(|f| f["edit"].clone())
        .unwrap_or_else(|| panic!("no wrong_target finding: {findings:#?}"));
    assert_eq!(
        (edit["old_value"].as_str(), edit["new_value"].as_str()),
        (Some(PHP74), Some(PHP82)),
        "{edit:#}"
    );
    let owner = owner_mode(host, SITE_REAL);
    let (master, workers) = nginx_pids(host);

    let applied = edit_config(host, &edit.to_string(), &[]);
    assert_eq!(applied.code, 0, "{applied}");
    assert_eq!(applied.status(), "succeeded", "{applied}");
    assert_eq!(
        applied.step_names(),
        [
            "precheck", "journal", "write", "test", "reload", "verify", "cleanup"
        ],
        "{applied}"
    );
    assert!(
        applied.step("test").contains("test is successful"),
        "{applied}"
    );
    assert!(
        applied
            .step("reload")
            .contains("ReloadUnit(\"nginx.service\", \"replace\")"),
        "{applied}"
    );
    assert!(
        applied
            .step("verify")
            .contains("GET /index.php via 127.0.0.1:80 -> 200"),
        "{applied}"
    );
    assert!(
        applied.step("journal").contains("-> 502"),
        "the baseline GET saw the fault: {applied}"
    );
    // The file: new value, same owner and mode, the site's link kept, nothing left behind.
    assert!(text(host, SITE).contains(&format!("fastcgi_pass {PHP82};")));
    assert_eq!(owner_mode(host, SITE_REAL), owner);
    assert_eq!(
        host.exec(&["readlink", SITE]).unwrap().trim(),
        SITE_REAL,
        "the link in sites-enabled is kept"
    );
    assert_eq!(leftovers(host), "");
    assert_eq!(journal(host), "");
    let (master_after, workers_after) = nginx_pids(host);
    assert_eq!(master_after, master, "reloaded, not restarted");
    assert!(workers_after.iter().all(|w| !workers.contains(w)));
    assert_php_serves(host);
    eprintln!(
        "act_edit: wrong socket mended in {} ms (test {} ms, reload {} ms, verify {} ms)",
        elapsed(&applied),
        duration(&applied, "test"),
        duration(&applied, "reload"),
        duration(&applied, "verify")
    );
}

fn an_edit_that_fails_verification_is_rolled_back(host: &Host) {
    let before = sha(host, SITE);
    let edit = site_edit(host, EditableDirective::FastcgiPass, Some(PHP82), DEAD);
    let rolled = edit_config(host, &edit, &["--verify-timeout-ms", "3000"]);
    assert_eq!(rolled.code, 1, "{rolled}");
    assert_eq!(rolled.status(), "rolled_back", "{rolled}");
    assert_eq!(
        rolled.step_names(),
        [
            "precheck",
            "journal",
            "write",
            "test",
            "reload",
            "verify",
            "rollback_restore",
            "rollback_test",
            "rollback_reload",
            "rollback_verify"
        ],
        "{rolled}"
    );
    assert!(rolled.message().contains("verification failed"), "{rolled}");
    assert!(rolled.step("verify").contains("-> 502"), "{rolled}");
    assert!(
        rolled
            .step("rollback_reload")
            .contains("ReloadUnit(\"nginx.service\", \"replace\")"),
        "a rollback reloads: {rolled}"
    );
    assert!(
        rolled
            .step("rollback_verify")
            .contains("GET /index.php via 127.0.0.1:80 -> 200"),
        "{rolled}"
    );
    assert_eq!(sha(host, SITE), before, "the old text is back");
    assert_eq!(leftovers(host), "");
    assert_eq!(journal(host), "");
    assert_php_serves(host);
}

fn a_stale_edit_is_refused_and_the_file_untouched(host: &Host) {
    let edit = site_edit(host, EditableDirective::FastcgiReadTimeout, None, "90s");
    // Someone edits the file between the proposal and its approval.
    host.sh(&format!("echo '# edited by hand' >> {SITE_REAL}"))
        .unwrap();
    let changed = sha(host, SITE);
    let refused = edit_config(host, &edit, &[]);
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(refused.message().starts_with("stale:"), "{refused}");
    assert_eq!(sha(host, SITE), changed, "untouched");
    assert_eq!(journal(host), "");
}

fn edits_outside_the_allow_list_or_bounds_are_refused_and_the_file_untouched(host: &Host) {
    let before = sha(host, SITE);
    // A value beyond its bound.
    let long = site_edit(host, EditableDirective::FastcgiReadTimeout, None, "3600s");
    let refused = edit_config(host, &long, &[]);
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(
        refused
            .message()
            .contains("`3600s` is above actions.edits.max_timeout (300s)"),
        "{refused}"
    );
    // A directive this host does not allow.
    host.write(
        "/etc/gatemend/agent.yaml",
        &format!("{}  edits:\n    directives: [fastcgi_pass]\n", config()),
    )
    .unwrap();
    let timeout = site_edit(host, EditableDirective::FastcgiReadTimeout, None, "90s");
    let refused = edit_config(host, &timeout, &[]);
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(
        refused
            .message()
            .contains("`fastcgi_read_timeout` is not in this host's allow-list"),
        "{refused}"
    );
    host.write("/etc/gatemend/agent.yaml", &config()).unwrap();
    // A file nginx reads through a link that leaves /etc/nginx.
    host.write(
        "/root/escape.conf",
        "server {\n    listen 8090;\n    location / {\n        return 200;\n    }\n}\n",
    )
    .unwrap();
    host.sh("ln -s /root/escape.conf /etc/nginx/conf.d/escape.conf && nginx -t")
        .unwrap();
    let escape_text = text(host, "/root/escape.conf");
    let escape = NginxEdit {
        file: "/etc/nginx/conf.d/escape.conf".into(),
        block_path: BlockPath {
            outer: vec![BlockStep::new("http", &[], [])],
            inner: vec![
                BlockStep::new("server", &[], []),
                BlockStep::new("location", &["/".into()], []),
            ],
        },
        directive: EditableDirective::ProxyReadTimeout,
        old: None,
        new: "90s".into(),
    };
    let result = apply_edit(&escape_text, &escape).unwrap();
    let edit = json!({
        "kind": "nginx",
        "file": "/etc/nginx/conf.d/escape.conf",
        "block": ["server", "location[/]"],
        "block_outer": ["http"],
        "directive": "proxy_read_timeout",
        "new_value": "90s",
        "file_sha256": result.sha256_before,
        "diff": result.diff,
    })
    .to_string();
    let refused = edit_config(host, &edit, &[]);
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(
        refused
            .message()
            .contains("resolves to /root/escape.conf, outside this host's allow-list"),
        "{refused}"
    );
    assert_eq!(text(host, "/root/escape.conf"), escape_text, "untouched");
    host.sh("rm /etc/nginx/conf.d/escape.conf /root/escape.conf")
        .unwrap();
    assert_eq!(sha(host, SITE), before, "untouched");
    assert_eq!(journal(host), "");
}

fn a_dry_run_returns_the_diff_and_changes_nothing(host: &Host) {
    let before = sha(host, SITE);
    let edit = site_edit(host, EditableDirective::FastcgiReadTimeout, None, "90s");
    let planned = act(host, &["--dry-run", "edit_config", "--edit", &edit]);
    assert_eq!(planned.code, 0, "{planned}");
    assert_eq!(planned.status(), "planned", "{planned}");
    let plan = planned.step("plan");
    assert!(
        plan.contains("+        fastcgi_read_timeout 90s;"),
        "{plan}"
    );
    assert!(
        plan.contains("--- a/etc/nginx/sites-enabled/default"),
        "{plan}"
    );
    assert_eq!(sha(host, SITE), before, "a dry run changes nothing");
    assert_eq!(journal(host), "");
    assert_eq!(leftovers(host), "");
}

fn an_agent_killed_after_the_write_rolls_back_at_its_next_start(host: &Host) {
    let before = sha(host, SITE);
    let edit = site_edit(host, EditableDirective::FastcgiPass, Some(PHP82), DEAD);
    let after = sha256_hex(&text(host, SITE).replace(
        &format!("fastcgi_pass {PHP82};"),
        &format!("fastcgi_pass {DEAD};"),
    ));
    host.write("/root/edit.json", &edit).unwrap();
    // A long verification: the agent keeps asking /index.php (502) while it is killed.
    let pid = host
        .sh(&format!(
            "{AGENT} act edit_config --edit \"$(cat /root/edit.json)\" --verify-timeout-ms 120000 --deadline-ms 300000 >/root/act.out 2>&1 & echo $!"
        ))
        .unwrap();
    let pid = pid.trim().to_owned();
    wait_until("the new text is written", Duration::from_secs(30), || {
        sha(host, SITE) == after
    });
    until_php(host, 502);
    host.exec(&["kill", "-9", &pid]).unwrap();
    wait_until("the killed agent is gone", Duration::from_secs(10), || {
        host.exec(&["kill", "-0", &pid]).is_err()
    });
    // Half-applied now: the new text in place and live, its journal entry waiting.
    let entries = journal(host);
    let entry_path = entries
        .lines()
        .find(|l| l.ends_with(".json"))
        .unwrap_or_else(|| panic!("no journal entry: {entries}"))
        .to_owned();
    let entry: Value = serde_json::from_str(&text(host, &entry_path)).unwrap();
    assert_eq!(entry["stage"], "writing", "{entry:#}");
    assert_eq!(sha(host, SITE), after);
    // And the temp file of a write cut short, as a kill during the write leaves it.
    let temp = entry["temp"].as_str().unwrap().to_owned();
    assert!(
        temp.starts_with("/etc/nginx/sites-available/.default.gatemend-"),
        "{temp}"
    );
    host.write(&temp, "half a file").unwrap();

    // The agent starts again: before its link, it finishes the edit.
    let agent = host
        .sh(&format!(
            "{AGENT} run --config /etc/gatemend/agent.yaml >/root/run.log 2>&1 & echo $!"
        ))
        .unwrap();
    let agent = agent.trim().to_owned();
    wait_until("the journal is finished", Duration::from_secs(60), || {
        journal(host).is_empty()
    });
    host.exec(&["kill", "-9", &agent]).unwrap();
    let log = text(host, "/root/run.log");
    assert!(
        log.contains("Finished an edit a previous agent process left in its journal"),
        "{log}"
    );
    assert!(log.contains("never verified: restored"), "{log}");
    assert!(log.contains("reloaded"), "{log}");
    assert_eq!(sha(host, SITE), before, "rolled back");
    assert_eq!(leftovers(host), "", "no temp file is left");
    until_php(host, 200);
    assert_php_serves(host);
}

fn a_pool_edit_is_tested_with_php_fpm_and_reloads_it(host: &Host) {
    let owner = owner_mode(host, POOL);
    let log_before = text(host, "/var/log/php8.2-fpm.log").len();
    let edit = pool_edit(host, "5", "8");
    let applied = edit_config(host, &edit, &[]);
    assert_eq!(applied.code, 0, "{applied}");
    assert_eq!(applied.status(), "succeeded", "{applied}");
    assert!(
        applied.step("test").contains("$ /usr/sbin/php-fpm8.2 -t"),
        "{applied}"
    );
    assert!(
        applied.step("test").contains("test is successful"),
        "{applied}"
    );
    assert!(
        applied
            .step("reload")
            .contains("ReloadUnit(\"php8.2-fpm.service\", \"replace\")"),
        "{applied}"
    );
    assert!(
        applied
            .step("verify")
            .contains("unix:/run/php/php8.2-fpm.sock accepts: true"),
        "{applied}"
    );
    assert!(
        applied
            .step("verify")
            .contains("GET /index.php via 127.0.0.1:80 -> 200"),
        "{applied}"
    );
    assert!(text(host, POOL).contains("\npm.max_children = 8\n"));
    assert_eq!(owner_mode(host, POOL), owner);
    let log = text(host, "/var/log/php8.2-fpm.log");
    assert!(
        log.get(log_before..)
            .unwrap_or_default()
            .contains("Reloading in progress"),
        "php-fpm was reloaded: {log}"
    );
    assert_eq!(leftovers(host), "");
    assert_eq!(journal(host), "");
    assert_php_serves(host);
}

fn an_edit_without_a_backup_is_not_written(host: &Host) {
    let before = sha(host, POOL);
    // Room for the journal entry, not for a backup of the 22 KB pool file.
    host.sh(&format!(
        "mount -t tmpfs -o size=8k,mode=0700 tmpfs {JOURNAL}"
    ))
    .unwrap();
    let edit = pool_edit(host, "8", "10");
    let failed = edit_config(host, &edit, &[]);
    host.sh(&format!("umount {JOURNAL}")).unwrap();
    assert_eq!(failed.status(), "failed", "{failed}");
    assert_eq!(failed.step_names(), ["precheck", "journal"], "{failed}");
    assert!(
        failed.message().starts_with("no backup:")
            && failed.message().ends_with("the file was not written"),
        "{failed}"
    );
    assert_eq!(sha(host, POOL), before, "untouched");
    assert_eq!(leftovers(host), "");
}

/// Time from request to verified (an applied timeout edit) and of a rollback, a few runs each.
fn figures(host: &Host) {
    let mut applied = Vec::new();
    let mut old: Option<String> = None;
    for i in 0..5 {
        let new = format!("{}s", 61 + i);
        let edit = site_edit(
            host,
            EditableDirective::FastcgiReadTimeout,
            old.as_deref(),
            &new,
        );
        let done = edit_config(host, &edit, &[]);
        assert_eq!(done.status(), "succeeded", "{done}");
        applied.push(elapsed(&done));
        old = Some(new);
    }
    let mut rollbacks = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..3 {
        let edit = site_edit(host, EditableDirective::FastcgiPass, Some(PHP82), DEAD);
        let done = edit_config(host, &edit, &["--verify-timeout-ms", "1500"]);
        assert_eq!(done.status(), "rolled_back", "{done}");
        rollbacks.push(
            [
                "rollback_restore",
                "rollback_test",
                "rollback_reload",
                "rollback_verify",
            ]
            .iter()
            .map(|s| duration(&done, s))
            .sum(),
        );
        totals.push(elapsed(&done));
    }
    eprintln!(
        "act_edit figures: applied edit, request to verified: median {} ms of {applied:?}; \
         rollback (restore, test, reload, verify): median {} ms of {rollbacks:?}; \
         whole rolled-back request with a 1500 ms verify timeout: median {} ms of {totals:?}",
        median(applied.clone()),
        median(rollbacks.clone()),
        median(totals.clone())
    );
}
