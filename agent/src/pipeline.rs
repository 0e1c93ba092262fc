//! The agent's stages wired together: logs (`detect::tail`) → `detect::classify` →
//! `diagnose` against `probe::snapshot` → aggregated findings.
//!
//! - [`once`]: `gatemend-agent diagnose` — one snapshot, the recent tail of every log, the
//!   findings that are still open.
//! - [`watch`]: `gatemend-agent run` — tails the logs for ever and hands each new or changed
//!   finding to the link. A new problem is sent at once (with probes re-read for it); updates
//!   of a known one are batched once a second, and so are findings whose upstream the access
//!   log shows still failing; every `review` interval the probes are read again, findings
//!   re-diagnosed, the quiet ones that wait only for evidence probed with a GET through nginx
//!   (`probe::http`), and the ones with evidence that their upstream works again resolved
//!   (`diagnose::resolve`).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatemend_proto::Cause;
use gatemend_proto::v1;
use tokio::sync::mpsc;

use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};

use crate::config::AgentConfig;
use crate::detect::access::{AccessRates, LogFormat, NO_UPSTREAM, Traffic};
use crate::detect::{Classified, DetectError, StartAt, Tailer, classify};
use crate::diagnose::resolve::{self, ProbeAnswer, RESOLVED_BY, Recovery};
use crate::diagnose::{self, Aggregator, Finding, Probes, Requests};
use crate::link::{FINDINGS_QUEUE, Link, LinkError};
use crate::now_ms;
use crate::probe::http;
use crate::probe::nginx::LogDestination;
use crate::probe::php_fpm;
use crate::probe::snapshot::{self, Sources};
use crate::probe::systemd::Systemd;

/// nginx's error log when its configuration names none.
const NGINX_DEFAULT_ERROR_LOG: &str = "/var/log/nginx/error.log";
/// nginx's prefix, for relative log paths.
const NGINX_PREFIX: &str = "/usr/share/nginx";
/// How much of each log's end `once` reads.
const TAIL_BYTES: u64 = 1024 * 1024;
/// Lines waiting between the tailer and the diagnosis loop.
const LINE_QUEUE: usize = 4_096;
/// Updates of known findings go out at most this often.
const FLUSH: Duration = Duration::from_secs(1);
/// Probes older than this are read again when a new problem appears.
const FRESH: Duration = Duration::from_millis(200);
/// The window of the access logs' 502/504 rates that findings carry as evidence.
const RATE_WINDOW_SECS: u64 = 60;
/// Active probe requests sent per review at most (each bounded by `probe::http::TIMEOUT`, all
/// at once).
const MAX_PROBES: usize = 8;

/// What the pipeline needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This host's name, in finding ids.
    pub host: String,
    pub sources: Sources,
    /// Logs to read besides the ones found in nginx's and php-fpm's configuration.
    pub extra_logs: Vec<PathBuf>,
    /// `once`: lines older than this are history, not a current problem.
    pub window: Duration,
    /// `watch`: how long a finding's lines must have stopped before it can resolve.
    pub quiet: Duration,
    /// `watch`: time between full snapshots.
    pub review: Duration,
    /// The host's offset from UTC in seconds (the logs write local time).
    pub utc_offset_secs: i64,
}

