//! The whole gatemend stack on a testbed fleet, as production runs it: a PKI from
//! `gatemend pki`, `gatemend-controller` on the outer machine listening on every host's outer
//! veth address with mutual TLS and the given policies, and `gatemend-agent` inside each host
//! under the host's own systemd through `deploy/systemd/gatemend-agent.service` (the hardened
//! unit operators install), with a certificate issued for that host.
//!
//! The demo and the end-to-end scenarios (tests/tests/loop_*.rs) are built on it.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};

use crate::testbed::{Fleet, Host, HostSpec, binaries};

/// Where the agent binary is inside a host: the path the deploy unit runs.
pub const AGENT_INSIDE: &str = "/usr/local/bin/gatemend-agent";
/// The agent's unit inside a host.
pub const AGENT_UNIT: &str = "gatemend-agent.service";
const PKI_INSIDE: &str = "/etc/gatemend/pki";
const CONFIG_INSIDE: &str = "/etc/gatemend/agent.yaml";
/// The hardened unit file, as shipped.
const AGENT_UNIT_FILE: &str = include_str!("../../deploy/systemd/gatemend-agent.service");

/// What to run.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// Hosts to boot.
    pub hosts: usize,
    /// The policy directory the controller loads.
    pub policies: PathBuf,
    /// More controller flags (`--dry-run`, ...).
    pub controller_args: Vec<String>,
    /// YAML appended to every agent's config (`units:`, `actions:`).
    pub agent_yaml: String,
    /// Where the scratch directory (PKI, logs) goes; a fresh temp dir when `None`.
    pub scratch: Option<PathBuf>,
}

impl StackSpec {
    /// `hosts` hosts with the shipped policies of this repository.
    pub fn shipped(hosts: usize) -> StackSpec {
        StackSpec {
            hosts,
            policies: Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"),
            controller_args: Vec::new(),
            agent_yaml: String::new(),
            scratch: None,
        }
    }
}

/// The running stack; everything stops when it is dropped.
#[derive(Debug)]
pub struct Stack {
    // Dropped first: the controller goes before the hosts.
    controller: Option<Controller>,
    fleet: Fleet,
    spec: StackSpec,
    dir: PathBuf,
    port: u16,
    keep: bool,
    /// The review UI and API, on loopback.
    http: SocketAddr,
    /// An approver's token for it.
    token: String,
}

impl Stack {
    /// Boots the fleet, makes the PKI, starts the controller and every agent, and waits until
    /// every agent is connected.
    pub fn start(spec: &StackSpec) -> anyhow::Result<Stack> {
        let dir = match &spec.scratch {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir().join(format!(
                "gatemend-stack-{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            )),
        };
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let agent = binaries::path("gatemend-agent")?;
        let host_spec = HostSpec::default().bind_ro(agent, AGENT_INSIDE);
        let fleet = Fleet::boot(spec.hosts, &host_spec)?;
        let outer: Vec<Ipv4Addr> = fleet.hosts().iter().map(Host::outer_addr).collect();
        let port = free_port(&outer)?;
        make_pki(&dir.join("pki"), fleet.hosts())?;
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(&[Ipv4Addr::LOCALHOST])?));
        let token = make_token(&dir.join("tokens.yaml"))?;
        let mut stack = Stack {
            controller: None,
            fleet,
            spec: spec.clone(),
            dir,
            port,
            keep: false,
            http,
            token,
        };
        stack.start_controller()?;
        for host in stack.fleet.hosts() {
            install_agent(host, &stack.dir.join("pki"), port, &spec.agent_yaml)?;
        }
        for host in stack.fleet.hosts() {
            let name = host.name();
            stack.controller()?.wait_for(
                &format!("{name} to connect"),
                Duration::from_secs(60),
                |l| l.says("Agent connected.") && l.field("host").as_deref() == Some(name.as_str()),
            )?;
        }
        Ok(stack)
    }

    pub fn hosts(&self) -> &[Host] {
        self.fleet.hosts()
    }

