//! The whole gatemend stack on a testbed fleet, as production runs it: a PKI from
//! `gatemend pki`, `gatemend-controller` on the outer machine listening on every host's outer
//! veth address with mutual TLS and the given policies, and `gatemend-agent` inside each host
//! under the host's own systemd through `deploy/systemd/gatemend-agent.service` (the hardened
//! unit operators install), with a certificate issued for that host.
//!
//! Several controllers can run side by side on one PostgreSQL database that the stack starts
//! (`StackSpec::controllers`, `StackSpec::postgres`): controller `cN` listens on its own port on
//! every outer address, and every agent lists every controller, host `i` starting with
//! controller `i mod N`, so the hosts spread over them and move on when one dies.
//!
//! The demo and the end-to-end scenarios (tests/tests/loop_*.rs) are built on it.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};

use crate::pg_cluster::PgCluster;
use crate::testbed::{Fleet, Host, HostSpec, binaries, http};

/// Where the agent binary is inside a host: the path the deploy unit runs.
pub const AGENT_INSIDE: &str = "/usr/local/bin/gatemend-agent";
/// The agent's unit inside a host.
pub const AGENT_UNIT: &str = "gatemend-agent.service";
const PKI_INSIDE: &str = "/etc/gatemend/pki";
const CONFIG_INSIDE: &str = "/etc/gatemend/agent.yaml";
/// The hardened unit file, as shipped.
const AGENT_UNIT_FILE: &str = include_str!("../../deploy/systemd/gatemend-agent.service");
/// The database the controllers share on the stack's PostgreSQL server.
const PG_DATABASE: &str = "gatemend";

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
    /// Controllers run side by side (`c1`..`cN`); more than one needs `postgres`.
    pub controllers: usize,
    /// Keep the audit, the approvals and the fleet state in a PostgreSQL server started for
    /// this stack (one database every controller shares) instead of a SQLite file.
    pub postgres: bool,
    /// The name host `i`'s agent runs under (its config's `host`, its certificate's DNS name)
    /// when the list has an `i`th entry; else the testbed host's own name (`gmN`). A cloud
    /// fleet's names are long (`ip-10-0-1-23.eu-west-1.compute.internal`), and every id the
    /// agent and the controller derive carries them.
    pub agent_host_names: Vec<String>,
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
            controllers: 1,
            postgres: false,
            agent_host_names: Vec::new(),
        }
    }
}

/// The running stack; everything stops when it is dropped.
#[derive(Debug)]
pub struct Stack {
    // Dropped first: the controllers go before the hosts, the database after both.
    controllers: Vec<Option<Controller>>,
    fleet: Fleet,
    postgres: Option<PgCluster>,
    spec: StackSpec,
    dir: PathBuf,
    /// The agents' port of each controller, on every outer address.
    ports: Vec<u16>,
    keep: bool,
    /// The review UI and API of each controller, on loopback.
    http: Vec<SocketAddr>,
    /// An approver's token for them.
    token: String,
}

