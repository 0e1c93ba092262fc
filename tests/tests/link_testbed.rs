//! The link on the testbed: `gatemend-agent run` inside two real hosts, under each host's own
//! systemd, reaches `gatemend-controller` on the outer machine over its veth with mutual TLS —
//! the controller listens on both hosts' outer addresses, the agents verify the controller's
//! certificate by that address, and the controller binds each stream to its certificate.
//!
//! The binaries must be built first: `cargo build --workspace --bins`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gatemend_tests::stack::{Controller, LogLine, free_port, make_pki};
use gatemend_tests::testbed::{Fleet, Host, HostSpec, binaries, http};

/// Where the agent is inside a host.
const AGENT: &str = binaries::AGENT_INSIDE;
/// The transient unit the agent runs as inside a host.
const UNIT: &str = "gatemend-agent";
/// Where each host keeps its certificates and config.
const PKI_INSIDE: &str = "/etc/gatemend/pki";
const CONFIG_INSIDE: &str = "/etc/gatemend/agent.yaml";
/// Long enough for a boot-time agent start, a TLS handshake and a few backoff rounds; the
/// tests wait for events, they do not time them.
const DEADLINE: Duration = Duration::from_secs(30);

/// A scratch directory on the outer machine (PKI, controller log, findings log), removed at
/// the end of a passing test and kept for a look after a failing one.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gatemend-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Waits until `matches` holds for at least `count` lines of the controller's log.
#[track_caller]
fn wait_count(
    controller: &Controller,
    what: &str,
    count: usize,
    matches: impl Fn(&LogLine<'_>) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    while controller.matching(&matches).len() < count {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; controller log:\n{}",
            controller.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `count` hosts with the freshly built agent mounted at [`AGENT`].
fn boot(count: usize) -> Fleet {
    let spec = HostSpec::default()
        .with_agent()
        .unwrap_or_else(|e| panic!("{e} (run `cargo build --workspace --bins` first)"));
    Fleet::boot_for_test(count, &spec)
}

/// Copies the CA and the certificate and key issued for `cert_of` into `host`.
fn install_cert(host: &Host, pki: &Path, cert_of: &str) {
    host.sh(&format!("mkdir -p {PKI_INSIDE}")).unwrap();
    let ca = fs::read_to_string(pki.join("ca.pem")).unwrap();
    host.write(&format!("{PKI_INSIDE}/ca.pem"), &ca).unwrap();
    for ext in ["pem", "key"] {
        let text = fs::read_to_string(pki.join("hosts").join(format!("{cert_of}.{ext}"))).unwrap();
        host.write(&format!("{PKI_INSIDE}/{cert_of}.{ext}"), &text)
            .unwrap();
    }
    host.sh(&format!("chmod 600 {PKI_INSIDE}/*.key")).unwrap();
}

/// The agent's config inside `host`: its own name in Hello, the certificate issued for
/// `cert_of`, and the controller at the host's outer veth address (also the TLS server name,
/// so the controller's certificate is checked for that address).
fn write_config(host: &Host, port: u16, cert_of: &str) {
    let outer = host.outer_addr();
    let config = format!(
        "host: {name}
controller:
  endpoints: [\"https://{outer}:{port}\"]
  tls:
    ca: {PKI_INSIDE}/ca.pem
    cert: {PKI_INSIDE}/{cert_of}.pem
    key: {PKI_INSIDE}/{cert_of}.key
    server_name: \"{outer}\"
  heartbeat_secs: 1
  backoff_initial_ms: 200
  backoff_max_ms: 2000
outbox: {{dir: /var/lib/gatemend/outbox}}
state_dir: /var/lib/gatemend/state
",
        name = host.name()
    );
    host.sh("mkdir -p /etc/gatemend").unwrap();
    host.write(CONFIG_INSIDE, &config).unwrap();
}

/// Starts the agent as a transient unit under the host's own systemd.
fn start_agent(host: &Host) {
    host.exec(&[
        "systemd-run",
        &format!("--unit={UNIT}"),
        "--collect",
        "--setenv=RUST_LOG=info",
        AGENT,
        "run",
        "--config",
        CONFIG_INSIDE,
    ])
    .unwrap();
}

fn stop_agent(host: &Host) {
    host.exec(&["systemctl", "stop", UNIT]).unwrap();
}

/// The agent's journal inside `host`, for failure messages.
fn agent_journal(host: &Host) -> String {
    host.output(&["journalctl", "--no-pager", "-o", "cat", "-u", UNIT])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn start_controller(scratch: &Path, pki: &Path, listen: &[SocketAddr]) -> Controller {
    let mut command = Command::new(binaries::path("gatemend-controller").unwrap());
    for addr in listen {
        command.arg("--listen").arg(addr.to_string());
    }
    command
        .arg("--tls-dir")
        .arg(pki)
        .arg("--findings-log")
        .arg(scratch.join("findings.jsonl"))
        .args(["--heartbeat-timeout", "10"]);
    Controller::spawn(&mut command, scratch.join("controller.log"), listen).unwrap()
}

fn connected(host: &Host) -> impl Fn(&LogLine<'_>) -> bool {
    let name = host.name();
    let veth = host.host_addr();
    move |l| {
        l.says("Agent connected.")
            && l.field("host").as_deref() == Some(name.as_str())
            && l.peer_ip() == Some(veth)
    }
}

#[test]
fn agents_in_two_hosts_reach_the_controller_over_their_veths_with_mutual_tls() {
    let scratch = Scratch::new("link-testbed");
    let fleet = boot(2);
    let [gm_a, gm_b] = fleet.hosts() else {
        panic!("expected two hosts")
    };
    let pki = scratch.0.join("pki");
    make_pki(&pki, fleet.hosts()).unwrap();
    let port = free_port(&[gm_a.outer_addr(), gm_b.outer_addr()]).unwrap();
    let listen: Vec<SocketAddr> = fleet
        .hosts()
        .iter()
        .map(|h| SocketAddr::from((h.outer_addr(), port)))
        .collect();
    let controller = start_controller(&scratch.0, &pki, &listen);

    for host in fleet.hosts() {
        install_cert(host, &pki, &host.name());
        write_config(host, port, &host.name());
        start_agent(host);
    }
    // Each host arrives from its own veth address with its own certificate's name.
    for host in fleet.hosts() {
        let line = controller
            .wait_for(
                &format!(
                    "{} to connect from {} (agent journal:\n{})",
                    host.name(),
                    host.host_addr(),
                    agent_journal(host)
                ),
                DEADLINE,
                connected(host),
            )
            .unwrap();
        eprintln!("{line}");
    }

    // An agent stopped by its host's systemd: its stream ends and the controller says so.
    stop_agent(gm_a);
    let a_name = gm_a.name();
    controller
        .wait_for(&format!("{a_name} to go offline"), DEADLINE, |l| {
            l.says("Agent offline.") && l.field("host").as_deref() == Some(a_name.as_str())
        })
        .unwrap();

    // gm_b's agent with gm_a's certificate, over gm_b's own veth: the handshake succeeds (the
    // certificate is the CA's), but the Hello for gm_b is refused for gm_a's certificate.
    stop_agent(gm_b);
    let b_name = gm_b.name();
    controller
        .wait_for(&format!("{b_name} to go offline"), DEADLINE, |l| {
            l.says("Agent offline.") && l.field("host").as_deref() == Some(b_name.as_str())
        })
        .unwrap();
    install_cert(gm_b, &pki, &a_name);
    write_config(gm_b, port, &a_name);
    start_agent(gm_b);
    let b_veth = gm_b.host_addr();
    let refused = controller
        .wait_for(
            &format!("{b_name}'s stream with {a_name}'s certificate to be refused"),
            DEADLINE,
            |l| {
                l.says("Refused an agent stream.")
                    && l.peer_ip() == Some(b_veth)
                    && l.field("code").as_deref() == Some("PermissionDenied")
            },
        )
        .unwrap();
    assert!(
        refused.contains(&format!("`{b_name}` does not match the client certificate")),
        "{refused}"
    );
    eprintln!("{refused}");
    // The agent keeps retrying with backoff; none of its attempts is let in.
    wait_count(
        &controller,
        &format!("{b_name} to be refused again"),
        2,
        |l| l.says("Refused an agent stream.") && l.peer_ip() == Some(b_veth),
    );
    stop_agent(gm_b);
    assert_eq!(
        controller.matching(connected(gm_b)).len(),
        1,
        "{b_name} connected with {a_name}'s certificate:\n{}",
        controller.log()
    );
    assert_eq!(
        controller
            .matching(|l| l.says("Agent connected.") && l.peer_ip() == Some(b_veth))
            .len(),
        1,
        "a stream from {b_veth} was let in as another host:\n{}",
        controller.log()
    );
    drop(controller);
}

/// A 502 inside a host reaches the controller's findings log over the veth: php-fpm stopped,
/// `GET /index.php` from outside, the agent tails nginx's error log, and the controller stores
/// the finding under the host's name.
#[test]
fn a_502_inside_a_host_reaches_the_controllers_findings_log_with_its_access_log_count() {
    let scratch = Scratch::new("link-testbed-finding");
    let fleet = boot(1);
    let host = &fleet.hosts()[0];
    let pki = scratch.0.join("pki");
    make_pki(&pki, fleet.hosts()).unwrap();
    let port = free_port(&[host.outer_addr()]).unwrap();
    let listen = [SocketAddr::from((host.outer_addr(), port))];
    let controller = start_controller(&scratch.0, &pki, &listen);
    install_cert(host, &pki, &host.name());
    write_config(host, port, &host.name());
    start_agent(host);
    controller
        .wait_for(
            &format!("{} to connect", host.name()),
            DEADLINE,
            connected(host),
        )
        .unwrap();

    host.exec(&["systemctl", "stop", "php8.2-fpm.service"])
        .unwrap();
    let page = SocketAddr::from((host.host_addr(), 80));
    let findings = scratch.0.join("findings.jsonl");
    let name = host.name();
    let deadline = Instant::now() + DEADLINE;
    loop {
        // One request per round: the agent sees a 502 whenever it starts tailing.
        let response = http::get(page, "/index.php").unwrap();
        assert_eq!(response.status, 502, "{}", response.body);
        let stored = fs::read_to_string(&findings).unwrap_or_default();
        let mine: Vec<serde_json::Value> = stored
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == "finding" && v["host"] == name.as_str())
            .collect();
        // A later revision carries the access log's 502 count for the upstream (nginx writes
        // the access line after the error line, so the first revision may not have it yet).
        let counted = mine.iter().any(|v| {
            let finding = decode_finding(v["pb_hex"].as_str().unwrap_or_default());
            finding
                .evidence
                .and_then(|e| e.probes.get("access.502_last_60s").cloned())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 1)
        });
        if let (Some(first), true) = (mine.first(), counted) {
            // The diagnosis names what is down, whatever words it uses around it.
            let summary = first["summary"].as_str().unwrap_or_default();
            assert!(summary.contains("php8.2-fpm"), "{first}");
            eprintln!("{summary}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no finding from {name} reached the controller; findings log:\n{stored}\n\
             controller log:\n{}\nagent journal:\n{}",
            controller.log(),
            agent_journal(host)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The wire Finding a findings-log line holds, hex-encoded protobuf.
fn decode_finding(hex: &str) -> gatemend_proto::v1::Finding {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    prost::Message::decode(bytes.as_slice()).unwrap()
}