    /// The scratch directory: `pki/`, `controller.log`, `findings.jsonl`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The review UI and API: `http://127.0.0.1:PORT`.
    pub fn ui_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The token of the operator `demo` (role approver), for the UI, the API and the CLI.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `gatemend approvals ARGS...` against this stack's controller, as operator `demo`.
    pub fn approvals(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(binaries::path("gatemend")?)
            .arg("approvals")
            .args(args)
            .args(["--controller", &self.ui_url()])
            .env("GATEMEND_TOKEN", &self.token)
            .output()?;
        if !out.status.success() {
            bail!(
                "gatemend approvals {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The controller's audit log (SQLite in the scratch directory).
    pub fn audit_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("audit.db").display())
    }

    /// `gatemend audit verify`: Ok when the hash chain is intact, else its output.
    pub fn verify_audit(&self) -> anyhow::Result<()> {
        let out = Command::new(binaries::path("gatemend")?)
            .args(["audit", "verify", "--db", &self.audit_url()])
            .output()?;
        if !out.status.success() {
            bail!(
                "gatemend audit verify failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The audit records (`gatemend audit list --json`), oldest first.
    pub fn audit_records(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = Command::new(binaries::path("gatemend")?)
            .args(["audit", "list", "--json", "--db", &self.audit_url()])
            .output()?;
        if !out.status.success() {
            bail!(
                "gatemend audit list failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).context("audit list printed a line that is not JSON"))
            .collect()
    }

    /// Keeps the scratch directory after the stack stops (for a failed test).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn controller(&self) -> anyhow::Result<&Controller> {
        self.controller
            .as_ref()
            .context("the controller is not running")
    }

    /// Starts the controller (again, after [`Stack::kill_controller`]); its log is appended to.
    pub fn start_controller(&mut self) -> anyhow::Result<()> {
        let listen: Vec<SocketAddr> = self
            .fleet
            .hosts()
            .iter()
            .map(|h| SocketAddr::from((h.outer_addr(), self.port)))
            .collect();
        let log = self.dir.join("controller.log");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut command = Command::new(binaries::path("gatemend-controller")?);
        for addr in &listen {
            command.arg("--listen").arg(addr.to_string());
        }
        command
            .arg("--tls-dir")
            .arg(self.dir.join("pki"))
            .arg("--findings-log")
            .arg(self.dir.join("findings.jsonl"))
            .arg("--state-file")
            .arg(self.dir.join("fleet-state.json"))
            .arg("--db")
            .arg(self.audit_url())
            .arg("--http-listen")
            .arg(self.http.to_string())
            .arg("--tokens")
            .arg(self.dir.join("tokens.yaml"))
            .arg("--policies")
            .arg(&self.spec.policies)
            .args(["--heartbeat-timeout", "10"])
            .args(&self.spec.controller_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let already = Controller::read(&log).lines().count();
        let child = command.spawn().context("starting gatemend-controller")?;
        let controller = Controller {
            child,
            log,
            from_line: already,
        };
        for addr in &listen {
            let want = addr.to_string();
            controller.wait_for(
                &format!("the controller to listen on {addr}"),
                Duration::from_secs(30),
                |l| {
                    l.says("Listening for agents.")
                        && l.field("listen").as_deref() == Some(want.as_str())
                },
            )?;
        }
        self.controller = Some(controller);
        Ok(())
    }

    /// SIGKILLs the controller: no shutdown path runs.
    pub fn kill_controller(&mut self) {
        self.controller = None;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.controller = None;
        if self.keep || std::thread::panicking() {
            eprintln!("stack files kept for inspection: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The controller process, SIGKILLed when dropped.
#[derive(Debug)]
pub struct Controller {
    child: Child,
    log: PathBuf,
    /// Lines of the (shared) log written before this process started.
    from_line: usize,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    /// The whole log, every controller run of this stack.
    pub fn log(&self) -> String {
        Self::read(&self.log)
    }

    /// The lines this controller process wrote.
    pub fn lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .skip(self.from_line)
            .map(str::to_owned)
            .collect()
    }

    /// Lines of every run that match.
    pub fn matching(&self, matches: impl Fn(&LogLine<'_>) -> bool) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| matches(&LogLine::new(l)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a line of every run matches; returns it.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&LogLine<'_>) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.matching(&matches).into_iter().next() {
                return Ok(line);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out waiting for {what}; controller log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One line of the controller's plain-text log:
/// `<RFC 3339 time>  <LEVEL> <target>: <message> key=value key="value" ...`.
#[derive(Debug, Clone, Copy)]
pub struct LogLine<'a> {
    text: &'a str,
}

impl<'a> LogLine<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text }
    }

    pub fn says(&self, message: &str) -> bool {
        self.text.contains(message)
    }

    /// A field's value; a quoted value (a `?`-formatted string) unquoted and unescaped.
    pub fn field(&self, key: &str) -> Option<String> {
        let needle = format!(" {key}=");
        let start = self.text.find(&needle)? + needle.len();
        let rest = &self.text[start..];
        let Some(quoted) = rest.strip_prefix('"') else {
            return rest.split(' ').next().map(str::to_owned);
        };
        let mut value = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other) => value.push(other),
                    None => break,
                },
                c => value.push(c),
            }
        }
        Some(value)
    }

    /// The IPv4 address of the `peer` field (`10.77.1.2:45914`).
    pub fn peer_ip(&self) -> Option<Ipv4Addr> {
        let peer: SocketAddr = self.field("peer")?.parse().ok()?;
        match peer.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        }
    }

    /// When the line was written.
    pub fn time(&self) -> Option<SystemTime> {
        let stamp = self.text.split_whitespace().next()?;
        humantime::parse_rfc3339(stamp).ok()
    }
}

fn gatemend(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(binaries::path("gatemend")?)
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("gatemend {args:?} failed: {status}");
    }
    Ok(())
}

/// A port free on every address at once.
pub fn free_port(addrs: &[Ipv4Addr]) -> anyhow::Result<u16> {
    let first_addr = *addrs.first().context("no host")?;
    for _ in 0..20 {
        let first = TcpListener::bind((first_addr, 0))?;
        let port = first.local_addr()?.port();
        if addrs[1..]
            .iter()
            .all(|a| TcpListener::bind((*a, port)).is_ok())
        {
            return Ok(port);
        }
    }
    bail!("no port free on all of {addrs:?}")
}

/// The CA, the controller's certificate for every outer address, one certificate per host.
pub fn make_pki(dir: &Path, hosts: &[Host]) -> anyhow::Result<()> {
    let dir_s = dir.to_str().context("PKI path is not UTF-8")?;
    let sans: Vec<String> = hosts.iter().map(|h| h.outer_addr().to_string()).collect();
    let mut init = vec!["pki", "init", dir_s];
    for san in &sans {
        init.extend(["--san", san.as_str()]);
    }
    gatemend(&init)?;
    for host in hosts {
        gatemend(&["pki", "issue", "--host", &host.name(), dir_s])?;
    }
    Ok(())
}

/// A token for the operator `demo` (approver), its hash written to `path`.
fn make_token(path: &Path) -> anyhow::Result<String> {
    let out = Command::new(binaries::path("gatemend")?)
        .args(["tokens", "new", "--name", "demo", "--role", "approver"])
        .output()?;
    if !out.status.success() {
        bail!(
            "gatemend tokens new failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let token = lines.next().context("no token printed")?.trim().to_owned();
    let entry = lines.next().context("no tokens.yaml line printed")?;
    fs::write(path, format!("tokens:\n{entry}\n"))?;
    Ok(token)
}

/// The host's certificate and config, the deploy unit, and the agent started through it.
fn install_agent(host: &Host, pki: &Path, port: u16, extra_yaml: &str) -> anyhow::Result<()> {
    let name = host.name();
    host.sh(&format!("mkdir -p {PKI_INSIDE}"))?;
    host.write(
        &format!("{PKI_INSIDE}/ca.pem"),
        &fs::read_to_string(pki.join("ca.pem"))?,
    )?;
    for ext in ["pem", "key"] {
        let text = fs::read_to_string(pki.join("hosts").join(format!("{name}.{ext}")))?;
        host.write(&format!("{PKI_INSIDE}/{name}.{ext}"), &text)?;
    }
    host.sh(&format!("chmod 600 {PKI_INSIDE}/*.key"))?;
    let outer = host.outer_addr();
    host.write(
        CONFIG_INSIDE,
        &format!(
            "host: {name}
labels: {{ env: demo }}
allowed_actions: [restart_unit, start_unit, fix_socket_ownership, reload_nginx, escalate]
controller:
  endpoints: [\"https://{outer}:{port}\"]
  tls:
    ca: {PKI_INSIDE}/ca.pem
    cert: {PKI_INSIDE}/{name}.pem
    key: {PKI_INSIDE}/{name}.key
    server_name: \"{outer}\"
  heartbeat_secs: 2
  backoff_initial_ms: 200
  backoff_max_ms: 2000
outbox: {{ dir: /var/lib/gatemend/outbox }}
state_dir: /var/lib/gatemend/state
detect: {{ quiet_secs: 3, review_secs: 2 }}
{extra_yaml}"
        ),
    )?;
    host.write(
        &format!("/etc/systemd/system/{AGENT_UNIT}"),
        AGENT_UNIT_FILE,
    )?;
    host.sh(&format!(
        "systemctl daemon-reload && systemctl enable --now {AGENT_UNIT}"
    ))?;
    Ok(())
}