/// Why the pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot tail the logs")]
    Tail(#[source] DetectError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("cannot listen for SIGTERM")]
    Signal(#[source] std::io::Error),
}

impl Settings {
    /// The settings of `gatemend-agent run` from its config.
    pub fn from_config(config: &AgentConfig, utc_offset_secs: i64) -> Settings {
        Settings {
            host: config.host.clone(),
            sources: Sources {
                nginx: config.actions.nginx_binary.clone(),
                units_map: config.units.clone(),
                ..Sources::default()
            },
            extra_logs: config.detect.logs.clone(),
            window: Duration::from_secs(15 * 60),
            quiet: Duration::from_secs(config.detect.quiet_secs),
            review: Duration::from_secs(config.detect.review_secs),
            utc_offset_secs,
        }
    }
}

/// `gatemend-agent run`: the link to the controller (with the host's actions) fed by [`watch`],
/// until Ctrl-C or SIGTERM.
pub async fn run(config: &AgentConfig, utc_offset_secs: i64) -> Result<(), PipelineError> {
    let actions = crate::act::Actions::new(crate::act::Settings::from_config(config));
    let link = Link::open(config, Arc::new(actions))?;
    let (findings_tx, findings) = mpsc::channel(FINDINGS_QUEUE);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(PipelineError::Signal)?;
    let systemd = match Systemd::system().await {
        Ok(systemd) => Some(systemd),
        Err(e) => {
            tracing::warn!(error = %e, "No system bus: diagnosis runs without unit states.");
            None
        }
    };
    let settings = Settings::from_config(config, utc_offset_secs);
    tracing::info!(host = %config.host, endpoints = ?config.controller.endpoints, "Agent starting.");
    let detect = tokio::spawn(watch(settings, systemd, findings_tx));
    tokio::select! {
        result = link.run(findings) => result?,
        result = detect => match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => tracing::error!(error = %e, "The watch task ended abnormally."),
        },
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Every log worth reading: nginx's error logs from its configuration (or its default),
/// php-fpm's, and the extra ones, without duplicates.
pub fn log_paths(probes: &Probes, root: &Path, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let nginx_logs: Vec<PathBuf> = probes
        .nginx
        .iter()
        .flat_map(|n| n.error_logs.iter())
        .filter(|l| l.destination == LogDestination::File)
        .map(|l| Path::new(NGINX_PREFIX).join(&l.path))
        .collect();
    if nginx_logs.is_empty() {
        paths.push(PathBuf::from(NGINX_DEFAULT_ERROR_LOG));
    }
    paths.extend(nginx_logs);
    paths.extend(php_fpm::read_error_logs(root).unwrap_or_default());
    paths.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    paths
}

/// The access logs nginx writes to files, each with its compiled `log_format` (a format that
/// cannot count 502s is logged and skipped).
pub fn access_logs(probes: &Probes) -> BTreeMap<PathBuf, LogFormat> {
    let mut logs = BTreeMap::new();
    let Some(nginx) = &probes.nginx else {
        return logs;
    };
    for log in &nginx.access_logs {
        if log.destination != LogDestination::File {
            continue;
        }
        let text = nginx
            .log_formats
            .get(&log.format)
            .map_or(log.format.as_str(), String::as_str);
        match LogFormat::compile(text) {
            Ok(format) => {
                logs.insert(Path::new(NGINX_PREFIX).join(&log.path), format);
            }
            Err(e) => {
                tracing::warn!(log = %log.path, format = %log.format, error = %e, "Access log not counted.");
            }
        }
    }
    logs
}

/// `gatemend-agent diagnose`: the findings open now, from the recent tail of the logs and one
/// snapshot of the probes. A finding whose upstream the probes show mended is left out.
pub async fn once(settings: &Settings, systemd: Option<&Systemd>) -> (Probes, Vec<Finding>) {
    let probes = snapshot::take(&settings.sources, systemd, &BTreeMap::new()).await;
    let now = now_ms();
    let since = now.saturating_sub(ms(settings.window));
    let mut agg = Aggregator::new(settings.host.clone(), settings.quiet);
    for path in log_paths(&probes, &settings.sources.root, &settings.extra_logs) {
        let Ok(text) = read_tail(&path, TAIL_BYTES) else {
            continue;
        };
        for raw in text.split(|b| *b == b'\n') {
            let line = classify(raw);
            let Some(at) = line
                .time
                .map(|t| diagnose::unix_ms(t, settings.utc_offset_secs))
            else {
                continue;
            };
            if at < since {
                continue;
            }
            if let Some(d) = diagnose::diagnose(&line, &probes) {
                agg.observe(&line, raw, &d, at);
            }
        }
    }
    observe_nginx_test(&mut agg, &probes, now);
    let open = agg
        .open()
        .into_iter()
        .filter(|f| diagnose::healthy(f.cause, &f.upstream, &probes) != Some(true))
        .collect();
    (probes, open)
}

/// A configuration that fails `nginx -T` is a problem before anyone reloads it: its `[emerg]`
/// lines are observed as log lines (once per finding, not once per snapshot).
fn observe_nginx_test(agg: &mut Aggregator, probes: &Probes, now: i64) {
    let Some(stderr) = &probes.nginx_error else {
        return;
    };
    for raw in stderr.lines() {
        let line = classify(raw.as_bytes());
        if line.cause == Cause::None || agg.is_open(&line) {
            continue;
        }
        if let Some(d) = diagnose::diagnose(&line, probes) {
            agg.observe(&line, raw.as_bytes(), &d, now);
        }
    }
}

/// The end of a file, from the first complete line within the last `bytes`.
fn read_tail(path: &Path, bytes: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.take(bytes).read_to_end(&mut buf)?;
    if start > 0 {
        // The first line is cut: skip to the first complete one.
        let cut = buf
            .iter()
            .position(|b| *b == b'\n')
            .map_or(buf.len(), |i| i + 1);
        buf.drain(..cut);
    }
    Ok(buf)
}

/// `gatemend-agent run`: watches for ever, sending each new or changed finding on `out`.
/// Returns when `out` is closed.
pub async fn watch(
    settings: Settings,
    systemd: Option<Systemd>,
    out: mpsc::Sender<v1::Finding>,
) -> Result<(), PipelineError> {
    let systemd = systemd.as_ref();
    let mut remembered = BTreeMap::new();
    let mut probes = snapshot::take(&settings.sources, systemd, &remembered).await;
    probes.remember_listeners(&mut remembered);
    let access = access_logs(&probes);
    let mut rates = AccessRates::new(RATE_WINDOW_SECS);
    let mut paths = log_paths(&probes, &settings.sources.root, &settings.extra_logs);
    paths.extend(access.keys().cloned());
    tracing::info!(logs = ?paths, "Watching logs.");
    let (lines_tx, mut lines) = mpsc::channel(LINE_QUEUE);
    let tailer = Tailer::spawn(paths, StartAt::End, lines_tx).map_err(PipelineError::Tail)?;
    let mut agg = Aggregator::new(settings.host.clone(), settings.quiet);
    let mut probed_at = Instant::now();
    let mut flush = tokio::time::interval(FLUSH);
    let mut review = tokio::time::interval(settings.review.max(Duration::from_secs(1)));
    // Units going down or coming back are events: the open findings are re-diagnosed at once.
    let units: Vec<String> = probes.units.keys().cloned().collect();
    let mut changes = match systemd {
        Some(systemd) => match systemd.unit_changes(&units).await {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, "No unit change events; units are read at each review only.");
                futures_util::stream::pending().boxed()
            }
        },
        None => futures_util::stream::pending().boxed(),
    };
    loop {
        let sent = tokio::select! {
            Some(unit) = changes.next() => {
                // A restart is a burst of changes: take them as one.
                while let Some(Some(_)) = changes.next().now_or_never() {}
                tracing::debug!(unit = %unit, "Unit changed.");
                probes = snapshot::refresh(&probes, &settings.sources, systemd).await;
                probed_at = Instant::now();
                let reviewed = review_all(&mut agg, &probes, &rates, &BTreeMap::new(), settings.utc_offset_secs);
                send(&out, reviewed, &rates).await
            }
            line = lines.recv() => {
                let Some(line) = line else { return Ok(()) };
                if let Some(format) = access.get(&line.path) {
                    if let Some(fields) = format.parse(&line.bytes) {
                        rates.record(&fields, now_secs());
                    }
                    continue;
                }
                let classified = classify(&line.bytes);
                if classified.cause == Cause::None {
                    continue;
                }
                let new = !agg.is_open(&classified);
                if new && probed_at.elapsed() >= FRESH {
                    // The state that explains a new problem is the state now.
                    probes = snapshot::refresh(&probes, &settings.sources, systemd).await;
                    probed_at = Instant::now();
                }
                if let Some(d) = diagnose::diagnose(&classified, &probes) {
                    agg.observe(&classified, &line.bytes, &d, now_ms());
                }
                if new {
                    // The access log follows the paths that failed from the first line on.
                    rates.watch_paths(agg.paths());
                    send(&out, agg.changed(), &rates).await
                } else {
                    true
                }
            }
            _ = flush.tick() => {
                rates.watch_paths(agg.paths());
                agg.still_failing(settings.utc_offset_secs, |f, r| access_view(f, r, &probes, &rates));
                send(&out, agg.changed(), &rates).await
            }
            _ = review.tick() => {
                probes = snapshot::take(&settings.sources, systemd, &remembered).await;
                probes.remember_listeners(&mut remembered);
                probed_at = Instant::now();
                observe_nginx_test(&mut agg, &probes, now_ms());
                let answers = probe_awaiting(&agg, &probes, &rates).await;
                let reviewed = review_all(&mut agg, &probes, &rates, &answers, settings.utc_offset_secs);
                let dropped = tailer.dropped();
                if dropped > 0 {
                    tracing::warn!(dropped, "Log lines could not be delivered to diagnosis.");
                }
                let over = rates.dropped();
                if over != Default::default() {
                    tracing::debug!(upstreams = over.upstreams, paths = over.paths, "Access log counts past their bounds.");
                }
                send(&out, reviewed, &rates).await
            }
        };
        if !sent {
            return Ok(());
        }
    }
}

