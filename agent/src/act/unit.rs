//! What restart_unit and start_unit share: the unit plan, the job over D-Bus (subscribe to
//! JobRemoved before calling, wait for that job's result), the one ResetFailedUnit when the
//! start limit was hit, and verification (ActiveState=active, the upstream accepts).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gatemend_proto::ActionStatus;
use gatemend_proto::v1::ActionRequest;
use serde::Serialize;

use super::{ActError, Facts, Recorder, Refusal, Settings, refuse};
use crate::probe::systemd::{JobCall, Systemd, UnitState};
use gatemend_proto::error_chain;

/// Which manager call queues the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Restart,
    Start,
}

impl Verb {
    fn job_call(self) -> JobCall {
        match self {
            Verb::Restart => JobCall::Restart,
            Verb::Start => JobCall::Start,
        }
    }

    fn call(self) -> &'static str {
        self.job_call().method()
    }
}

/// Where a unit serves, to prove it is back: what nginx connects to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Upstream {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
            Upstream::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// A php-fpm `listen =` value as something to connect to: a socket path, `port`,
/// `addr:port`, `[v6]:port`. A wildcard address is reached on loopback. `None` for what is
/// not one of these (a host name other than localhost is not resolved).
pub fn parse_listen(listen: &str) -> Option<Upstream> {
    let listen = listen.trim();
    if listen.starts_with('/') {
        return Some(Upstream::Unix(PathBuf::from(listen)));
    }
    if let Ok(port) = listen.parse::<u16>() {
        return Some(Upstream::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    }
    let addr = match listen.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let (host, port) = listen.rsplit_once(':')?;
            let port = port.parse::<u16>().ok()?;
            match host {
                "localhost" | "*" => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                _ => return None,
            }
        }
    };
    Some(Upstream::Tcp(match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        ip if ip.is_unspecified() => SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    }))
}

/// restart_unit / start_unit on one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitPlan {
    pub unit: String,
    /// What must accept a connection for the unit to count as back.
    pub upstreams: Vec<Upstream>,
    pub verify_timeout_ms: u64,
    /// The unit's MainPID before, to report whether it changed.
    pub main_pid_before: Option<u32>,
}

impl UnitPlan {
    pub(super) fn lines(&self, verb: Verb) -> Vec<String> {
        let unit = &self.unit;
        let mut lines = vec![
            "D-Bus org.freedesktop.systemd1.Manager.Subscribe(), listen for JobRemoved".to_owned(),
            format!(
                "D-Bus org.freedesktop.systemd1.Manager.{}(\"{unit}\", \"replace\"), wait for its JobRemoved",
                verb.call()
            ),
            format!(
                "only if the start limit was hit (the job failed without running the unit): ResetFailedUnit(\"{unit}\"), then StartUnit(\"{unit}\", \"replace\"), once"
            ),
            format!(
                "verify within {} ms: ActiveState=active",
                self.verify_timeout_ms
            ),
        ];
        if self.upstreams.is_empty() {
            lines
                .push("verify: no socket or port known for this unit; none is connected to".into());
        }
        for upstream in &self.upstreams {
            lines.push(format!("verify: {upstream} accepts a connection"));
        }
        lines
    }
}

/// A unit name systemd would accept, and nothing a glob or a log could be fooled by.
pub(super) fn check_unit_name(unit: &str) -> Result<(), Refusal> {
    let ok = !unit.is_empty()
        && unit.len() <= 255
        && unit.contains('.')
        && !unit.starts_with('.')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c));
    if ok {
        Ok(())
    } else if unit.is_empty() {
        refuse("the request names no unit")
    } else {
        refuse(format!("`{unit}` is not a unit name"))
    }
}

