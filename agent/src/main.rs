//! `gatemend-agent`: the host agent's command line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatemend_agent::detect::classify;
use gatemend_agent::probe::{listeners, nginx, php_fpm, systemd::Systemd};

#[derive(Debug, Parser)]
#[command(name = "gatemend-agent", version, about = "gatemend host agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the host's state once and print it as JSON.
    Probe {
        #[command(subcommand)]
        what: Probe,
    },
    /// Classify log lines read on stdin: one JSON object per line, in order, on stdout.
    ///
    /// Lines of nginx's error log, php-fpm's log or `nginx -t` output; lines end at `\n` and
    /// need not be UTF-8. Each gives `{"cause":"...", ...fields}`, absent fields left out;
    /// lines that name no cause give `{"cause":"none"}`.
    Classify,
    /// Run one of this host's own actions now, as the controller would ask, and print its
    /// outcome as JSON. Exit 0 succeeded (or planned, with --dry-run), 1 failed, refused or
    /// timed out, 2 an error of the command itself.
    Act(Box<gatemend_agent::act::ActArgs>),
    /// Follow log files and classify each new line: one JSON object per line on stdout.
    ///
    /// Each object is the `classify` output with the file's "path" added. Rotation (rename or
    /// copytruncate), deletion and recreation are followed; a file that does not exist yet is
    /// waited for. Runs until interrupted.
    Tail {
        /// The logs, e.g. /var/log/nginx/error.log /var/log/php8.2-fpm.log.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Read what each existing file already holds first, instead of only new lines.
        #[arg(long)]
        from_start: bool,
    },
    /// Diagnose this host once: read nginx's and php-fpm's configuration, probe units, sockets
    /// and listeners, read the recent tail of the logs, and print the findings open now — a
    /// table, or with --json one JSON object per finding per line (the shape `gatemend policy
    /// explain` reads). Exit 0 when healthy, 1 when findings exist, 2 on its own errors.
    Diagnose(DiagnoseArgs),
    /// Run the agent: watch the logs, diagnose, and hold the link to the controller (findings,
    /// action requests, heartbeats).
    Run {
        /// The agent config (YAML), as in deploy/agent.example.yaml.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct DiagnoseArgs {
    /// One JSON object per finding per line instead of a table.
    #[arg(long)]
    json: bool,
    /// The agent config: its host name, `units:` mapping and nginx binary.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The host name in finding ids, without --config (default: this machine's host name).
    #[arg(long)]
    host: Option<String>,
    /// The nginx binary, without --config.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// How far back, in seconds, a log line still counts as a current problem.
    #[arg(long, default_value_t = 900)]
    window: u64,
    /// More logs to read, besides nginx's and php-fpm's own.
    #[arg(long = "log")]
    logs: Vec<PathBuf>,
    /// Which unit serves an upstream diagnosis cannot trace by itself, as
    /// `UPSTREAM=UNIT` (`127.0.0.1:3000=backend.service`); adds to the config's `units:`.
    #[arg(long = "unit", value_parser = upstream_unit)]
    units: Vec<(String, String)>,
}

fn upstream_unit(text: &str) -> Result<(String, String), String> {
    match text.rsplit_once('=') {
        Some((upstream, unit)) if !upstream.is_empty() && !unit.is_empty() => {
            Ok((upstream.to_owned(), unit.to_owned()))
        }
        _ => Err(format!("expected UPSTREAM=UNIT, got `{text}`")),
    }
}

