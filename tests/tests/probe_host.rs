//! The nginx and TCP listener probes on real hosts: `gatemend-agent probe nginx` and
//! `gatemend-agent probe listeners` run inside a host against its real nginx, php-fpm and
//! systemd.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatemend_tests::testbed::{Fleet, Host, HostSpec, binaries};
use serde_json::{Value, json};

#[track_caller]
fn boot() -> Fleet {
    let spec = HostSpec::default().with_agent().unwrap();
    Fleet::boot_for_test(1, &spec)
}

/// Runs `gatemend-agent probe ARGS...` inside the host: its exit status and stdout.
#[track_caller]
fn probe(host: &Host, args: &[&str]) -> (bool, String) {
    let mut argv = vec![binaries::AGENT_INSIDE, "probe"];
    argv.extend_from_slice(args);
    let out = host.output(&argv).unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}")),
    )
}

/// `probe listeners` as JSON objects.
#[track_caller]
fn listeners(host: &Host) -> Vec<Value> {
    let (ok, stdout) = probe(host, &["listeners"]);
    assert!(ok, "probe listeners failed: {stdout}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn on_port(listeners: &[Value], addr: &str) -> Option<Value> {
    listeners.iter().find(|l| l["addr"] == addr).cloned()
}

#[test]
fn probe_nginx_reads_the_hosts_config() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let (ok, stdout) = probe(host, &["nginx"]);
    assert!(ok, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["exit_code"], 0);
    assert!(
        report["stderr"]
            .as_str()
            .unwrap()
            .contains("test is successful"),
        "{report:#}"
    );
    let config = &report["config"];
    assert_eq!(config["user"], "www-data");
    assert_eq!(config["worker_connections"], 768);
    let error_logs = config["error_logs"].as_array().unwrap();
    assert!(
        error_logs
            .iter()
            .any(|l| l["path"] == "/var/log/nginx/error.log"
                && l["destination"] == "file"
                && l["file"] == "/etc/nginx/nginx.conf"),
        "{error_logs:#?}"
    );
    let passes = config["passes"].as_array().unwrap();
    let php: Vec<&Value> = passes.iter().filter(|p| p["kind"] == "fastcgi").collect();
    assert_eq!(php.len(), 1, "{passes:#?}");
    assert_eq!(
        php[0]["target"],
        json!({"unix": "/run/php/php8.2-fpm.sock"})
    );
    assert_eq!(php[0]["file"], "/etc/nginx/sites-enabled/default");
    assert!(
        config["files"]
            .as_array()
            .unwrap()
            .contains(&json!("/etc/nginx/snippets/fastcgi-php.conf"))
    );
}

#[test]
fn probe_nginx_keeps_the_emerg_of_a_broken_config() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.write("/etc/nginx/conf.d/broken.conf", "no_such_directive on;\n")
        .unwrap();
    let (ok, stdout) = probe(host, &["nginx"]);
    assert!(!ok, "a failing nginx -T is reported as a failure");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["exit_code"], 1);
    let stderr = report["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("[emerg]")
            && stderr.contains("unknown directive \"no_such_directive\"")
            && stderr.contains("/etc/nginx/conf.d/broken.conf:1"),
        "{stderr}"
    );
}

#[test]
fn probe_listeners_maps_ports_to_processes_and_units() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let found = listeners(host);
    let nginx_pids: Vec<u64> = host
        .exec(&["pgrep", "-x", "nginx"])
        .unwrap()
        .lines()
        .map(|p| p.trim().parse().unwrap())
        .collect();
    for addr in ["0.0.0.0:80", "[::]:80"] {
        let nginx = on_port(&found, addr).unwrap_or_else(|| panic!("no {addr}: {found:#?}"));
        assert_eq!(nginx["unit"], "nginx.service", "{nginx}");
        assert_eq!(nginx["process"], "nginx", "{nginx}");
        // The master and every worker hold the listening socket.
        let mut pids: Vec<u64> = nginx["pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        pids.sort_unstable();
        let mut expected = nginx_pids.clone();
        expected.sort_unstable();
        assert_eq!(pids, expected, "{nginx}");
    }
    assert!(on_port(&found, "127.0.0.1:3000").is_none(), "{found:#?}");

    // A backend as a transient unit. The hosts have python3-minimal, which has no http.server:
    // a plain socket server stands in for `python3 -m http.server`.
    host.exec(&[
        "systemd-run",
        "--unit=backend",
        "python3",
        "-c",
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', 3000))\n\
         s.listen()\n\
         while True: s.accept()[0].close()\n",
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let backend = loop {
        if let Some(backend) = on_port(&listeners(host), "127.0.0.1:3000") {
            break backend;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on 3000: {}",
            host.sh("systemctl status backend --no-pager; journalctl -u backend --no-pager")
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(backend["unit"], "backend.service", "{backend}");
    assert_eq!(backend["process"], "python3", "{backend}");
    assert_eq!(
        backend["pids"],
        json!([host
            .unit_property("backend.service", "MainPID")
            .unwrap()
            .parse::<u64>()
            .unwrap()])
    );
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/nginx")
}

/// Records `agent/tests/fixtures/nginx/*.txt` from a fresh host (see the README there):
/// `cargo test -p gatemend-tests --test probe_host -- --ignored record_nginx_fixtures`.
#[test]
#[ignore = "records fixtures; run deliberately, then read the diff"]
fn record_nginx_fixtures() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    std::fs::write(fixtures().join("debian_default.txt"), nginx_t(host)).unwrap();

    let extra = std::fs::read_to_string(fixtures().join("upstreams.conf")).unwrap();
    host.write("/etc/nginx/conf.d/upstreams.conf", &extra)
        .unwrap();
    host.sh("echo '127.0.0.1 backend.example app.internal' >> /etc/hosts")
        .unwrap();
    std::fs::write(fixtures().join("upstreams.txt"), nginx_t(host)).unwrap();
}

/// The bytes `nginx -T` prints on stdout, as they are (the fixtures keep them exactly).
#[track_caller]
fn nginx_t(host: &Host) -> Vec<u8> {
    let out = host.output(&["nginx", "-T"]).unwrap();
    assert!(
        out.status.success(),
        "nginx -T: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
