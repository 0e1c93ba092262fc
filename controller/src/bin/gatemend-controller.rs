//! `gatemend-controller`: the controller daemon.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use gatemend_controller::approvals::Approvals;
use gatemend_controller::audit::{Audit, Kind, NewRecord};
use gatemend_controller::decide::Options;
use gatemend_controller::dispatch::{Dispatcher, Notifier, StateDb};
use gatemend_controller::ingest::{
    self, FileSink, FindingSink, Fleet, Forwarded, Ingested, Limits, LinkService, MemorySink,
    PeerAuth,
};
use gatemend_controller::pki;
use gatemend_controller::policy::reload::Reload;
use gatemend_controller::policy::{self, PolicySet};
use gatemend_controller::web::{self, Tokens, Transport, Web};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Parser)]
#[command(
    name = "gatemend-controller",
    version,
    about = "gatemend controller daemon"
)]
struct Cli {
    /// Address the agents' gRPC link listens on; repeat it to serve the same link on several
    /// addresses (e.g. one per network the agents reach the controller through).
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: Vec<SocketAddr>,
    /// The PKI directory made by `gatemend pki init`: mutual TLS with the agents.
    #[arg(
        long,
        required_unless_present = "insecure",
        conflicts_with = "insecure"
    )]
    tls_dir: Option<PathBuf>,
    /// Plain text, no certificates: any client may claim any host. Logged at every start.
    #[arg(long)]
    insecure: bool,
    /// Append-only JSON-lines file every finding and action result is synced to before it is
    /// acked. Without it, they are kept in memory only (lost on restart).
    #[arg(long)]
    findings_log: Option<PathBuf>,
    /// A host silent this long (seconds) is marked offline.
    #[arg(long, default_value_t = 30)]
    heartbeat_timeout: u64,
    /// Largest message an agent may send, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_message_bytes: usize,
    /// Messages per second one agent may send (sustained).
    #[arg(long, default_value_t = 1_000)]
    rate_limit: u32,
    /// Messages one agent may send at once above the rate.
    #[arg(long, default_value_t = 2_000)]
    rate_burst: u32,
    /// The policy directory (`*.yaml`), reloaded on SIGHUP and when a file changes. Without
    /// it every finding is recorded and none is acted on.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Turn every action into a dry run: agents return their plans, nothing runs anywhere.
    #[arg(long)]
    dry_run: bool,
    /// Where escalations go when their policy names no webhook (a JSON POST).
    #[arg(long)]
    escalate_webhook: Option<String>,
    /// The audit log: `sqlite:///var/lib/gatemend/audit.db` or `postgres://...`. Every
    /// finding, decision, action, result, escalation and policy reload is written there (an
    /// action durably before it is dispatched). Without it, nothing is audited.
    #[arg(long)]
    db: Option<String>,
    /// The fleet state (cooldowns, attempts, in-flight actions, storms) kept across restarts,
    /// for a controller without --db (with --db the state lives in the database, shared by
    /// every controller on it). Without either, a restarted controller forgets what it did and
    /// may act again on an incident it is mending.
    #[arg(long, conflicts_with = "db")]
    state_file: Option<PathBuf>,
    /// This controller's name among the controllers sharing a database: in the fleet state,
    /// the audit and `/healthz`. Distinct per controller; by default `HOSTNAME-PID`.
    #[arg(long)]
    controller_id: Option<String>,
    /// Serve the review UI, the operator API (`/api/v1/`) and `/metrics` on this address.
    /// Plain HTTP: keep it on loopback or behind a TLS proxy. Needs --tokens.
    #[arg(long, requires = "tokens")]
    http_listen: Option<SocketAddr>,
    /// The operators who may use the UI and API: YAML, token hashes only (`gatemend tokens
    /// new` prints an entry).
    #[arg(long, requires = "http_listen")]
    tokens: Option<PathBuf>,
    /// The UI is reached through TLS only (a TLS proxy in front of it): the session cookie is
    /// `__Host-gatemend_session`, `Secure`. Without it, the cookie is for plain HTTP.
    #[arg(long, requires = "http_listen")]
    http_secure_cookies: bool,
    /// A reverse proxy in front of the UI (repeatable): from it, `X-Forwarded-Proto: https`
    /// makes the session cookie `__Host-` and `Secure`, and `X-Forwarded-For` names the client
    /// that failed logins count against. Those headers from any other peer are ignored.
    #[arg(long, requires = "http_listen")]
    http_trusted_proxy: Vec<IpAddr>,
}