impl Stack {
    /// Boots the fleet, makes the PKI, starts the controllers and every agent, and waits until
    /// every agent is connected to its first controller.
    pub fn start(spec: &StackSpec) -> anyhow::Result<Stack> {
        if spec.controllers == 0 {
            bail!("a stack needs at least one controller");
        }
        if spec.controllers > 1 && !spec.postgres {
            bail!("several controllers share one PostgreSQL database: set StackSpec::postgres");
        }
        if spec.agent_host_names.len() > spec.hosts {
            bail!(
                "{} agent host names for {} hosts",
                spec.agent_host_names.len(),
                spec.hosts
            );
        }
        // Started before the hosts boot: a missing PostgreSQL fails the test at once.
        let postgres = if spec.postgres {
            let pg = PgCluster::start(false)?;
            pg.create_db(PG_DATABASE)?;
            Some(pg)
        } else {
            None
        };
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
        let ports = free_ports(&outer, spec.controllers)?;
        let names: Vec<String> = (0..fleet.hosts().len())
            .map(|i| agent_name(spec, fleet.hosts(), i))
            .collect();
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != names.len() {
            bail!("two hosts' agents would run under one name: {names:?}");
        }
        make_pki_named(&dir.join("pki"), fleet.hosts(), &names)?;
        let http = free_ports(&[Ipv4Addr::LOCALHOST], spec.controllers)?
            .into_iter()
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .collect();
        let token = make_token(&dir.join("tokens.yaml"))?;
        let mut stack = Stack {
            controllers: (0..spec.controllers).map(|_| None).collect(),
            fleet,
            postgres,
            spec: spec.clone(),
            dir,
            ports,
            keep: false,
            http,
            token,
        };
        for i in 0..spec.controllers {
            stack.start_controller_n(i)?;
        }
        for (i, host) in stack.fleet.hosts().iter().enumerate() {
            // Host i lists the controllers from controller i on: the fleet spreads over them.
            let mut ports = stack.ports.clone();
            ports.rotate_left(i % spec.controllers);
            let name = stack.agent_name(i);
            install_agent(
                host,
                &name,
                &stack.dir.join("pki"),
                &ports,
                &spec.agent_yaml,
            )?;
        }
        for i in 0..stack.fleet.hosts().len() {
            let name = stack.agent_name(i);
            stack.controller_n(i % spec.controllers)?.wait_for(
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

    /// The name host `i`'s agent runs under: what the controller's log, the audit and the
    /// action ids call it ([`StackSpec::agent_host_names`], else the host's own name).
    pub fn agent_name(&self, i: usize) -> String {
        agent_name(&self.spec, self.fleet.hosts(), i)
    }

    /// The scratch directory: `pki/`, `controller.log`, `findings.jsonl`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The review UI and API of the first controller: `http://127.0.0.1:PORT`.
    pub fn ui_url(&self) -> String {
        self.ui_url_n(0)
    }

    /// The review UI and API of controller `i` (`c{i+1}`).
    pub fn ui_url_n(&self, i: usize) -> String {
        format!("http://{}", self.http[i])
    }

    /// Controller `i`'s `GET /healthz`: its status code and JSON body (`deciding`, `why`).
    pub fn health_n(&self, i: usize) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = http::get(self.http[i], "/healthz")
            .with_context(|| format!("GET /healthz of controller {}", controller_id(i)))?;
        let body = serde_json::from_str(&response.body).with_context(|| {
            format!(
                "/healthz of controller {} answered {} with a body that is not JSON: {}",
                controller_id(i),
                response.status,
                response.body
            )
        })?;
        Ok((response.status, body))
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

    /// The controllers' database: the audit log, the approvals, the fleet state (SQLite in the
    /// scratch directory, or the stack's PostgreSQL).
    pub fn audit_url(&self) -> String {
        match &self.postgres {
            Some(pg) => pg.url(PG_DATABASE),
            None => format!("sqlite://{}", self.dir.join("audit.db").display()),
        }
    }

    /// The PostgreSQL server, when the stack runs on one.
    pub fn postgres(&self) -> Option<&PgCluster> {
        self.postgres.as_ref()
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

    /// The first controller.
    pub fn controller(&self) -> anyhow::Result<&Controller> {
        self.controller_n(0)
    }

    /// Controller `i` (`c{i+1}`), while it runs.
    pub fn controller_n(&self, i: usize) -> anyhow::Result<&Controller> {
        self.controllers
            .get(i)
            .and_then(Option::as_ref)
            .with_context(|| format!("controller {} is not running", controller_id(i)))
    }

    /// How many controllers the stack runs side by side (running or killed).
    pub fn controller_count(&self) -> usize {
        self.controllers.len()
    }

    /// Starts the first controller (again, after [`Stack::kill_controller`]).
    pub fn start_controller(&mut self) -> anyhow::Result<()> {
        self.start_controller_n(0)
    }

    /// Starts controller `i` (again, after [`Stack::kill_controller_n`]); its log
    /// ([`Stack::controller_log`]) is appended to.
    pub fn start_controller_n(&mut self, i: usize) -> anyhow::Result<()> {
        let port = *self.ports.get(i).with_context(|| {
            format!(
                "the stack runs {} controllers, not {}",
                self.ports.len(),
                i + 1
            )
        })?;
        let listen: Vec<SocketAddr> = self
            .fleet
            .hosts()
            .iter()
            .map(|h| SocketAddr::from((h.outer_addr(), port)))
            .collect();
        let log = self.controller_log(i);
        let findings = if i == 0 {
            "findings.jsonl".to_owned()
        } else {
            format!("findings-{}.jsonl", controller_id(i))
        };
        let mut command = Command::new(binaries::path("gatemend-controller")?);
        for addr in &listen {
            command.arg("--listen").arg(addr.to_string());
        }
        if self.postgres.is_some() {
            command.arg("--controller-id").arg(controller_id(i));
        }
        // No --state-file: with --db the fleet state lives in the database.
        command
            .arg("--tls-dir")
            .arg(self.dir.join("pki"))
            .arg("--findings-log")
            .arg(self.dir.join(findings))
            .arg("--db")
            .arg(self.audit_url())
            .arg("--http-listen")
            .arg(self.http[i].to_string())
            .arg("--tokens")
            .arg(self.dir.join("tokens.yaml"))
            .arg("--policies")
            .arg(&self.spec.policies)
            .args(["--heartbeat-timeout", "10"])
            .args(&self.spec.controller_args);
        let controller = Controller::spawn(&mut command, log, &listen)
            .with_context(|| format!("controller {}", controller_id(i)))?;
        self.controllers[i] = Some(controller);
        Ok(())
    }

    /// Controller `i`'s log, every run of it, also after it was killed: `controller.log` for
    /// the first, `controller-cN.log` for the others.
    pub fn controller_log(&self, i: usize) -> PathBuf {
        if i == 0 {
            self.dir.join("controller.log")
        } else {
            self.dir
                .join(format!("controller-{}.log", controller_id(i)))
        }
    }

    /// SIGKILLs the first controller: no shutdown path runs.
    pub fn kill_controller(&mut self) {
        self.kill_controller_n(0);
    }

    /// SIGKILLs controller `i`: no shutdown path runs.
    pub fn kill_controller_n(&mut self, i: usize) {
        if let Some(slot) = self.controllers.get_mut(i) {
            *slot = None;
        }
    }
}

fn agent_name(spec: &StackSpec, hosts: &[Host], i: usize) -> String {
    spec.agent_host_names
        .get(i)
        .cloned()
        .or_else(|| hosts.get(i).map(Host::name))
        .unwrap_or_default()
}

/// The `--controller-id` of controller `i`: `c1`, `c2`, ...
pub fn controller_id(i: usize) -> String {
    format!("c{}", i + 1)
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.controllers.clear();
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
    /// Starts `command` (a `gatemend-controller` command line) with its log appended to `log`,
    /// and waits until it listens on every address of `listen`.
    pub fn spawn(
        command: &mut Command,
        log: PathBuf,
        listen: &[SocketAddr],
    ) -> anyhow::Result<Controller> {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let already = Controller::read(&log).lines().count();
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting gatemend-controller")?;
        let controller = Controller {
            child,
            log,
            from_line: already,
        };
        for addr in listen {
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
        Ok(controller)
    }

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

/// `count` distinct ports, each free on every address at once.
fn free_ports(addrs: &[Ipv4Addr], count: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count * 20 {
        if ports.len() == count {
            break;
        }
        let port = free_port(addrs)?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    if ports.len() < count {
        bail!("no {count} distinct ports free on all of {addrs:?}");
    }
    Ok(ports)
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
    let names: Vec<String> = hosts.iter().map(Host::name).collect();
    make_pki_named(dir, hosts, &names)
}

/// [`make_pki`] with the hosts' agents under `names` (one per host, in order).
pub fn make_pki_named(dir: &Path, hosts: &[Host], names: &[String]) -> anyhow::Result<()> {
    let dir_s = dir.to_str().context("PKI path is not UTF-8")?;
    let sans: Vec<String> = hosts.iter().map(|h| h.outer_addr().to_string()).collect();
    let mut init = vec!["pki", "init", dir_s];
    for san in &sans {
        init.extend(["--san", san.as_str()]);
    }
    gatemend(&init)?;
    for name in names {
        gatemend(&["pki", "issue", "--host", name, dir_s])?;
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

/// The host's certificate and config for an agent named `name` (the controllers' `ports`,
/// tried in that order), the deploy unit, and the agent started through it.
fn install_agent(
    host: &Host,
    name: &str,
    pki: &Path,
    ports: &[u16],
    extra_yaml: &str,
) -> anyhow::Result<()> {
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
    let endpoints = ports
        .iter()
        .map(|port| format!("\"https://{outer}:{port}\""))
        .collect::<Vec<_>>()
        .join(", ");
    host.write(
        CONFIG_INSIDE,
        &format!(
            "host: {name}
labels: {{ env: demo }}
allowed_actions: [restart_unit, start_unit, fix_socket_ownership, reload_nginx, escalate]
controller:
  endpoints: [{endpoints}]
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
