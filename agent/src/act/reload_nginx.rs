//! reload_nginx: `nginx -t` (its whole output kept), and only when it passes,
//! `ReloadUnit(nginx.service, "replace")` over D-Bus — or, when nginx is not run by systemd,
//! SIGHUP to the master named by its pid file, once `/proc/PID/exe` shows that process is
//! nginx (a pid file can outlive its nginx and the pid be reused: SIGHUP ends most programs).
//!
//! Verification: the master is alive with the same pid, its workers are all new (children of
//! the master, read from /proc), no `[emerg]` appeared in the error log since the reload, and
//! nginx answers an HTTP request on its local address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatemend_proto::ActionStatus;
use gatemend_proto::v1::ActionRequest;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ActError, Facts, Recorder, Refusal, Settings};
use crate::probe::systemd::{JobCall, Systemd};
use gatemend_proto::error_chain;

/// How the reload is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum ReloadVia {
    /// `ReloadUnit(unit, "replace")` over D-Bus.
    Systemd { unit: String },
    /// SIGHUP to the master whose pid is in `pid_file`.
    Signal,
}

/// The reload of this host's nginx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadPlan {
    /// The config test that must pass first: `[nginx, "-t"]`.
    pub test: Vec<String>,
    pub via: ReloadVia,
    pub pid_file: PathBuf,
    pub error_log: PathBuf,
    pub check_addr: SocketAddr,
    pub verify_timeout_ms: u64,
}

impl ReloadPlan {
    /// The nginx binary the config test runs: what the master must be an instance of.
    fn binary(&self) -> &Path {
        self.test.first().map_or(Path::new(""), Path::new)
    }

    pub(super) fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "run `{}`, keep its output; stop here, reloading nothing, unless it exits 0",
                self.test.join(" ")
            ),
            match &self.via {
                ReloadVia::Systemd { unit } => format!(
                    "D-Bus org.freedesktop.systemd1.Manager.Subscribe(), ReloadUnit(\"{unit}\", \"replace\"), wait for its JobRemoved"
                ),
                ReloadVia::Signal => format!(
                    "SIGHUP to the master whose pid is in {}, once /proc shows it runs {}",
                    self.pid_file.display(),
                    self.binary().display()
                ),
            },
            format!(
                "verify within {} ms: the master in {} is alive with the same pid; its workers are all new; no new [emerg] in {}; http://{}/ answers",
                self.verify_timeout_ms,
                self.pid_file.display(),
                self.error_log.display(),
                self.check_addr
            ),
        ]
    }
}

/// The pure plan: D-Bus when nginx's unit is loaded and running, SIGHUP otherwise.
pub fn plan(
    request: &ActionRequest,
    settings: &Settings,
    facts: &Facts,
) -> Result<ReloadPlan, Refusal> {
    let actions = &settings.actions;
    let by_systemd = facts.nginx_unit.as_ref().is_some_and(|state| {
        state.load_state == "loaded"
            && matches!(state.active_state.as_str(), "active" | "reloading")
    });
    Ok(ReloadPlan {
        test: vec![actions.nginx_binary.display().to_string(), "-t".to_owned()],
        via: if by_systemd {
            ReloadVia::Systemd {
                unit: actions.nginx_unit.clone(),
            }
        } else {
            ReloadVia::Signal
        },
        pid_file: actions.nginx_pid_file.clone(),
        error_log: actions.nginx_error_log.clone(),
        check_addr: actions.nginx_check_addr,
        verify_timeout_ms: settings.verify_timeout_ms(request),
    })
}

/// The parent pid in the text of `/proc/PID/stat`. The command name (in parentheses) may hold
/// anything, spaces and `)` included, so the fields are read after its last `)`.
pub fn stat_ppid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The pids whose parent is `parent`, sorted, read from /proc. Processes that vanish while
/// being read are skipped.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|text| stat_ppid(&text))
                == Some(parent)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether a process is nginx, from what /proc says of it: its executable (`/proc/PID/exe`)
/// is one of `binaries` (the configured nginx binary and its canonical path; an upgraded binary
/// reads `PATH (deleted)`), or, only when the executable cannot be read, its command name
/// (`/proc/PID/comm`) is the binary's file name. The hardened unit cannot always read the exe
/// link of a root master (reading it needs the caller to hold every capability the target
/// holds, or CAP_SYS_PTRACE), while `comm` is readable by anyone: it still tells a reused pid
/// of another program from nginx. Pure; `Err` says why not.
pub fn is_nginx(
    exe: Option<&Path>,
    comm: Option<&str>,
    binaries: &[PathBuf],
) -> Result<(), String> {
    if let Some(exe) = exe {
        let text = exe.to_string_lossy();
        let text = text.strip_suffix(" (deleted)").unwrap_or(&text);
        return if binaries.iter().any(|b| Path::new(text) == b) {
            Ok(())
        } else {
            Err(format!(
                "its executable is {}, not {}",
                exe.display(),
                binaries
                    .first()
                    .map(|b| b.display().to_string())
                    .unwrap_or_default()
            ))
        };
    }
    let name = binaries
        .first()
        .and_then(|b| b.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match comm.map(str::trim) {
        Some(comm) if !name.is_empty() && comm == name => Ok(()),
        Some(comm) => Err(format!(
            "its executable cannot be read and its name is `{comm}`, not `{name}`"
        )),
        None => Err("it has no /proc entry".to_owned()),
    }
}

/// Reads `/proc/PID/exe` and `/proc/PID/comm` and asks [`is_nginx`].
fn check_nginx_process(pid: u32, pid_file: &Path, binary: &Path) -> Result<(), ActError> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let mut binaries = vec![binary.to_owned()];
    binaries.extend(std::fs::canonicalize(binary).ok());
    is_nginx(exe.as_deref(), comm.as_deref(), &binaries).map_err(|why| ActError::NotNginx {
        pid,
        pid_file: pid_file.to_owned(),
        why,
    })
}

