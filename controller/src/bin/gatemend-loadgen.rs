//! `gatemend-loadgen`: N simulated agents over real gRPC against running controllers
//! (started with `--insecure`), each on its own connection and stream, streaming findings;
//! with several `--target`s the agents are spread over them in turn (agent i on target
//! i mod N), as a fleet is spread over several controllers on one database.
//! Reports the agents held, findings acked per second and the ack latency percentiles; with
//! `--controller-pid`, the controllers' RSS and CPU time too. A benchmark: it measures, it
//! does not pass or fail.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use gatemend_proto::Cause;
use gatemend_proto::v1::link_client::LinkClient;
use gatemend_proto::v1::{AgentMessage, Finding, Hello, agent_message, controller_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, Parser)]
#[command(
    name = "gatemend-loadgen",
    about = "simulated agents against a gatemend controller"
)]
struct Cli {
    /// A controller's listen address (loopback); repeat it to spread the agents over several.
    #[arg(long, default_value = "127.0.0.1:7443")]
    target: Vec<SocketAddr>,
    /// Simulated agents, one connection and stream each.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Findings per second across all agents; 0 sends as fast as acks allow.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Seconds of sending, after every agent has connected.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Findings in flight (sent, not acked) per agent.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Each agent's open findings, sent in turn as new revisions (an agent reports updates of
    /// the few problems its host has); 0: every finding is a new one.
    #[arg(long, default_value_t = 0)]
    open_findings: u64,
    /// A controller's pid, to report its RSS and CPU time; repeat it for several.
    #[arg(long)]
    controller_pid: Vec<u32>,
}

#[derive(Debug, Default)]
struct AgentReport {
    held: bool,
    acked: u64,
    latencies_us: Vec<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gatemend-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatemend-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(
        cli.target.iter().all(|t| t.ip().is_loopback()),
        "the load generator only targets loopback"
    );
    let cpu_before = cli
        .controller_pid
        .iter()
        .map(|pid| cpu_ticks(*pid))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let per_agent_interval =
        (cli.rate > 0).then(|| Duration::from_secs_f64(cli.agents as f64 / f64::from(cli.rate)));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(cli.agents.max(1));
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    // Finding ids carry the run's start time: a second run against the same controllers sends
    // new findings, not resends of the first run's (which ingest acks and drops as duplicates).
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut tasks = Vec::with_capacity(cli.agents);
    for i in 0..cli.agents {
        let who = Identity {
            host: format!("load-{i}"),
            run_id,
            open_findings: cli.open_findings,
        };
        tasks.push(tokio::spawn(agent(
            who,
            cli.target[i % cli.target.len()],
            cli.window.max(1),
            per_agent_interval,
            Duration::from_secs(cli.duration),
            ready_tx.clone(),
            go_rx.clone(),
        )));
    }
    drop(ready_tx);
    let mut connected = 0;
    let connect_started = Instant::now();
    while ready_rx.recv().await.is_some() {
        connected += 1;
    }
    let connect_time = connect_started.elapsed();
    let started = Instant::now();
    go_tx.send(true).context("starting the agents")?;
    let mut acked = 0u64;
    let mut held = 0usize;
    let mut latencies = Vec::new();
    for task in tasks {
        let report = task.await.context("an agent task panicked")?;
        acked += report.acked;
        held += usize::from(report.held);
        latencies.extend(report.latencies_us);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies
            .get(index)
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    println!("agents requested:   {}", cli.agents);
    println!("controllers:        {}", cli.target.len());
    println!("agents connected:   {connected} (in {connect_time:.1?})");
    println!("agents held to end: {held}");
    println!("findings acked:     {acked} in {elapsed:.1?}");
    println!(
        "findings/s:         {:.0}",
        acked as f64 / elapsed.as_secs_f64()
    );
    println!("ack latency p50:    {:.2} ms", pct(0.50));
    println!("ack latency p99:    {:.2} ms", pct(0.99));
    for (pid, before) in cli.controller_pid.iter().zip(cpu_before) {
        let ticks = cpu_ticks(*pid)?.saturating_sub(before);
        // Linux reports CPU time in clock ticks of 1/100 s on every common configuration.
        let cpu_s = ticks as f64 / 100.0;
        println!(
            "controller {pid} CPU: {cpu_s:.1} s ({:.0}% of one core over the run)",
            100.0 * cpu_s / elapsed.as_secs_f64()
        );
        println!("controller {pid} RSS: {} MiB", rss_kib(*pid)? / 1024);
    }
    Ok(())
}

/// A simulated agent's host name, the run its findings belong to and how many it has open.
#[derive(Debug)]
struct Identity {
    host: String,
    run_id: u128,
    open_findings: u64,
}

async fn agent(
    who: Identity,
    target: SocketAddr,
    window: usize,
    interval: Option<Duration>,
    duration: Duration,
    ready: mpsc::Sender<()>,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> AgentReport {
    let mut report = AgentReport::default();
    let Identity {
        host,
        run_id,
        open_findings,
    } = who;
    let Ok(mut client) = LinkClient::connect(format!("http://{target}")).await else {
        return report;
    };
    let (tx, rx) = mpsc::channel(window + 4);
    let hello = AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            host: host.clone(),
            ..Default::default()
        })),
    };
    if tx.send(hello).await.is_err() {
        return report;
    }
    let Ok(response) = client.stream(ReceiverStream::new(rx)).await else {
        return report;
    };
    let mut inbound = response.into_inner();
    let _ = ready.send(()).await;
    drop(ready);
    if go.wait_for(|go| *go).await.is_err() {
        return report;
    }
    let deadline = Instant::now() + duration;
    let mut pace = tokio::time::interval(interval.unwrap_or(Duration::from_micros(1)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut seq = 0u64;
    report.held = true;
    loop {
        let sending = Instant::now() < deadline;
        if !sending && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            _ = pace.tick(), if sending && in_flight.len() < window => {
                seq += 1;
                // Each finding is new, or the next revision of open finding (seq - 1) mod K.
                let (n, revision) = match open_findings {
                    0 => (seq, 1),
                    k => ((seq - 1) % k, (seq - 1) / k + 1),
                };
                let finding = Finding {
                    id: format!("{host}/{run_id}-{n}"),
                    revision,
                    host: host.clone(),
                    cause: Cause::UpstreamRefused as i32,
                    count: 1,
                    ..Default::default()
                };
                let message = AgentMessage { body: Some(agent_message::Body::Finding(finding)) };
                in_flight.push_back(Instant::now());
                if tx.send(message).await.is_err() {
                    report.held = false;
                    break;
                }
            }
            message = inbound.message() => match message {
                Ok(Some(m)) => {
                    if let Some(controller_message::Body::Ack(_)) = m.body {
                        // Acks come in the order the findings were sent on this stream.
                        if let Some(sent) = in_flight.pop_front() {
                            report.acked += 1;
                            report.latencies_us.push(
                                u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX),
                            );
                        }
                    }
                }
                _ => {
                    report.held = false;
                    break;
                }
            },
            () = tokio::time::sleep_until((deadline + Duration::from_secs(10)).into()) => {
                report.held = false;
                break;
            }
        }
    }
    report
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields.get(n).context("short /proc stat")?.parse()?)
    };
    Ok(field(11)? + field(12)?)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()?)
}
