//! `gatemend-controller`: the controller daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use gatemend_controller::ingest::{
    self, FileSink, FindingSink, Fleet, Ingested, Limits, LinkService, MemorySink, PeerAuth,
};
use gatemend_controller::pki;
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(
    name = "gatemend-controller",
    version,
    about = "gatemend controller daemon"
)]
struct Cli {
    /// Address the agents' gRPC link listens on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
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
}

/// New findings waiting for the policy stage.
const POLICY_QUEUE: usize = 10_000;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
            tracing::warn!(listen = %cli.listen, "INSECURE: the agent link is plain text without certificates; any client may report as any host (--insecure).");
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
    let (forward, findings) = mpsc::channel(POLICY_QUEUE);
    tokio::spawn(until_policy_exists(findings));
    tokio::spawn(sweep(fleet.clone(), limits.heartbeat_timeout));
    let service = LinkService::new(fleet, sink, forward, limits, auth);
    let listener = ingest::bind(cli.listen).await?;
    tracing::info!(listen = %cli.listen, tls = cli.tls_dir.is_some(), "Listening for agents.");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Shutting down.");
    };
    ingest::serve(listener, tls, service, shutdown).await?;
    Ok(())
}

/// Takes the policy stage's place until it is built, so the queue does not fill.
async fn until_policy_exists(mut findings: mpsc::Receiver<Ingested>) {
    while let Some(Ingested { host, finding }) = findings.recv().await {
        // DEBUG: at fleet rates one INFO line per finding costs more than ingesting it.
        tracing::debug!(host = %host, finding = %finding.id, revision = finding.revision, "Finding ingested.");
    }
}

/// Marks silent hosts offline (streams also time out on their own; this keeps the view honest).
async fn sweep(fleet: Fleet, timeout: Duration) {
    let mut tick = tokio::time::interval(timeout / 3);
    loop {
        tick.tick().await;
        for host in fleet.sweep(Instant::now(), timeout) {
            tracing::warn!(host = %host, timeout_s = timeout.as_secs(), "Host missed its heartbeats; marked offline.");
        }
    }
}