pub(super) fn read_pid(pid_file: &Path) -> Result<u32, ActError> {
    let text = std::fs::read_to_string(pid_file).map_err(|source| ActError::Read {
        path: pid_file.to_owned(),
        source,
    })?;
    text.trim().parse().map_err(|_| ActError::Read {
        path: pid_file.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("`{}` is not a pid", text.trim()),
        ),
    })
}

pub(super) fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

pub(super) fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What the error log gained since `from` (all of it when it was rotated and is shorter).
pub(super) fn log_since(path: &Path, from: u64) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let from = usize::try_from(from).unwrap_or(usize::MAX);
    let new = if from <= bytes.len() {
        &bytes[from..]
    } else {
        &bytes[..]
    };
    String::from_utf8_lossy(new).into_owned()
}

/// nginx -t, then the reload, then verification.
pub async fn apply(
    plan: &ReloadPlan,
    _settings: &Settings,
    rec: &Recorder,
) -> (ActionStatus, String) {
    let started = Instant::now();
    let master = match read_pid(&plan.pid_file) {
        Ok(pid) if alive(pid) => pid,
        Ok(pid) => {
            let why = format!(
                "nginx is not running: the master {pid} from {} is gone",
                plan.pid_file.display()
            );
            rec.record("precheck", started, false, why.clone());
            return (ActionStatus::Failed, why);
        }
        Err(e) => {
            let why = format!("nginx is not running: {}", error_chain(&e));
            rec.record("precheck", started, false, why.clone());
            return (ActionStatus::Failed, why);
        }
    };
    if plan.via == ReloadVia::Signal {
        // Nothing is signalled unless the pid file's process is nginx.
        if let Err(e) = check_nginx_process(master, &plan.pid_file, plan.binary()) {
            let why = format!("no SIGHUP sent: {}", error_chain(&e));
            rec.record("precheck", started, false, why.clone());
            return (ActionStatus::Refused, why);
        }
    }
    let old_workers = children(master);
    rec.begin("precheck");
    rec.note(format!("$ {}", plan.test.join(" ")));
    let (ok, output) = match config_test(&plan.test).await {
        Ok(result) => result,
        Err(e) => {
            let why = error_chain(&e);
            rec.record("precheck", started, false, why.clone());
            return (ActionStatus::Failed, why);
        }
    };
    let output = format!("{output}\nmaster {master}, workers {old_workers:?}");
    rec.record("precheck", started, ok, output.clone());
    if !ok {
        // The [emerg] line names the file, line and directive; the last line only says "failed".
        let why = output
            .lines()
            .find(|l| l.contains("[emerg]"))
            .or_else(|| output.lines().find(|l| l.contains("failed")))
            .unwrap_or("")
            .trim()
            .to_owned();
        return (
            ActionStatus::Refused,
            format!(
                "`{}` failed; nothing was reloaded: {why}",
                plan.test.join(" ")
            ),
        );
    }
    let log_from = log_len(&plan.error_log);
    let started = Instant::now();
    rec.begin("do");
    match reload(plan, master).await {
        Ok(text) => rec.record("do", started, true, text),
        Err(e) => {
            let why = error_chain(&e);
            rec.record("do", started, false, why.clone());
            return (ActionStatus::Failed, format!("the reload failed: {why}"));
        }
    }
    verify(plan, master, &old_workers, log_from, rec).await
}

/// Runs the config test (`nginx -t`, edit_config's `php-fpm -t` too); `(passed, command + its
/// whole output + exit status)`. Killed if the action's deadline drops it.
pub(super) async fn config_test(test: &[String]) -> Result<(bool, String), ActError> {
    let command_line = test.join(" ");
    let Some((program, args)) = test.split_first() else {
        return Err(ActError::Spawn {
            command: command_line,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command"),
        });
    };
    let mut command = tokio::process::Command::new(program);
    command.args(args).kill_on_drop(true);
    let out = command.output().await.map_err(|source| ActError::Spawn {
        command: command_line.clone(),
        source,
    })?;
    let mut text = format!("$ {command_line}\n");
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text.push_str(&out.status.to_string());
    Ok((out.status.success(), text))
}

