//! Diagnosis on real hosts: each fault of TESTBED.md is injected into a host, nginx is made
//! to fail through it (real requests from outside), and `gatemend-agent diagnose --json`, run
//! inside that host, must name the cause, the root cause and the unit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gatemend_tests::testbed::{Fleet, Host, HostSpec, backend, binaries, http};
use serde_json::Value;

#[track_caller]
fn boot() -> Fleet {
    let spec = HostSpec::default().with_agent().unwrap();
    Fleet::boot_for_test(1, &spec)
}

/// Runs `gatemend-agent diagnose --json ARGS` inside the host: exit code and findings.
#[track_caller]
fn diagnose(host: &Host, args: &[&str]) -> (i32, Vec<Value>) {
    let mut argv = vec![binaries::AGENT_INSIDE, "diagnose", "--json"];
    argv.extend_from_slice(args);
    let out = host.output(&argv).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let findings = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), findings)
}

/// Requests `path` from outside until nginx answers `status` (the fault has taken effect).
#[track_caller]
fn until_status(host: &Host, port: u16, path: &str, status: u16) {
    let addr = SocketAddr::from((host.host_addr(), port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = http::get(addr, path).map(|r| r.status);
        if got.as_ref().is_ok_and(|s| *s == status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}{path}: wanted {status}, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one finding with this cause.
#[track_caller]
fn finding<'a>(findings: &'a [Value], cause: &str) -> &'a Value {
    let matching: Vec<&Value> = findings.iter().filter(|f| f["cause"] == cause).collect();
    assert_eq!(
        matching.len(),
        1,
        "one {cause} finding expected in {findings:#?}"
    );
    matching[0]
}

#[track_caller]
fn assert_diagnosed(f: &Value, root_cause: &str, unit: &str) {
    assert_eq!(f["root_cause"], root_cause, "{f:#}");
    assert_eq!(f["unit"], unit, "{f:#}");
    assert!(f["count"].as_u64().unwrap() >= 1, "{f:#}");
    assert!(
        !f["evidence"]["lines"].as_array().unwrap().is_empty(),
        "{f:#}"
    );
}

#[test]
fn a_healthy_host_has_no_finding_and_exits_0() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    until_status(host, 80, "/index.php", 200);
    let (code, findings) = diagnose(host, &[]);
    assert_eq!((code, findings.len()), (0, 0), "{findings:#?}");
}

#[test]
fn php_fpm_stopped_is_service_down_on_php_fpm() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
    until_status(host, 80, "/index.php", 502);
    let (code, findings) = diagnose(host, &[]);
    assert_eq!(code, 1);
    let f = finding(&findings, "upstream_socket_missing");
    assert_diagnosed(f, "service_down", "php8.2-fpm.service");
    assert_eq!(f["upstream"], "unix:/run/php/php8.2-fpm.sock");
    assert_eq!(f["evidence"]["probes"]["unit.ActiveState"], "inactive");

    // Mended: the probes show it, and the finding is no longer open.
    host.exec(&["systemctl", "start", "php8.2-fpm"]).unwrap();
    until_status(host, 80, "/index.php", 200);
    let (code, findings) = diagnose(host, &[]);
    assert_eq!((code, findings.len()), (0, 0), "{findings:#?}");
}

#[test]
fn php_fpm_killed_leaves_a_refusing_socket_and_is_service_down() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.exec(&["systemctl", "kill", "--signal=SIGKILL", "php8.2-fpm"])
        .unwrap();
    until_status(host, 80, "/index.php", 502);
    let (code, findings) = diagnose(host, &[]);
    assert_eq!(code, 1);
    let f = findings
        .iter()
        .find(|f| f["upstream"] == "unix:/run/php/php8.2-fpm.sock")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_diagnosed(f, "service_down", "php8.2-fpm.service");
}

#[test]
fn a_socket_chowned_to_root_is_socket_permission_with_the_pools_owner() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.sh("chown root:root /run/php/php8.2-fpm.sock && chmod 600 /run/php/php8.2-fpm.sock")
        .unwrap();
    until_status(host, 80, "/index.php", 502);
    let (code, findings) = diagnose(host, &[]);
    assert_eq!(code, 1);
    let f = finding(&findings, "upstream_socket_permission");
    assert_diagnosed(f, "socket_permission", "php8.2-fpm.service");
    let why = f["root_cause_detail"].as_str().unwrap();
    assert!(
        why.contains("root:root 0600") && why.contains("www-data:www-data 0660"),
        "{why}"
    );
}