/// Ingest events waiting for the decision stage.
const DECISION_QUEUE: usize = 10_000;
/// Policy reload outcomes waiting for the audit (issue #7); logged meanwhile.
const RELOAD_QUEUE: usize = 16;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in journald or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gatemend-controller: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatemend-controller: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (tls, auth) = match &cli.tls_dir {
        Some(dir) => (
            Some(pki::server_config(dir).context("loading the controller's TLS material")?),
            PeerAuth::Certificate,
        ),
        None => {
            tracing::warn!(listen = ?cli.listen, "INSECURE: the agent link is plain text without certificates; any client may report as any host (--insecure).");
            (None, PeerAuth::Insecure)
        }
    };
    let limits = Limits {
        max_message_bytes: cli.max_message_bytes,
        rate_per_sec: cli.rate_limit,
        burst: cli.rate_burst,
        heartbeat_timeout: Duration::from_secs(cli.heartbeat_timeout.max(1)),
        ..Limits::default()
    };
    match &cli.findings_log {
        Some(path) => {
            let sink = FileSink::open(path).context("opening the findings log")?;
            serve(cli, tls, auth, limits, Arc::new(sink)).await
        }
        None => serve(cli, tls, auth, limits, Arc::new(MemorySink::new())).await,
    }
}

async fn serve<S: FindingSink>(
    cli: Cli,
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: PeerAuth,
    limits: Limits,
    sink: Arc<S>,
) -> anyhow::Result<()> {
    let fleet = Fleet::new();
    let (forward, events) = mpsc::channel(DECISION_QUEUE);
    let audit = match &cli.db {
        Some(url) => Some(Audit::open(url).await.context("opening the audit log")?),
        None => {
            tracing::warn!("No --db: nothing is audited.");
            None
        }
    };
    let policies = start_policies(cli.policies.as_deref(), audit.clone())?;
    if cli.dry_run {
        tracing::warn!(
            "DRY RUN: every action is a dry run; agents return plans, nothing runs (--dry-run)."
        );
    }
    let notifier = Notifier::spawn(cli.escalate_webhook.clone());
    let options = Options {
        dry_run: cli.dry_run,
    };
    let id = cli.controller_id.clone().unwrap_or_else(default_id);
    tracing::info!(controller = %id, "Starting.");
    let mut dispatcher = Dispatcher::new(&id, policies, options, fleet.clone(), notifier);
    // The approvals and the guards' state live beside the audit log, in its database,
    // shared by every controller on it.
    let mut approvals = None;
    match (&audit, &cli.state_file) {
        (Some(audit), _) => {
            let state = StateDb::open(audit.pool().clone(), audit.backend())
                .await
                .context("opening the fleet state in the database")?;
            let opened = Approvals::open(audit.pool().clone())
                .await
                .context("opening the approvals")?;
            approvals = Some(opened.clone());
            dispatcher = dispatcher.with_database(audit.clone(), state, opened);
        }
        (None, Some(path)) => {
            dispatcher = dispatcher
                .with_state_file(path.clone())
                .context("loading the fleet state")?;
        }
        (None, None) => {
            tracing::warn!("No --db nor --state-file: a restart forgets cooldowns and attempts.");
        }
    }
    // The review UI and API (issue 7) hand approved approvals to the dispatcher through this.
    let dispatch = dispatcher.handle();
    let dispatch_stats = dispatcher.stats();
    let health = dispatcher.health();
    let decided = dispatcher.decided();
    tokio::spawn(dispatcher.run(events));
    tokio::spawn(sweep(
        fleet.clone(),
        limits.heartbeat_timeout,
        forward.clone(),
    ));
    let web_fleet = fleet.clone();
    // An agent's message is acked once the dispatcher committed its decision: a controller
    // that dies first leaves it in the agent's outbox, for the next controller.
    let service = LinkService::new(fleet, sink, forward, limits, auth).ack_when_decided(decided);
    if let Some(addr) = cli.http_listen {
        let tokens = match &cli.tokens {
            Some(path) => Tokens::load(path).context("loading the operator tokens")?,
            None => Tokens::default(),
        };
        let mut ui = Web::builder(web_fleet, tokens)
            .ingest_stats(service.stats())
            .dispatcher(dispatch)
            .dispatch_stats(dispatch_stats)
            .health(health)
            .transport(Transport {
                secure_cookies: cli.http_secure_cookies,
                trusted_proxies: cli.http_trusted_proxy.clone(),
            });
        if let Some(audit) = audit {
            ui = ui.audit(audit);
        }
        if let Some(approvals) = approvals {
            ui = ui.approvals(approvals);
        }
        let listener = web::bind(addr).await?;
        tracing::info!(listen = %addr, "Serving the review UI and API.");
        tokio::spawn(async move {
            if let Err(e) = web::serve(listener, ui.build(), std::future::pending()).await {
                tracing::error!(error = %e, "The review UI stopped.");
            }
        });
    }
    let mut listeners = Vec::with_capacity(cli.listen.len());
    for addr in &cli.listen {
        listeners.push(ingest::bind(*addr).await?);
        tracing::info!(listen = %addr, tls = cli.tls_dir.is_some(), "Listening for agents.");
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Shutting down.");
    };
    ingest::serve_all(listeners, tls, service, shutdown).await?;
    Ok(())
}

