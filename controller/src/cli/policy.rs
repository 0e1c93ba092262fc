//! `gatemend policy`: check a policy directory, explain a decision.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;

use crate::decide::{
    self, AttemptsVerdict, BusyVerdict, Consideration, CooldownVerdict, Finding, FleetState,
    FleetVerdict, Options, Outcome, StormVerdict, Time, UnixMs,
};
use crate::policy::{self, PolicySet, format_duration};

/// `gatemend policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate every policy file in DIR; print every problem as file:line:col: path: message.
    Check {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Show how the policies decide on one finding: which matched, each guard, the decision.
    Explain {
        /// The policy directory.
        #[arg(long)]
        policies: PathBuf,
        /// The finding, as JSON (what `gatemend-agent diagnose --json` prints).
        finding: PathBuf,
        /// The fleet state, as JSON (hosts, in-flight actions, storms); default: only the
        /// finding's host, online, with nothing in flight.
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// The decision time: RFC 3339 (2026-11-21T01:00:00Z) or milliseconds since the Unix
        /// epoch; default: now.
        #[arg(long)]
        now: Option<String>,
        /// Decide as a controller started with --dry-run.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Why `gatemend policy` could not do its job (invalid policies are a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum PolicyCliError {
    /// The policies do not load; each problem has been printed.
    #[error("{count} problem(s) in the policies of {dir}")]
    Invalid {
        /// The directory.
        dir: PathBuf,
        /// How many problems.
        count: usize,
    },
    /// A JSON input file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A JSON input file does not parse.
    #[error("{path} is not a valid {what}")]
    Json {
        /// The file.
        path: PathBuf,
        /// "finding" or "fleet state".
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// `--now` does not parse.
    #[error("--now {0}: expected RFC 3339 (2026-11-21T01:00:00Z) or milliseconds since the epoch")]
    Now(String),
}

/// Runs the subcommand. `Ok(false)`: the policies are invalid (problems printed to stderr).
pub fn run(command: PolicyCommand) -> Result<bool, PolicyCliError> {
    match command {
        PolicyCommand::Check { dir } => match policy::load(&dir) {
            Ok(set) => {
                println!("{}", summary(&dir, &set));
                Ok(true)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!(
                    "{} problem(s) in {}: no policy loaded",
                    errors.len(),
                    dir.display()
                );
                Ok(false)
            }
        },
        PolicyCommand::Explain {
            policies,
            finding,
            fleet,
            now,
            dry_run,
        } => {
            let set = match policy::load(&policies) {
                Ok(set) => set,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    return Err(PolicyCliError::Invalid {
                        dir: policies,
                        count: errors.len(),
                    });
                }
            };
            let finding: Finding = read_json(&finding, "finding")?;
            let mut state: FleetState = match &fleet {
                Some(path) => read_json(path, "fleet state")?,
                None => FleetState::new(),
            };
            let now = match now {
                Some(text) => parse_now(&text)?,
                None => system_now(),
            };
            state.record_finding(&finding, now, "");
            print!(
                "{}",
                explain_text(&set, &state, &finding, now, Options { dry_run })
            );
            Ok(true)
        }
    }
}

fn summary(dir: &Path, set: &PolicySet) -> String {
    format!(
        "ok: {} policies in {} file(s) in {}",
        set.policies().len(),
        set.files().len(),
        dir.display()
    )
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, PolicyCliError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyCliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| PolicyCliError::Json {
        path: path.to_path_buf(),
        what,
        source,
    })
}

/// `--now`: milliseconds since the epoch, or RFC 3339.
pub fn parse_now(text: &str) -> Result<UnixMs, PolicyCliError> {
    if let Ok(ms) = text.parse::<UnixMs>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| UnixMs::try_from(d.as_millis()).ok())
        .ok_or_else(|| PolicyCliError::Now(text.to_owned()))
}

