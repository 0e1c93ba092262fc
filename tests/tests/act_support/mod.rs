//! What the act_* tests share: a host with the freshly built agent and a config that allows
//! every action, `gatemend-agent act` run inside it, and small readers of the host's state.
//!
//! The agent binary must be built first: `cargo build -p gatemend-agent` (test.sh builds every
//! binary before the tests).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use gatemend_tests::testbed::{Fleet, Host, HostSpec, binaries, http};
use serde_json::Value;

/// Where the agent is inside a host.
pub const AGENT: &str = binaries::AGENT_INSIDE;
/// php-fpm's unit and socket in the hosts.
pub const PHP_UNIT: &str = "php8.2-fpm.service";
pub const PHP_SOCKET: &str = "/run/php/php8.2-fpm.sock";

/// Every action allowed; units: the defaults plus the test's own `gatemend-broken*` units.
pub const CONFIG: &str = "host: web1
allowed_actions: [restart_unit, start_unit, fix_socket_ownership, reload_nginx, escalate]
controller:
  endpoints: [\"http://127.0.0.1:7443\"]
  insecure: true
outbox: {dir: /var/lib/gatemend/outbox}
state_dir: /var/lib/gatemend/state
actions:
  units: [\"php*-fpm.service\", \"nginx.service\", \"gatemend-broken*.service\"]
  default_verify_timeout_ms: 20000
";

/// One booted host with the agent at [`AGENT`] and [`CONFIG`] at /etc/gatemend/agent.yaml.
#[track_caller]
pub fn boot() -> Fleet {
    let spec = HostSpec::default()
        .with_agent()
        .unwrap_or_else(|e| panic!("{e} (run `cargo build -p gatemend-agent` first)"));
    let fleet = Fleet::boot_for_test(1, &spec);
    let host = &fleet.hosts()[0];
    host.sh("mkdir -p /etc/gatemend").unwrap();
    host.write("/etc/gatemend/agent.yaml", CONFIG).unwrap();
    fleet
}

/// The result of one `gatemend-agent act`.
#[derive(Debug)]
pub struct Acted {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
}

impl Acted {
    pub fn status(&self) -> &str {
        self.json["status"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }

    /// The output of every step called `name`, joined.
    pub fn step(&self, name: &str) -> String {
        self.json["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"] == name)
            .map(|s| s["output"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every step's name, in order.
    pub fn step_names(&self) -> Vec<String> {
        self.json["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl std::fmt::Display for Acted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n{}\nstderr: {}",
            self.code,
            serde_json::to_string_pretty(&self.json).unwrap_or_default(),
            self.stderr
        )
    }
}

/// Runs `gatemend-agent act ARGS` inside the host (as root, like the agent).
#[track_caller]
pub fn act(host: &Host, args: &[&str]) -> Acted {
    let mut argv = vec![AGENT, "act"];
    argv.extend_from_slice(args);
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

/// A unit property as systemd reports it inside the host.
pub fn prop(host: &Host, unit: &str, property: &str) -> String {
    host.unit_property(unit, property).unwrap()
}

/// `(uid, gid, mode, is_socket, is_symlink)` of a path inside the host, not following links.
pub fn lstat(host: &Host, inside: &str) -> (u32, u32, u32, bool, bool) {
    let meta = std::fs::symlink_metadata(host.path(inside)).unwrap();
    (
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777,
        meta.file_type().is_socket(),
        meta.file_type().is_symlink(),
    )
}

/// www-data's uid and gid in the host.
pub fn www_data(host: &Host) -> (u32, u32) {
    let ids = host.exec(&["id", "-u", "www-data"]).unwrap();
    let gid = host.exec(&["id", "-g", "www-data"]).unwrap();
    (ids.trim().parse().unwrap(), gid.trim().parse().unwrap())
}

/// nginx's master pid and its workers' pids (sorted), read inside the host.
pub fn nginx_pids(host: &Host) -> (u32, Vec<u32>) {
    let master: u32 = host.read("/run/nginx.pid").unwrap().trim().parse().unwrap();
    let workers = host
        .exec(&["ps", "-o", "pid=", "--ppid", &master.to_string()])
        .unwrap();
    let mut workers: Vec<u32> = workers
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    workers.sort_unstable();
    (master, workers)
}

/// GET `path` from the host's nginx at its own address.
pub fn get(host: &Host, port: u16, path: &str) -> std::io::Result<http::Response> {
    http::get(SocketAddr::from((host.host_addr(), port)), path)
}

/// The PHP page answers through php-fpm's socket.
#[track_caller]
pub fn assert_php_serves(host: &Host) {
    let page = get(host, 80, "/index.php").unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body.trim(), format!("php ok on {}", host.name()));
}