#[derive(Debug, Subcommand)]
enum Probe {
    /// A systemd unit's state over D-Bus (ActiveState, SubState, Result, NRestarts, MainPID).
    Unit {
        /// Unit names, e.g. nginx.service php8.2-fpm.service.
        #[arg(required = true)]
        units: Vec<String>,
        /// D-Bus address to use instead of the system bus.
        #[arg(long)]
        bus: Option<String>,
    },
    /// Every php-fpm pool of every installed version, with its socket, owner, mode and unit.
    Pools {
        /// The root the pool files are found under.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// nginx's configuration as `nginx -T` prints it, parsed: one JSON object with the exit
    /// code, stderr and the config (user, logs, upstreams, passes, resolvers, timeouts).
    /// Exits non-zero, after printing, when `nginx -T` fails.
    Nginx {
        /// The nginx binary to run with `-T`.
        #[arg(long, default_value = "/usr/sbin/nginx")]
        nginx: PathBuf,
    },
    /// TCP listeners with the pids, process name and systemd unit holding each: one JSON
    /// object per listener.
    Listeners {
        /// The proc filesystem to read (its `net/tcp*` are the reader's network namespace).
        #[arg(long = "proc", default_value = "/proc")]
        proc_root: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Read while the process has one thread: the logs write local time.
    let utc_offset_secs =
        time::UtcOffset::current_local_offset().map_or(0, |o| i64::from(o.whole_seconds()));
    if let Command::Act(args) = &cli.command {
        return act(args);
    }
    if let Command::Diagnose(args) = &cli.command {
        return match diagnose(args, utc_offset_secs) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("gatemend-agent: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli, utc_offset_secs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatemend-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, utc_offset_secs: i64) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let config = gatemend_agent::config::load(&config)?;
            let runtime = tokio::runtime::Runtime::new()?;
            // Before the link: an edit a killed agent left half-done is finished first.
            runtime.block_on(recover_edits(&config.state_dir));
            runtime.block_on(gatemend_agent::pipeline::run(&config, utc_offset_secs))?;
            Ok(())
        }
        // main() answers `act` and `diagnose` itself: their exit codes say what they found.
        Command::Act(_) | Command::Diagnose(_) => Ok(()),
        Command::Tail { files, from_start } => match tail_files(files, from_start) {
            // A reader that stops early (`| head`) is not an error of ours.
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                Ok(())
            }
            other => other,
        },
        Command::Classify => match classify_stdin() {
            // A reader that stops early (`| head`) is not an error of ours.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("classifying stdin"),
        },
        Command::Probe {
            what: Probe::Unit { units, bus },
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let systemd = match bus {
                    Some(address) => Systemd::at_address(&address).await?,
                    None => Systemd::system().await?,
                };
                for unit in units {
                    let state = systemd.unit_state(&unit).await?;
                    println!("{}", serde_json::to_string(&state)?);
                }
                Ok(())
            })
        }
        Command::Probe {
            what: Probe::Nginx { nginx: binary },
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let dump = runtime.block_on(nginx::dump(&binary))?;
            let report = serde_json::json!({
                "binary": dump.binary,
                "exit_code": dump.exit_code,
                "stderr": dump.stderr,
                "config": dump.config(),
            });
            println!("{report}");
            let status = dump
                .exit_code
                .map_or_else(|| "a signal".to_owned(), |code| format!("exit code {code}"));
            anyhow::ensure!(
                dump.success(),
                "{} -T ended with {status}: {}",
                binary.display(),
                dump.stderr.trim()
            );
            Ok(())
        }
        Command::Probe {
            what: Probe::Listeners { proc_root },
        } => {
            for listener in listeners::read(&proc_root).context("reading TCP listeners")? {
                println!("{}", serde_json::to_string(&listener)?);
            }
            Ok(())
        }
        Command::Probe {
            what: Probe::Pools { root },
        } => {
            let pools = php_fpm::read_pools(&root).context("reading php-fpm pools")?;
            for pool in pools {
                println!("{}", serde_json::to_string(&pool)?);
            }
            Ok(())
        }
    }
}