#[test]
fn nginx_pointed_at_the_old_php_socket_is_the_wrong_target() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.sh("sed -i 's/php8.2-fpm.sock/php7.4-fpm.sock/' /etc/nginx/sites-available/default && nginx -t && systemctl reload nginx")
        .unwrap();
    until_status(host, 80, "/index.php", 502);
    let (code, findings) = diagnose(host, &[]);
    assert_eq!(code, 1);
    let f = finding(&findings, "upstream_socket_missing");
    assert_diagnosed(f, "wrong_target", "php8.2-fpm.service");
    let why = f["root_cause_detail"].as_str().unwrap();
    assert!(
        why.contains("/run/php/php7.4-fpm.sock") && why.contains("/run/php/php8.2-fpm.sock"),
        "{why}"
    );
    // The fix is proposed as one edit of the site nginx read, against its current text.
    let edit = &f["edit"];
    assert_edit(
        host,
        edit,
        "/etc/nginx/sites-enabled/default",
        "fastcgi_pass",
        (
            "unix:/run/php/php7.4-fpm.sock",
            "unix:/run/php/php8.2-fpm.sock",
        ),
    );
    assert_eq!(
        edit["block"],
        serde_json::json!(["server[_]", "location[~ \\.php$]"])
    );
    assert_eq!(edit["block_outer"], serde_json::json!(["http"]));
    let diff = edit["diff"].as_str().unwrap();
    assert!(
        diff.contains("\n-        fastcgi_pass unix:/run/php/php7.4-fpm.sock;\n")
            && diff.contains("\n+        fastcgi_pass unix:/run/php/php8.2-fpm.sock;\n"),
        "{diff}"
    );
    assert_eq!(
        diff.lines().filter(|l| l.starts_with('-')).count(),
        2,
        "{diff}"
    );
    assert_eq!(
        diff.lines().filter(|l| l.starts_with('+')).count(),
        2,
        "{diff}"
    );
}

/// A proposed edit (the finding's `edit`): its kind, file, directive and values, and the
/// SHA-256 of the file as it is on the host now.
#[track_caller]
fn assert_edit(host: &Host, edit: &Value, file: &str, directive: &str, (old, new): (&str, &str)) {
    assert!(edit.is_object(), "no edit proposed: {edit}");
    let kind = if file.starts_with("/etc/php/") {
        "php_fpm_pool"
    } else {
        "nginx"
    };
    assert_eq!(edit["kind"], kind, "{edit:#}");
    assert_eq!(edit["file"], file, "{edit:#}");
    assert_eq!(edit["directive"], directive, "{edit:#}");
    assert_eq!(edit["old_value"], old, "{edit:#}");
    if !new.is_empty() {
        assert_eq!(edit["new_value"], new, "{edit:#}");
    }
    let sha = host.exec(&["sha256sum", file]).unwrap();
    assert_eq!(
        edit["file_sha256"].as_str(),
        sha.split_whitespace().next(),
        "{edit:#}"
    );
    assert!(!edit["why"].as_str().unwrap().is_empty(), "{edit:#}");
}

#[test]
fn a_stopped_proxied_backend_is_service_down_on_its_unit() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.write(backend::SCRIPT_PATH, backend::SCRIPT).unwrap();
    host.write("/etc/nginx/conf.d/proxy.conf", backend::PROXY_SITE)
        .unwrap();
    host.sh("systemctl reload nginx && systemd-run --unit=backend python3 /opt/backend.py")
        .unwrap();
    until_status(host, 8080, "/", 200);
    host.exec(&["systemctl", "stop", "backend"]).unwrap();
    until_status(host, 8080, "/", 502);
    let (code, findings) = diagnose(host, &["--unit", "127.0.0.1:3000=backend.service"]);
    assert_eq!(code, 1);
    let f = finding(&findings, "upstream_refused");
    // A transient unit that was stopped is gone from systemd's memory once stopped, or
    // inactive: either way not running.
    assert_eq!(f["root_cause"], "service_down", "{f:#}");
    assert_eq!(f["unit"], "backend.service", "{f:#}");
    assert_eq!(f["upstream"], "127.0.0.1:3000");
}