fn system_now() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| UnixMs::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// The text `gatemend policy explain` prints.
pub fn explain_text(
    set: &PolicySet,
    state: &FleetState,
    f: &Finding,
    now: UnixMs,
    opts: Options,
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        out,
        "finding {}: {} (root cause {}) on {}{}, {} line(s) from {} to {}",
        f.id,
        f.cause,
        f.root_cause,
        f.host,
        if f.unit.is_empty() {
            String::new()
        } else {
            format!(", unit {}", f.unit)
        },
        f.count,
        Time(f.first_seen),
        Time(f.last_seen),
    );
    let _ = writeln!(
        out,
        "now {}{}",
        Time(now),
        if opts.dry_run {
            " (controller-wide dry run)"
        } else {
            ""
        }
    );
    let explanation = decide::explain(set, state, f, now, opts);
    let _ = writeln!(out, "policies, in evaluation order:");
    for (p, seen) in &explanation.considered {
        let verdict = match seen {
            Consideration::Matched => "MATCHED".to_owned(),
            Consideration::NotMatched(why) => format!("no match: {why}"),
            Consideration::NotReached => "not reached: a policy above matched".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {} (priority {}, {}): {verdict}",
            p.name,
            p.priority,
            p.source.file.path.display()
        );
    }
    let d = &explanation.decision;
    if let (Some(p), Some(v)) = (d.policy, &d.verdicts) {
        let _ = writeln!(
            out,
            "guards of {} (policy file {}):",
            p.name, p.source.file.digest
        );
        let g = &p.guards;
        let storm = match (v.storm, g.storm) {
            (StormVerdict::Off, _) | (_, None) => "off (no storm guard)".to_owned(),
            (StormVerdict::Clear { need, online, .. }, Some(s)) => format!(
                "clear: {} of {online} online host(s) showed {} within {}, a storm is {need}",
                // The verdict may carry an uncounted upper bound; explain counts exactly.
                state
                    .hosts_with_cause_since(
                        f.cause,
                        now.saturating_sub(
                            UnixMs::try_from(s.within.as_millis()).unwrap_or(UnixMs::MAX)
                        ),
                        usize::MAX,
                    )
                    .0,
                f.cause,
                format_duration(s.within)
            ),
            (
                StormVerdict::Storm {
                    hosts,
                    need,
                    online,
                    until,
                    first,
                },
                Some(s),
            ) => format!(
                "STORM: at least {hosts} of {online} online host(s) showed {} within {} (a storm is {need}){}; {}",
                f.cause,
                format_duration(s.within),
                until
                    .map(|t| format!(", lasting until {} at least", Time(t)))
                    .unwrap_or_default(),
                if first {
                    "escalate once"
                } else {
                    "already escalated, hold"
                }
            ),
        };
        let busy = match v.busy {
            BusyVerdict::NotApplicable => "not applicable (escalation only)",
            BusyVerdict::Clear => "clear: nothing in flight on this host",
            BusyVerdict::Busy => "BUSY: an action is in flight on this host",
        };
        let cooldown = match v.cooldown {
            CooldownVerdict::Clear { last: None } => format!(
                "clear: never acted on this host (cooldown {})",
                format_duration(g.cooldown)
            ),
            CooldownVerdict::Clear { last: Some(last) } => format!(
                "clear: last acted {} (cooldown {})",
                Time(last),
                format_duration(g.cooldown)
            ),
            CooldownVerdict::Cooling { last, until } => format!(
                "COOLING: acted {}, cooldown {} ends {}",
                Time(last),
                format_duration(g.cooldown),
                Time(until)
            ),
        };
        let attempts = match v.attempts {
            AttemptsVerdict::NotApplicable => "not applicable (escalation only)".to_owned(),
            AttemptsVerdict::Clear { attempts, max } => format!(
                "clear: {attempts} of {max} attempt(s) for {} on this host (reset after {} healthy)",
                f.cause,
                format_duration(g.attempts_window)
            ),
            AttemptsVerdict::Exhausted {
                attempts,
                max,
                escalated,
            } => format!(
                "EXHAUSTED: {attempts} of {max} attempt(s); {}",
                if escalated {
                    "already escalated, hold"
                } else {
                    "escalate"
                }
            ),
        };
        let fleet = match v.fleet {
            FleetVerdict::NotApplicable => "not applicable (escalation only)".to_owned(),
            FleetVerdict::Clear {
                after,
                limit,
                online,
            } => format!(
                "clear: {after} busy host(s) with this one, limit {limit} (max_concurrent {}, max_percent {}% of {online} online, rounded up)",
                g.fleet.max_concurrent, g.fleet.max_percent
            ),
            FleetVerdict::Full {
                after,
                limit,
                online,
            } => format!(
                "FULL: {after} busy host(s) with this one, limit {limit} (max_concurrent {}, max_percent {}% of {online} online, rounded up)",
                g.fleet.max_concurrent, g.fleet.max_percent
            ),
        };
        for (name, text) in [
            ("storm", storm.as_str()),
            ("busy", busy),
            ("cooldown", cooldown.as_str()),
            ("max_attempts", attempts.as_str()),
            ("fleet", fleet.as_str()),
        ] {
            let _ = writeln!(out, "  {name}: {text}");
        }
    }
    let _ = write!(out, "decision: {}", d.outcome);
    if let Some(p) = d.policy {
        if matches!(
            d.outcome,
            Outcome::Execute | Outcome::AwaitApproval | Outcome::DryRun
        ) {
            let actions: Vec<&str> = p.actions.iter().map(|a| a.id()).collect();
            let _ = write!(
                out,
                " [{}] by {} (mode {}, verify within {})",
                actions.join(", "),
                p.name,
                p.mode,
                format_duration(p.verify.timeout)
            );
        } else {
            let _ = write!(out, " by {}", p.name);
        }
    }
    let _ = writeln!(out);
    out
}