/// The pure part of restart_unit and start_unit: the unit exists and is not masked; where it
/// serves comes from the request's socket_path, else from the php-fpm pools it runs, else (for
/// nginx's own unit) from the address nginx must answer on.
pub(super) fn plan(
    request: &ActionRequest,
    settings: &Settings,
    facts: &Facts,
) -> Result<UnitPlan, Refusal> {
    let unit = &request.unit;
    let Some(state) = &facts.unit else {
        return refuse(format!("the state of {unit} was not read"));
    };
    match state.load_state.as_str() {
        "loaded" => {}
        "masked" => {
            return refuse(format!(
                "{unit} is masked; an operator masked it on purpose"
            ));
        }
        "not-found" => return refuse(format!("{unit} does not exist on this host")),
        other => return refuse(format!("{unit} is not loaded (LoadState={other})")),
    }
    let upstreams = if !request.socket_path.is_empty() {
        vec![Upstream::Unix(PathBuf::from(&request.socket_path))]
    } else if *unit == settings.actions.nginx_unit {
        vec![Upstream::Tcp(settings.actions.nginx_check_addr)]
    } else {
        let mut found: Vec<Upstream> = facts
            .pools
            .iter()
            .filter(|p| p.unit().as_deref() == Some(unit.as_str()))
            .filter_map(|p| p.listen.as_deref().and_then(parse_listen))
            .collect();
        found.dedup();
        found
    };
    Ok(UnitPlan {
        unit: unit.clone(),
        upstreams,
        verify_timeout_ms: settings.verify_timeout_ms(request),
        main_pid_before: state.main_pid,
    })
}

/// One line of a unit's state, as the steps show it.
pub(super) fn describe_state(state: &UnitState) -> String {
    let mut text = format!(
        "{}: LoadState={} ActiveState={} SubState={}",
        state.name, state.load_state, state.active_state, state.sub_state
    );
    if let Some(result) = &state.result {
        text.push_str(&format!(" Result={result}"));
    }
    if let Some(pid) = state.main_pid {
        text.push_str(&format!(" MainPID={pid}"));
    }
    if let Some(n) = state.n_restarts {
        text.push_str(&format!(" NRestarts={n}"));
    }
    text
}

/// Runs the job and verifies. Returns the status and the one-line message.
pub(super) async fn apply(plan: &UnitPlan, verb: Verb, rec: &Recorder) -> (ActionStatus, String) {
    let unit = &plan.unit;
    let started = Instant::now();
    let systemd = match Systemd::system().await {
        Ok(systemd) => systemd,
        Err(e) => {
            let text = error_chain(&e);
            rec.record("do", started, false, text.clone());
            return (ActionStatus::Failed, text);
        }
    };
    rec.begin("do");
    let mut noted = Log {
        lines: Vec::new(),
        rec,
    };
    let done = run_job(&systemd, unit, verb, &mut noted).await;
    let mut log = noted.lines;
    let state = systemd.unit_state(unit).await;
    match done {
        Ok(true) => rec.record("do", started, true, log.join("\n")),
        Ok(false) => {
            let result = state
                .as_ref()
                .ok()
                .and_then(|s| s.result.clone())
                .unwrap_or_else(|| "unknown".into());
            if let Ok(state) = &state {
                log.push(describe_state(state));
            }
            log.push(format!("journalctl -u {unit} -n 20 -o cat:"));
            log.push(journal_tail(unit).await);
            rec.record("do", started, false, log.join("\n"));
            return (
                ActionStatus::Failed,
                format!(
                    "{unit} did not start (Result={result}); its journal is in the step output"
                ),
            );
        }
        Err(e) => {
            log.push(error_chain(&e));
            rec.record("do", started, false, log.join("\n"));
            return (
                ActionStatus::Failed,
                format!("{} failed: {}", verb.call(), error_chain(&e)),
            );
        }
    }
    verify(plan, &systemd, rec).await
}

/// The do step's lines, noted in the recorder as they happen so a deadline keeps them.
struct Log<'a> {
    lines: Vec<String>,
    rec: &'a Recorder,
}

impl Log<'_> {
    fn push(&mut self, line: String) {
        self.rec.note(line.clone());
        self.lines.push(line);
    }
}