#[test]
fn a_broken_config_on_disk_is_config_invalid_before_and_after_a_reload_fails() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.write(
        "/etc/nginx/conf.d/broken.conf",
        "this_is_not_a_directive;\n",
    )
    .unwrap();
    // Nobody reloaded yet: `nginx -T` (a probe) already fails, and says where.
    let (code, findings) = diagnose(host, &[]);
    assert_eq!(code, 1);
    let f = finding(&findings, "config_invalid");
    assert_diagnosed(f, "config_invalid", "nginx.service");
    let why = f["root_cause_detail"].as_str().unwrap();
    assert!(why.contains("this_is_not_a_directive"), "{why}");
    assert!(why.contains("/etc/nginx/conf.d/broken.conf:1"), "{why}");

    // A reload by signal: the master logs the [emerg] to error.log and keeps serving. Still
    // one finding: the log line and nginx -T's name the same file and line.
    host.sh("kill -HUP $(cat /run/nginx.pid)").unwrap();
    until_status(host, 80, "/index.php", 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !host
        .read("/var/log/nginx/error.log")
        .unwrap()
        .contains("[emerg]")
    {
        assert!(Instant::now() < deadline, "nginx logged no [emerg]");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, findings) = diagnose(host, &[]);
    assert_eq!(code, 1);
    let f = finding(&findings, "config_invalid");
    assert_diagnosed(f, "config_invalid", "nginx.service");
}

const SLOW_SITE: &str = "server {
    listen 8081;
    root /var/www/html;
    location ~ \\.php$ {
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
        fastcgi_read_timeout 1s;
    }
}
";

#[test]
fn a_php_script_slower_than_the_read_timeout_is_upstream_slow() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.write("/var/www/html/slow.php", "<?php sleep(3); echo \"slow\";\n")
        .unwrap();
    host.write("/etc/nginx/conf.d/slow.conf", SLOW_SITE)
        .unwrap();
    host.exec(&["systemctl", "reload", "nginx"]).unwrap();
    until_status(host, 8081, "/slow.php", 504);
    let (code, findings) = diagnose(host, &[]);
    assert_eq!(code, 1);
    let f = finding(&findings, "upstream_read_timeout");
    assert_diagnosed(f, "upstream_slow", "php8.2-fpm.service");
    let why = f["root_cause_detail"].as_str().unwrap();
    assert!(why.contains("fastcgi_read_timeout 1s"), "{why}");
    // Raised on that location only (the line names the unnamed server of slow.conf), x1.5
    // rounded up to whole seconds.
    let edit = &f["edit"];
    assert_edit(
        host,
        edit,
        "/etc/nginx/conf.d/slow.conf",
        "fastcgi_read_timeout",
        ("1s", "2s"),
    );
    assert_eq!(
        edit["block"],
        serde_json::json!(["server", "location[~ \\.php$]"])
    );
}

#[test]
fn php_fpm_at_max_children_is_capacity_exhausted() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.write("/var/www/html/slow.php", "<?php sleep(2); echo \"slow\";\n")
        .unwrap();
    host.sh(
        "sed -i -e 's/^pm.max_children = .*/pm.max_children = 1/' -e 's/^pm.start_servers = .*/pm.start_servers = 1/' \
         -e 's/^pm.min_spare_servers = .*/pm.min_spare_servers = 1/' -e 's/^pm.max_spare_servers = .*/pm.max_spare_servers = 1/' \
         /etc/php/8.2/fpm/pool.d/www.conf && systemctl restart php8.2-fpm",
    )
        .unwrap();
    until_status(host, 80, "/index.php", 200);
    let addr = SocketAddr::from((host.host_addr(), 80));
    let requests: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || http::get(addr, "/slow.php")))
        .collect();
    for r in requests {
        let _ = r.join();
    }
    let (code, findings) = diagnose(host, &[]);
    assert_eq!(code, 1);
    let f = finding(&findings, "fpm_max_children");
    assert_diagnosed(f, "capacity_exhausted", "php8.2-fpm.service");
    assert!(
        f["root_cause_detail"]
            .as_str()
            .unwrap()
            .contains("pm.max_children = 1"),
        "{f:#}"
    );
    // The host has memory to spare for more children of the size measured: raised within the
    // bound, and the reason gives the figures.
    let edit = &f["edit"];
    assert_edit(
        host,
        edit,
        "/etc/php/8.2/fpm/pool.d/www.conf",
        "pm.max_children",
        ("1", ""),
    );
    let new: u32 = edit["new_value"].as_str().unwrap().parse().unwrap();
    assert!((2..=256).contains(&new), "{edit:#}");
    assert_eq!(edit["block"], serde_json::json!(["www"]));
    let why = edit["why"].as_str().unwrap();
    assert!(
        why.contains("MemAvailable") && why.contains("each on average"),
        "{why}"
    );
}