/// Re-diagnoses the open findings with `probes` and resolves those with evidence that their
/// upstream works again: the access log (`rates`), the active probes' `answers` (by finding
/// id), or the probes showing the fault mended (see `diagnose::resolve`).
fn review_all(
    agg: &mut Aggregator,
    probes: &Probes,
    rates: &AccessRates,
    answers: &BTreeMap<String, ProbeAnswer>,
    utc_offset_secs: i64,
) -> Vec<Finding> {
    agg.review(
        now_ms(),
        utc_offset_secs,
        // Only while the probes still show the fault: once mended, the finding keeps the
        // diagnosis that explained it until its lines fall quiet.
        |f| {
            (diagnose::healthy(f.cause, &f.upstream, probes) != Some(true))
                .then(|| diagnose::diagnose(&as_line(f), probes))
                .flatten()
        },
        |f, r| recovery(f, r, probes, rates, answers.get(&f.id)),
    )
}

/// Everything that can tell whether `f`'s upstream works again.
pub fn recovery(
    f: &Finding,
    requests: &Requests,
    probes: &Probes,
    rates: &AccessRates,
    probe: Option<&ProbeAnswer>,
) -> Recovery {
    Recovery {
        health: diagnose::healthy(f.cause, &f.upstream, probes),
        access: access_view(f, requests, probes, rates),
        probe: probe.cloned(),
        checkable: !f.upstream.is_empty()
            || !requests.paths.is_empty()
            || requests.replay.is_some(),
    }
}