/// Loads the policy directory (every problem printed, and a refusal to start, when invalid)
/// and keeps it current; without a directory, an empty set that decides `no_policy`.
fn start_policies(
    dir: Option<&std::path::Path>,
    audit: Option<Audit>,
) -> anyhow::Result<watch::Receiver<Arc<PolicySet>>> {
    let Some(dir) = dir else {
        tracing::warn!("No --policies: findings are recorded, nothing is decided or acted on.");
        let (_, running) = watch::channel(Arc::new(PolicySet::empty()));
        return Ok(running);
    };
    let set = policy::load(dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid policies, not starting:\n{}", lines.join("\n"))
    })?;
    tracing::info!(dir = %dir.display(), policies = set.policies().len(), files = set.files().len(), "Policies loaded.");
    let (running, receiver) = watch::channel(Arc::new(set));
    let (outcomes, mut reloads) = mpsc::channel(RELOAD_QUEUE);
    policy::reload::spawn(dir.to_path_buf(), running, outcomes)
        .context("watching the policy directory")?;
    // Each reload is logged by the reloader, and audited here.
    tokio::spawn(async move {
        while let Some(outcome) = reloads.recv().await {
            let (kind, body) = match outcome {
                Reload::Applied {
                    trigger,
                    policies,
                    files,
                } => (
                    Kind::PolicyReloaded,
                    serde_json::json!({
                        "trigger": trigger.id(),
                        "policies": policies,
                        "files": files
                            .iter()
                            .map(|f| serde_json::json!({
                                "path": f.path.display().to_string(),
                                "digest": f.digest.to_string(),
                            }))
                            .collect::<Vec<_>>(),
                    }),
                ),
                Reload::Rejected { trigger, errors } => (
                    Kind::PolicyRejected,
                    serde_json::json!({ "trigger": trigger.id(), "errors": errors }),
                ),
                Reload::Unchanged { .. } => continue,
            };
            if let Some(audit) = &audit
                && let Err(e) = audit
                    .append(NewRecord::now(kind, "controller").body(body))
                    .await
            {
                tracing::error!(error = %e, "Could not audit a policy reload.");
            }
        }
    });
    Ok(receiver)
}

/// `HOSTNAME-PID`: distinct between the processes of one machine and between machines.
fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "controller".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Marks silent hosts offline (streams also time out on their own; this keeps the view honest).
async fn sweep(fleet: Fleet, timeout: Duration, events: mpsc::Sender<Forwarded>) {
    let mut tick = tokio::time::interval(timeout / 3);
    loop {
        tick.tick().await;
        for host in fleet.sweep(Instant::now(), timeout) {
            tracing::warn!(host = %host, timeout_s = timeout.as_secs(), "Host missed its heartbeats; marked offline.");
            // Not numbered: no ack waits for it.
            let event = Forwarded {
                seq: 0,
                event: Ingested::Offline { host },
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}