/// Queues the job and waits for its JobRemoved; when the start limit was hit,
/// resets it and starts it, once. `Ok(true)` when the (last) job's result is `done`.
async fn run_job(
    systemd: &Systemd,
    unit: &str,
    verb: Verb,
    log: &mut Log<'_>,
) -> Result<bool, ActError> {
    let mut note = |line: String| log.push(line);
    let mut jobs = systemd.watch_jobs(&mut note).await?;
    let invocation = systemd.invocation_id(unit).await?;
    let run = jobs.run(unit, verb.job_call(), &mut note).await?;
    if run.done() {
        return Ok(true);
    }
    let state = systemd.unit_state(unit).await?;
    // systemd sets Result=start-limit-hit only when the unit's last result was a success; after
    // a failure it keeps the old Result. A failed start job that left the InvocationID as it
    // was never ran the unit: systemd refused it up front, which is the start limit.
    let limit_hit = state.result.as_deref() == Some("start-limit-hit")
        || (run.result == "failed" && systemd.invocation_id(unit).await? == invocation);
    if !limit_hit {
        return Ok(false);
    }
    // Clear it and start once. No loop: a unit that fails again is reported failed.
    jobs.reset_failed(unit).await?;
    note(format!(
        "start-limit-hit (the job failed without running the unit): ResetFailedUnit(\"{unit}\") -> ok"
    ));
    Ok(jobs.run(unit, JobCall::Start, &mut note).await?.done())
}

/// ActiveState=active and every upstream accepts, within the verify timeout.
async fn verify(plan: &UnitPlan, systemd: &Systemd, rec: &Recorder) -> (ActionStatus, String) {
    let unit = &plan.unit;
    let started = Instant::now();
    rec.begin("verify");
    let until = started + Duration::from_millis(plan.verify_timeout_ms);
    let mut out = Vec::new();
    let state = loop {
        match systemd.unit_state(unit).await {
            Ok(state) if state.active_state == "active" => break Some(state),
            Ok(state) if Instant::now() >= until || state.active_state == "failed" => {
                out.push(describe_state(&state));
                break None;
            }
            Err(e) if Instant::now() >= until => {
                out.push(error_chain(&e));
                break None;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let Some(state) = state else {
        out.push(format!("{unit} is not active"));
        rec.record("verify", started, false, out.join("\n"));
        return (
            ActionStatus::Failed,
            format!("{unit} is not active after the job"),
        );
    };
    out.push(describe_state(&state));
    if let (Some(before), Some(now)) = (plan.main_pid_before, state.main_pid) {
        out.push(format!("MainPID {before} -> {now}"));
    }
    for upstream in &plan.upstreams {
        match connect_until(upstream, until).await {
            Ok(()) => out.push(format!("connect {upstream}: accepted")),
            Err(e) => {
                out.push(format!("connect {upstream}: {e}"));
                rec.record("verify", started, false, out.join("\n"));
                return (
                    ActionStatus::Failed,
                    format!("{unit} is active but {upstream} does not accept a connection: {e}"),
                );
            }
        }
    }
    rec.record("verify", started, true, out.join("\n"));
    let pid = state
        .main_pid
        .map(|p| format!(", MainPID {p}"))
        .unwrap_or_default();
    let accepting = if plan.upstreams.is_empty() {
        String::new()
    } else {
        format!(
            ", {} accepts",
            plan.upstreams
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    (
        ActionStatus::Succeeded,
        format!("{unit} is active{pid}{accepting}"),
    )
}

/// Connects to `upstream` until it accepts or `until` passes; returns the last error.
pub(super) async fn connect_until(upstream: &Upstream, until: Instant) -> std::io::Result<()> {
    loop {
        let left = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let attempt = tokio::time::timeout(left, async {
            match upstream {
                Upstream::Unix(path) => tokio::net::UnixStream::connect(path).await.map(drop),
                Upstream::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.map(drop),
            }
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The last 20 journal lines of `unit`, for a failure report. Reading the journal is not a
/// control path (systemd is only ever driven over D-Bus); a journal that cannot be read is
/// said so in the text.
async fn journal_tail(unit: &str) -> String {
    let mut command = tokio::process::Command::new("journalctl");
    command
        .args(["-u", unit, "-n", "20", "-o", "cat", "--no-pager"])
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(5), command.output()).await {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            text
        }
        Ok(Err(e)) => format!("(cannot run journalctl: {e})"),
        Err(_) => "(journalctl did not answer within 5 s)".to_owned(),
    }
}