/// What the access log shows of `f`'s upstream: the upstream as `$upstream_addr` names it
/// (and, for an `upstream {}` block, each of its servers), or, when the log names no
/// upstreams, the paths that failed.
pub fn access_view(
    f: &Finding,
    requests: &Requests,
    probes: &Probes,
    rates: &AccessRates,
) -> Vec<(String, Traffic)> {
    let mut view = Vec::new();
    if !f.upstream.is_empty() {
        let servers = probes
            .nginx
            .iter()
            .flat_map(|n| n.upstreams.iter())
            .filter(|block| block.name == f.upstream)
            .flat_map(|block| block.servers.iter().map(|s| s.target.to_string()));
        for addr in std::iter::once(f.upstream.clone()).chain(servers) {
            if let Some(t) = rates.traffic(&addr) {
                view.push((format!("via {addr}"), t));
            }
        }
    }
    if view.is_empty() {
        for path in &requests.paths {
            if let Some(t) = rates.path_traffic(path) {
                view.push((format!("to {path}"), t));
            }
        }
    }
    view
}

/// What to send to see whether `f`'s upstream answers: the latest GET its lines name (else
/// the latest the access log saw go to its upstream), to nginx on loopback at the port the
/// request came in on (`$server_port`, or the Host's port), if nginx listens there. When
/// neither says which port (a Host without one: 80, or an https site's 443, or a client that
/// leaves the port out), to every port nginx listens on: the answers count only together
/// (see `resolve::combine`). Empty when there is nothing to send, or nowhere.
pub fn probe_requests(
    f: &Finding,
    requests: &Requests,
    probes: &Probes,
    rates: &AccessRates,
) -> Vec<http::Request> {
    let Some(replay) = requests
        .replay
        .as_ref()
        .or_else(|| rates.replay(&f.upstream))
    else {
        return Vec::new();
    };
    let ports: Vec<u16> = match replay.port {
        Some(port) => vec![port],
        None => http::nginx_ports(&probes.listeners),
    };
    ports
        .into_iter()
        .filter_map(|port| http::nginx_loopback(&probes.listeners, port))
        .map(|addr| http::Request {
            addr,
            path: replay.path.clone(),
            host: replay.host.clone(),
        })
        .collect()
}