async fn reload(plan: &ReloadPlan, master: u32) -> Result<String, ActError> {
    match &plan.via {
        ReloadVia::Systemd { unit } => {
            let systemd = Systemd::system().await?;
            let mut lines = Vec::new();
            let run = systemd
                .run_job(unit, JobCall::Reload, &mut |line| lines.push(line))
                .await?;
            let text = lines.join("\n");
            if run.done() {
                Ok(text)
            } else {
                Err(ActError::Dbus {
                    call: format!("ReloadUnit({unit}, replace)"),
                    source: zbus::Error::Failure(format!(
                        "{text}\nthe reload job ended with {}",
                        run.result
                    )),
                })
            }
        }
        ReloadVia::Signal => {
            // Again at the last moment: `nginx -t` took a while, and the master may be gone.
            check_nginx_process(master, &plan.pid_file, plan.binary())?;
            let pid = i32::try_from(master).map_err(|_| ActError::Read {
                path: plan.pid_file.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "pid out of range"),
            })?;
            kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|source| ActError::Sys {
                call: "kill(SIGHUP)",
                path: plan.pid_file.clone(),
                source,
            })?;
            Ok(format!(
                "SIGHUP -> master {master} (from {})",
                plan.pid_file.display()
            ))
        }
    }
}

/// Polls until the master is the same and alive, every worker is new and nginx answers, or
/// the verify timeout passes; a new `[emerg]` fails at once.
async fn verify(
    plan: &ReloadPlan,
    master: u32,
    old_workers: &[u32],
    log_from: u64,
    rec: &Recorder,
) -> (ActionStatus, String) {
    let started = Instant::now();
    rec.begin("verify");
    let until = started + Duration::from_millis(plan.verify_timeout_ms);
    loop {
        let mut out = Vec::new();
        let same_master = read_pid(&plan.pid_file).ok() == Some(master) && alive(master);
        out.push(format!(
            "master {master} alive with the same pid: {same_master}"
        ));
        let workers = children(master);
        let all_new = !workers.is_empty() && workers.iter().all(|w| !old_workers.contains(w));
        out.push(format!(
            "workers {old_workers:?} -> {workers:?}, all new: {all_new}"
        ));
        let new_log = log_since(&plan.error_log, log_from);
        let emerg: Vec<&str> = new_log.lines().filter(|l| l.contains("[emerg]")).collect();
        if !emerg.is_empty() {
            out.push(format!(
                "new [emerg] in {}:\n{}",
                plan.error_log.display(),
                emerg.join("\n")
            ));
            rec.record("verify", started, false, out.join("\n"));
            return (
                ActionStatus::Failed,
                format!("nginx logged [emerg] after the reload: {}", emerg[0].trim()),
            );
        }
        out.push(format!("no new [emerg] in {}", plan.error_log.display()));
        let answer = if same_master && all_new {
            http_answer(plan.check_addr).await
        } else {
            Err("not asked yet".to_owned())
        };
        match &answer {
            Ok(status) => out.push(format!("http://{}/ answered: {status}", plan.check_addr)),
            Err(e) => out.push(format!("http://{}/: {e}", plan.check_addr)),
        }
        if same_master && all_new && answer.is_ok() {
            rec.record("verify", started, true, out.join("\n"));
            return (
                ActionStatus::Succeeded,
                format!("nginx reloaded: master {master}, new workers {workers:?}"),
            );
        }
        if Instant::now() >= until || !alive(master) {
            rec.record("verify", started, false, out.join("\n"));
            return (
                ActionStatus::Failed,
                format!(
                    "nginx did not come back as reloaded within {} ms",
                    plan.verify_timeout_ms
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status line nginx answers a plain `GET /` with (any status: nginx answered).
async fn http_answer(addr: SocketAddr) -> Result<String, String> {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = vec![0_u8; 256];
        let mut got = 0;
        while got < head.len() {
            let n = stream.read(&mut head[got..]).await?;
            if n == 0 || head[..got + n].contains(&b'\n') {
                got += n;
                break;
            }
            got += n;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..got]).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(2), ask).await {
        Ok(Ok(head)) if head.starts_with("HTTP/") => {
            Ok(head.lines().next().unwrap_or_default().trim().to_owned())
        }
        Ok(Ok(head)) => Err(format!("not an HTTP answer: {:?}", head)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_the_last_parenthesis() {
        assert_eq!(stat_ppid("123 (nginx) S 1 123 123 0"), Some(1));
        assert_eq!(stat_ppid("124 (nginx: worker) S 123 123"), Some(123));
        assert_eq!(stat_ppid("125 (a) b) (c) R 77 1"), Some(77));
        for junk in ["", ")", "1 (x)", "1 (x) S", "1 (x) S notapid", "\u{0}"] {
            assert_eq!(stat_ppid(junk), None, "{junk:?}");
        }
    }
}