/// `act`: the outcome as JSON on stdout; the exit code says how it ended.
fn act(args: &gatemend_agent::act::ActArgs) -> ExitCode {
    use gatemend_agent::act::{Actions, Settings, outcome_json};
    use gatemend_proto::ActionStatus;
    let outcome = (|| -> anyhow::Result<_> {
        let config = gatemend_agent::config::load(&args.config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let id = format!(
            "cli-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        // An edit a killed agent left half-done is finished before anything else runs (a dry
        // run changes nothing, not even that).
        if !args.dry_run {
            runtime.block_on(recover_edits(&config.state_dir));
        }
        let actions = Actions::new(Settings::from_config(&config));
        let started = std::time::Instant::now();
        let outcome = runtime.block_on(actions.run_request(args.request(id)));
        Ok((outcome, started.elapsed()))
    })();
    match outcome {
        Ok((outcome, elapsed)) => {
            println!("{}", outcome_json(&outcome, elapsed));
            match outcome.status {
                ActionStatus::Succeeded | ActionStatus::Planned => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("gatemend-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Finishes the edits a previous agent process left in the journal, and logs what was done.
async fn recover_edits(state_dir: &std::path::Path) {
    for line in gatemend_agent::act::edit_config::recover(state_dir).await {
        tracing::warn!(recovery = %line, "Finished an edit a previous agent process left in its journal.");
    }
}

/// `classify`: stdin to stdout, one JSON line per input line, buffered both ways.
fn classify_stdin() -> std::io::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut input = std::io::BufReader::with_capacity(1 << 16, stdin);
    let mut output = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        serde_json::to_writer(&mut output, &classify(text))?;
        output.write_all(b"\n")?;
    }
    output.flush()
}

/// `tail`: one classified JSON line per line of the followed logs, flushed as each arrives.
fn tail_files(files: Vec<PathBuf>, from_start: bool) -> anyhow::Result<()> {
    use gatemend_agent::detect::{Classified, StartAt, Tailer};

    #[derive(serde::Serialize)]
    struct Tailed<'a> {
        path: String,
        #[serde(flatten)]
        classified: Classified<'a>,
    }

    let start = if from_start {
        StartAt::Beginning
    } else {
        StartAt::End
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let tailer = Tailer::spawn(files, start, tx).context("starting the tailer")?;
    let mut output = std::io::stdout().lock();
    // The tailer never closes the channel while it runs: this loop ends on an error only.
    while let Some(line) = rx.blocking_recv() {
        let tailed = Tailed {
            path: line.path.display().to_string(),
            classified: classify(&line.bytes),
        };
        serde_json::to_writer(&mut output, &tailed).map_err(std::io::Error::from)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
    anyhow::bail!("the tailer stopped ({} lines lost)", tailer.dropped())
}

/// `gatemend-agent diagnose`: exit 0 healthy, 1 findings.
fn diagnose(args: &DiagnoseArgs, utc_offset_secs: i64) -> anyhow::Result<ExitCode> {
    use gatemend_agent::pipeline::{Settings, once};
    let config = args
        .config
        .as_deref()
        .map(gatemend_agent::config::load)
        .transpose()?;
    let mut settings = match &config {
        Some(config) => Settings::from_config(config, utc_offset_secs),
        None => {
            let host = match &args.host {
                Some(host) => host.clone(),
                None => nix::unistd::gethostname()
                    .context("reading this machine's host name (or pass --host)")?
                    .to_string_lossy()
                    .into_owned(),
            };
            Settings {
                host,
                sources: gatemend_agent::probe::snapshot::Sources {
                    nginx: args.nginx.clone(),
                    ..Default::default()
                },
                extra_logs: Vec::new(),
                window: std::time::Duration::ZERO,
                quiet: std::time::Duration::ZERO,
                review: std::time::Duration::ZERO,
                utc_offset_secs,
            }
        }
    };
    settings.window = std::time::Duration::from_secs(args.window);
    settings.extra_logs.extend(args.logs.iter().cloned());
    settings
        .sources
        .units_map
        .extend(args.units.iter().cloned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (probes, findings) = runtime.block_on(async {
        let systemd = Systemd::system().await.ok();
        once(&settings, systemd.as_ref()).await
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        for f in &findings {
            writeln!(out, "{}", serde_json::to_string(f)?)?;
        }
    } else if findings.is_empty() {
        writeln!(out, "{}: healthy, no open finding.", settings.host)?;
    } else {
        writeln!(
            out,
            "{:<28} {:<22} {:<28} {:>7}  WHY",
            "CAUSE", "ROOT CAUSE", "UNIT", "LINES"
        )?;
        for f in &findings {
            writeln!(
                out,
                "{:<28} {:<22} {:<28} {:>7}  {}",
                f.cause.to_string(),
                f.root_cause.to_string(),
                if f.unit.is_empty() { "-" } else { &f.unit },
                f.count,
                f.root_cause_detail
            )?;
        }
    }
    for e in &probes.errors {
        eprintln!("gatemend-agent: probe: {e}");
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