/// Probes the findings that wait only for evidence (at most [`MAX_PROBES`] requests in all,
/// sent at once); the answers by finding id.
async fn probe_awaiting(
    agg: &Aggregator,
    probes: &Probes,
    rates: &AccessRates,
) -> BTreeMap<String, ProbeAnswer> {
    let waiting = agg.awaiting_evidence(now_ms(), |f, r| recovery(f, r, probes, rates, None));
    let mut budget = MAX_PROBES;
    let mut planned = Vec::new();
    for (f, r) in &waiting {
        let requests = probe_requests(f, r, probes, rates);
        if requests.is_empty() || requests.len() > budget {
            continue;
        }
        budget -= requests.len();
        planned.push((f.id.clone(), requests));
    }
    let sends = planned.into_iter().map(|(id, requests)| async move {
        let outcomes = futures_util::future::join_all(requests.iter().map(|request| async move {
            http::get(request)
                .await
                .map_err(|e| gatemend_proto::error_chain(&e))
        }))
        .await;
        let sent = http::describe_all(&requests);
        let answer = resolve::combine(now_ms(), sent, &outcomes);
        tracing::debug!(finding = %id, sent = %answer.sent, outcome = ?answer.outcome, "Probed.");
        (id, answer)
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .collect()
}

/// A finding as a line, for re-diagnosing it with new probes: one of its evidence lines
/// classified again, which carries what the cause and upstream alone do not (the pool, the DNS
/// name, the server, the phase: what a proposed edit is computed from), else the cause and
/// upstream.
fn as_line(f: &Finding) -> Classified<'_> {
    let latest = f
        .evidence
        .lines
        .last()
        .map(|raw| classify(raw.as_bytes()))
        .filter(|c| c.cause == f.cause && c.upstream.as_deref().unwrap_or("") == f.upstream);
    latest.unwrap_or_else(|| Classified {
        cause: f.cause,
        upstream: (!f.upstream.is_empty()).then(|| f.upstream.as_str().into()),
        ..Classified::none()
    })
}

/// Sends findings to the link, each with the access logs' 502/504 counts of its upstream (or
/// of every request, when the access log names no upstream); false when the link is gone.
async fn send(
    out: &mpsc::Sender<v1::Finding>,
    findings: Vec<Finding>,
    rates: &AccessRates,
) -> bool {
    let now = now_secs();
    for mut f in findings {
        let rate = rates
            .rate(&f.upstream, now)
            .or_else(|| rates.rate(NO_UPSTREAM, now));
        if let Some(rate) = rate {
            let window = rates.window();
            f.evidence.probes.insert(
                format!("access.502_last_{window}s"),
                rate.in_window.bad_gateway.to_string(),
            );
            f.evidence.probes.insert(
                format!("access.504_last_{window}s"),
                rate.in_window.gateway_timeout.to_string(),
            );
            f.evidence
                .probes
                .insert("access.upstream".to_owned(), rate.upstream.clone());
        }
        let resolved_by = f
            .evidence
            .probes
            .get(RESOLVED_BY)
            .map_or("", String::as_str);
        tracing::info!(finding = %f.id, revision = f.revision, cause = %f.cause, root_cause = %f.root_cause, unit = %f.unit, count = f.count, resolved = f.resolved, resolved_by = ?resolved_by, detail = %f.root_cause_detail, "Finding.");
        if out.send(f.to_wire()).await.is_err() {
            return false;
        }
    }
    true
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
