//! Actions: the agent's own fixed set of remedies, and nothing else.
//!
//! The controller asks; the host decides. A request goes through four stages:
//!
//! 1. [`admit`] (pure): the action is in `allowed_actions`, its unit and socket path match the
//!    config's globs (a restart's socket too: verification connects to it as root). Nothing on
//!    the host is read before this passes, so a unit outside the allow-list is not even loaded.
//! 2. `observe` (read-only I/O): the unit's state, the socket's `lstat`, the php-fpm pools, the
//!    user database; gathered into [`Facts`], under the unit's lock.
//! 3. [`plan`] (pure): request + settings + facts -> a [`Plan`] or a [`Refusal`]. The plan is
//!    what a dry run shows and what the audit records.
//! 4. [`apply`]: precheck, do, verify, each recorded as an `ActionStep` with its duration and
//!    output.
//!
//! One action at a time per unit (an async mutex per lock key, kept in a map only while an
//! action holds or waits for it; at most [`MAX_UNIT_LOCKS`] busy units, a request for one more
//! is refused), and every action under a deadline (the request's, at most
//! `actions.max_deadline_ms`). There is no generic "run a command" action, and none may be added: each action is
//! one file here and one variant of [`Plan`].

pub mod edit_config;
mod error;
pub mod escalate;
pub mod fix_socket_ownership;
pub mod journal;
pub mod reload_nginx;
pub mod restart_unit;
pub mod start_unit;
mod unit;

use gatemend_proto::error_chain;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use gatemend_proto::v1::{ActionRequest, ActionStep};
use gatemend_proto::{ActionKind, ActionStatus};
use serde::Serialize;

pub use edit_config::{EditFacts, EditPlan, FileFacts, NginxFacts};
pub use error::ActError;
pub use escalate::EscalatePlan;
pub use fix_socket_ownership::{Ownership, SocketPlan};
pub use reload_nginx::{ReloadPlan, ReloadVia};
pub use unit::{UnitPlan, Upstream, parse_listen};

use crate::config::{ActionsConfig, AgentConfig, Deadline};
use crate::link::runner::{ActionRunner, Outcome};
use crate::probe::php_fpm::{self, Pool};
use crate::probe::socket::{self, Identity, SocketInfo};
use crate::probe::systemd::{Systemd, UnitState};

/// What the actions need from the agent config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `allowed_actions`: the kinds this host lets the controller ask for.
    pub allowed: Vec<ActionKind>,
    /// The `actions:` section.
    pub actions: ActionsConfig,
    /// Where the php-fpm pool files are found (`/` on a host).
    pub root: PathBuf,
    /// The agent's state directory: edit_config's journal and backups live under it.
    pub state_dir: PathBuf,
}

impl Settings {
    pub fn from_config(config: &AgentConfig) -> Self {
        Self {
            allowed: config.allowed_actions.clone(),
            actions: config.actions.clone(),
            root: PathBuf::from("/"),
            state_dir: config.state_dir.clone(),
        }
    }

    /// The deadline of `request`: its own, or the configured default, at most
    /// `actions.max_deadline_ms` (the link's timer uses the same function).
    pub fn deadline(&self, request: &ActionRequest) -> Deadline {
        self.actions.deadline(request.deadline_ms)
    }

    /// How long verification may wait for `request`, in milliseconds.
    pub fn verify_timeout_ms(&self, request: &ActionRequest) -> u64 {
        match request.verify_timeout_ms {
            0 => self.actions.default_verify_timeout_ms,
            ms => u64::from(ms),
        }
    }
}

/// Why the agent will not run a request. Nothing was touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

/// What an action will do, decided before anything is touched: what a dry run shows, what the
/// audit records, and the only input of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Plan {
    RestartUnit(UnitPlan),
    StartUnit(UnitPlan),
    FixSocketOwnership(SocketPlan),
    ReloadNginx(ReloadPlan),
    EditConfig(Box<EditPlan>),
    Escalate(EscalatePlan),
}

impl Plan {
    /// The plan as lines a human reads: the D-Bus calls, the chown with old and new owner and
    /// mode, the `nginx -t` it would run, and what verification checks.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Plan::RestartUnit(p) => p.lines(unit::Verb::Restart),
            Plan::StartUnit(p) => p.lines(unit::Verb::Start),
            Plan::FixSocketOwnership(p) => p.lines(),
            Plan::ReloadNginx(p) => p.lines(),
            Plan::EditConfig(p) => p.lines(),
            Plan::Escalate(p) => p.lines(),
        }
    }

    /// The kind of action this plan is.
    pub fn kind(&self) -> ActionKind {
        match self {
            Plan::RestartUnit(_) => ActionKind::RestartUnit,
            Plan::StartUnit(_) => ActionKind::StartUnit,
            Plan::FixSocketOwnership(_) => ActionKind::FixSocketOwnership,
            Plan::ReloadNginx(_) => ActionKind::ReloadNginx,
            Plan::EditConfig(_) => ActionKind::EditConfig,
            Plan::Escalate(_) => ActionKind::Escalate,
        }
    }
}

/// The host's state a plan is made from, read (never changed) before planning.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// restart_unit / start_unit: the unit's state.
    pub unit: Option<UnitState>,
    /// Every php-fpm pool on the host.
    pub pools: Vec<Pool>,
    /// fix_socket_ownership: what `lstat` found at the path.
    pub socket: Option<SocketInfo>,
    /// fix_socket_ownership: the path with every link resolved (`None` when it cannot be).
    pub canonical: Option<PathBuf>,
    /// User and group names the plan needs, with their ids (absent: no such name).
    pub users: BTreeMap<String, u32>,
    pub groups: BTreeMap<String, u32>,
    /// nginx's worker user, looked up.
    pub worker: Option<Identity>,
    /// reload_nginx: nginx's unit, when systemd answered.
    pub nginx_unit: Option<UnitState>,
    /// edit_config: the file, `nginx -T`, the unit to reload.
    pub edit: Option<EditFacts>,
}

/// The pure allow-list check: the kind is allowed, and its unit and socket path match the
/// config's globs. Returns the kind.
pub fn admit(request: &ActionRequest, settings: &Settings) -> Result<ActionKind, Refusal> {
    let kind = ActionKind::try_from(request.kind).unwrap_or(ActionKind::Unspecified);
    if kind == ActionKind::Unspecified {
        return refuse(format!("action kind {} is not an action", request.kind));
    }
    if !settings.allowed.contains(&kind) {
        return refuse(format!(
            "action `{kind}` is not in this host's allowed_actions"
        ));
    }
    match kind {
        ActionKind::RestartUnit | ActionKind::StartUnit => {
            unit::check_unit_name(&request.unit)?;
            if !matches_any(&settings.actions.units, &request.unit) {
                return refuse(format!(
                    "unit `{}` is not in this host's allow-list (actions.units: {})",
                    request.unit,
                    settings.actions.units.join(", ")
                ));
            }
            // The socket verification connects to, as root: the same rules as a socket to
            // fix. None (a TCP upstream, or nothing known) is fine.
            if !request.socket_path.is_empty() {
                admit_socket_path(&request.socket_path, settings)?;
            }
        }
        ActionKind::FixSocketOwnership => admit_socket_path(&request.socket_path, settings)?,
        ActionKind::EditConfig => edit_config::admit(request, settings)?,
        ActionKind::ReloadNginx | ActionKind::Escalate | ActionKind::Unspecified => {}
    }
    Ok(kind)
}

/// The pure planner: what the action will do on this host, or why it will not.
pub fn plan(request: &ActionRequest, settings: &Settings, facts: &Facts) -> Result<Plan, Refusal> {
    match admit(request, settings)? {
        ActionKind::RestartUnit => {
            restart_unit::plan(request, settings, facts).map(Plan::RestartUnit)
        }
        ActionKind::StartUnit => start_unit::plan(request, settings, facts).map(Plan::StartUnit),
        ActionKind::FixSocketOwnership => {
            fix_socket_ownership::plan(request, settings, facts).map(Plan::FixSocketOwnership)
        }
        ActionKind::ReloadNginx => {
            reload_nginx::plan(request, settings, facts).map(Plan::ReloadNginx)
        }
        ActionKind::Escalate => Ok(Plan::Escalate(escalate::plan(request))),
        ActionKind::EditConfig => {
            edit_config::plan(request, settings, facts).map(|p| Plan::EditConfig(Box::new(p)))
        }
        ActionKind::Unspecified => refuse("unspecified is not an action"),
    }
}

/// What an action serialises on: the unit it touches. A socket belongs to the unit of the pool
/// that listens on it (chowning while php-fpm restarts would race its re-creation), or to
/// itself when no pool names it. An edit locks the unit it reloads: nginx's, or its pool's.
/// `None`: escalate touches nothing.
pub fn lock_key(request: &ActionRequest, settings: &Settings, pools: &[Pool]) -> Option<String> {
    match ActionKind::try_from(request.kind).unwrap_or(ActionKind::Unspecified) {
        ActionKind::RestartUnit | ActionKind::StartUnit => Some(request.unit.clone()),
        ActionKind::ReloadNginx => Some(settings.actions.nginx_unit.clone()),
        ActionKind::FixSocketOwnership => Some(
            fix_socket_ownership::pool_for(pools, &request.socket_path)
                .and_then(Pool::unit)
                .unwrap_or_else(|| request.socket_path.clone()),
        ),
        ActionKind::EditConfig => edit_config::unit_of(request, settings, pools),
        ActionKind::Escalate | ActionKind::Unspecified => None,
    }
}

/// Whether `name` matches one of `globs`; `*` does not cross `/`. A glob that does not compile
/// matches nothing (config validation already reported it).
pub fn matches_any(globs: &[String], name: &str) -> bool {
    globs.iter().any(|glob| {
        globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .is_ok_and(|g| g.compile_matcher().is_match(name))
    })
}

/// A socket path the actions may touch or connect to: plain, and matching `actions.sockets`.
fn admit_socket_path(path: &str, settings: &Settings) -> Result<(), Refusal> {
    check_socket_path(path)?;
    if matches_any(&settings.actions.sockets, path) {
        Ok(())
    } else {
        refuse(format!(
            "socket path `{path}` is not in this host's allow-list (actions.sockets: {})",
            settings.actions.sockets.join(", ")
        ))
    }
}

/// A path is absolute and plain: no `.`, `..`, empty component or trailing `/`, so a glob
/// sees the path the kernel will use.
pub(crate) fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains("//")
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.split('/').any(|part| part == "." || part == "..")
}

/// A socket path must be absolute and plain ([`plain_path`]).
fn check_socket_path(path: &str) -> Result<(), Refusal> {
    if path.is_empty() {
        return refuse("the request names no socket_path");
    }
    if plain_path(path) {
        Ok(())
    } else {
        refuse(format!(
            "socket path `{path}` is not a plain absolute path (no ., .., // or trailing /)"
        ))
    }
}

/// The steps of one action, shared with its deadline so the steps done before a timeout are
/// still reported, and the one in progress with what it had noted so far.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<StdMutex<Steps>>);

#[derive(Debug, Default)]
struct Steps {
    done: Vec<ActionStep>,
    /// The step under way: its name, start and the lines it has noted.
    current: Option<(String, Instant, Vec<String>)>,
}

fn finished(name: &str, started: Instant, ok: bool, output: String) -> ActionStep {
    ActionStep {
        name: name.to_owned(),
        ok,
        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        output,
    }
}

impl Recorder {
    fn with<T>(&self, f: impl FnOnce(&mut Steps) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A step starts now; [`Recorder::note`] adds to it until [`Recorder::record`] ends it.
    pub fn begin(&self, name: &str) {
        self.with(|s| s.current = Some((name.to_owned(), Instant::now(), Vec::new())));
    }

    /// A line of the step under way (a D-Bus call and its answer), kept if the deadline
    /// interrupts it.
    pub fn note(&self, line: impl Into<String>) {
        self.with(|s| {
            if let Some((_, _, lines)) = &mut s.current {
                lines.push(line.into());
            }
        });
    }

    /// Records a step that started at `started` and ends now.
    pub fn record(&self, name: &str, started: Instant, ok: bool, output: impl Into<String>) {
        let step = finished(name, started, ok, output.into());
        tracing::debug!(step = %step.name, ok = step.ok, duration_ms = step.duration_ms, "Action step.");
        self.with(|s| {
            s.current = None;
            s.done.push(step);
        });
    }

    /// Ends the step under way, if any, as failed: the deadline passed during it.
    fn interrupt(&self, why: &str) {
        self.with(|s| {
            if let Some((name, started, mut lines)) = s.current.take() {
                lines.push(why.to_owned());
                s.done
                    .push(finished(&name, started, false, lines.join("\n")));
            }
        });
    }

    /// Every step so far.
    pub fn steps(&self) -> Vec<ActionStep> {
        self.with(|s| s.done.clone())
    }

    fn outcome(&self, status: ActionStatus, message: impl Into<String>) -> Outcome {
        Outcome {
            status,
            steps: self.steps(),
            message: message.into(),
        }
    }
}
/// Carries the plan out: precheck, do, verify, each recorded in `rec`. Returns how it ended.
pub async fn apply(plan: &Plan, settings: &Settings, rec: &Recorder) -> Outcome {
    let (status, message) = match plan {
        Plan::RestartUnit(p) => restart_unit::apply(p, rec).await,
        Plan::StartUnit(p) => start_unit::apply(p, rec).await,
        Plan::FixSocketOwnership(p) => fix_socket_ownership::apply(p, rec).await,
        Plan::ReloadNginx(p) => reload_nginx::apply(p, settings, rec).await,
        Plan::EditConfig(p) => edit_config::apply(p, rec).await,
        Plan::Escalate(p) => escalate::apply(p, rec),
    };
    rec.outcome(status, message)
}

/// Most units (lock keys) with an action running or waiting at once; a request for one more
/// is refused. The keys come from the controller's requests (any unit name an allow-list glob
/// matches, any socket path without a pool), so the map they live in must not grow without end.
pub const MAX_UNIT_LOCKS: usize = 64;

/// The per-unit locks: a key is in the map only while an action holds or waits for its lock.
type LockMap = Arc<StdMutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// What the runner refused or cut, since start (for the logs' totals and tests).
#[derive(Debug, Default)]
pub struct ActStats {
    /// Requests refused because [`MAX_UNIT_LOCKS`] units were busy.
    pub lock_refusals: AtomicU64,
    /// Requests whose deadline was cut to `actions.max_deadline_ms`.
    pub deadlines_clamped: AtomicU64,
}

/// The agent's action runner: the allow-list, the per-unit locks and the deadlines around the
/// actions of this folder.
#[derive(Debug, Clone)]
pub struct Actions {
    settings: Arc<Settings>,
    locks: LockMap,
    max_locks: usize,
    stats: Arc<ActStats>,
}

/// One unit's lock, held for an action; when dropped, the unit's entry leaves the map unless
/// another action holds or waits for it.
struct UnitLock {
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    locks: LockMap,
}

impl Drop for UnitLock {
    fn drop(&mut self) {
        // The guard holds a reference to the mutex: release it first, then count.
        drop(self.guard.take());
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Clones are only made under this lock, so a count of 1 (the map's own) means nobody
        // holds or waits for it, and nobody can start to before it is gone.
        if locks
            .get(&self.key)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

impl Actions {
    pub fn new(settings: Settings) -> Self {
        Self::with_max_locks(settings, MAX_UNIT_LOCKS)
    }

    /// A runner with its own cap on busy units (tests use a small one).
    pub fn with_max_locks(settings: Settings, max_locks: usize) -> Self {
        Self {
            settings: Arc::new(settings),
            locks: Arc::default(),
            max_locks: max_locks.max(1),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<ActStats> {
        Arc::clone(&self.stats)
    }

    /// How many units have an action running or waiting now.
    pub fn busy_units(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Runs one request to its end: the outcome with every step, within the request's deadline.
    pub async fn run_request(&self, request: ActionRequest) -> Outcome {
        let Deadline {
            duration: deadline,
            clamped_from_ms,
        } = self.settings.deadline(&request);
        if let Some(asked) = clamped_from_ms {
            let total = self.stats.deadlines_clamped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                action = %request.action_id,
                asked_ms = asked,
                max_ms = deadline.as_millis() as u64,
                clamped_total = total,
                "The request's deadline is longer than actions.max_deadline_ms; the action runs under the maximum."
            );
        }
        // The link puts its own timer of the same length around this future; ending a little
        // earlier here keeps the steps done so far in the answer instead of losing them.
        let ours = deadline.saturating_sub(deadline / 20);
        let rec = Recorder::default();
        let started = Instant::now();
        let kind = ActionKind::try_from(request.kind).unwrap_or(ActionKind::Unspecified);
        let outcome =
            match tokio::time::timeout(ours, self.run_inner(request.clone(), rec.clone())).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    let why = format!(
                        "the deadline of {} ms passed; the steps done so far are recorded",
                        deadline.as_millis()
                    );
                    rec.interrupt(&why);
                    rec.outcome(ActionStatus::TimedOut, why)
                }
            };
        tracing::info!(
            action = %request.action_id,
            kind = %kind,
            unit = %request.unit,
            socket = %request.socket_path,
            dry_run = request.dry_run,
            status = %outcome.status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            message = %outcome.message,
            "Action ended."
        );
        outcome
    }

    async fn run_inner(&self, request: ActionRequest, rec: Recorder) -> Outcome {
        let settings = &self.settings;
        let started = Instant::now();
        let kind = match admit(&request, settings) {
            Ok(kind) => kind,
            Err(refusal) => {
                rec.record("precheck", started, false, refusal.0.clone());
                return rec.outcome(ActionStatus::Refused, refusal.0);
            }
        };
        // The pools say which unit a socket belongs to (the lock) and where a php-fpm unit
        // listens (verification); a host without php-fpm simply has none.
        let pools = match php_fpm::read_pools(&settings.root) {
            Ok(pools) => pools,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the php-fpm pools; planning without them.");
                Vec::new()
            }
        };
        let _guard = match lock_key(&request, settings, &pools) {
            Some(key) if !request.dry_run => match self.lock(&key).await {
                Ok(guard) => Some(guard),
                Err(refusal) => {
                    rec.record("precheck", started, false, refusal.0.clone());
                    return rec.outcome(ActionStatus::Refused, refusal.0);
                }
            },
            // A dry run reads only; it need not wait behind a running action.
            _ => None,
        };
        let started = Instant::now();
        let facts = match observe(&request, kind, settings, pools).await {
            Ok(facts) => facts,
            Err(e) => {
                let text = error_chain(&e);
                rec.record("precheck", started, false, text.clone());
                return rec.outcome(
                    ActionStatus::Failed,
                    format!("cannot read the host's state: {text}"),
                );
            }
        };
        let plan = match plan(&request, settings, &facts) {
            Ok(plan) => plan,
            Err(refusal) => {
                rec.record("precheck", started, false, refusal.0.clone());
                return rec.outcome(ActionStatus::Refused, refusal.0);
            }
        };
        rec.record("precheck", started, true, describe_facts(kind, &facts));
        if request.dry_run {
            let now = Instant::now();
            rec.record("plan", now, true, plan.lines().join("\n"));
            return rec.outcome(
                ActionStatus::Planned,
                format!("dry run: {} planned, nothing was changed", plan.kind()),
            );
        }
        apply(&plan, settings, &rec).await
    }

    /// Waits for `key`'s lock. Refused, without waiting, when [`MAX_UNIT_LOCKS`] other units
    /// are busy.
    async fn lock(&self, key: &str) -> Result<UnitLock, Refusal> {
        let mutex = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !locks.contains_key(key) && locks.len() >= self.max_locks {
                // Entries nobody holds or waits for: left by an action whose deadline dropped
                // it while it waited (no UnitLock existed yet to remove them).
                locks.retain(|_, mutex| Arc::strong_count(mutex) > 1);
            }
            if !locks.contains_key(key) && locks.len() >= self.max_locks {
                let total = self.stats.lock_refusals.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    lock = %key,
                    busy = locks.len(),
                    refused_total = total,
                    "Refused an action: too many units have actions running or waiting."
                );
                return refuse(format!(
                    "{} units have actions running or waiting, the most this agent allows; `{key}` was not touched",
                    locks.len()
                ));
            }
            Arc::clone(locks.entry(key.to_owned()).or_default())
        };
        Ok(UnitLock {
            key: key.to_owned(),
            guard: Some(mutex.lock_owned().await),
            locks: Arc::clone(&self.locks),
        })
    }
}

impl ActionRunner for Actions {
    fn run(&self, request: ActionRequest) -> BoxFuture<'static, Outcome> {
        let this = self.clone();
        Box::pin(async move { this.run_request(request).await })
    }
}

/// Reads (never changes) what the plan of `request` needs.
async fn observe(
    request: &ActionRequest,
    kind: ActionKind,
    settings: &Settings,
    pools: Vec<Pool>,
) -> Result<Facts, ActError> {
    let mut facts = Facts {
        pools,
        ..Facts::default()
    };
    match kind {
        ActionKind::RestartUnit | ActionKind::StartUnit => {
            let systemd = Systemd::system().await?;
            facts.unit = Some(systemd.unit_state(&request.unit).await?);
        }
        ActionKind::FixSocketOwnership => {
            let path = Path::new(&request.socket_path);
            facts.socket = Some(socket::inspect(path)?);
            facts.canonical = std::fs::canonicalize(path).ok();
            let (owner, group) = fix_socket_ownership::wanted_names(request, &facts.pools);
            if let Some(owner) = owner
                && let Ok(Some(user)) = nix::unistd::User::from_name(&owner)
            {
                facts.users.insert(owner, user.uid.as_raw());
            }
            if let Some(group) = group
                && let Ok(Some(found)) = nix::unistd::Group::from_name(&group)
            {
                facts.groups.insert(group, found.gid.as_raw());
            }
            facts.worker = socket::identity(&settings.actions.worker_user).ok();
        }
        ActionKind::ReloadNginx => {
            // A host without systemd (or without its bus) reloads by signal: not an error.
            if let Ok(systemd) = Systemd::system().await {
                facts.nginx_unit = systemd.unit_state(&settings.actions.nginx_unit).await.ok();
            }
        }
        ActionKind::EditConfig => {
            facts.edit = Some(edit_config::observe(request, settings, &facts.pools).await);
        }
        ActionKind::Escalate | ActionKind::Unspecified => {}
    }
    Ok(facts)
}

/// The precheck step's output: the state the plan was made from.
fn describe_facts(kind: ActionKind, facts: &Facts) -> String {
    match kind {
        ActionKind::RestartUnit | ActionKind::StartUnit => facts
            .unit
            .as_ref()
            .map(unit::describe_state)
            .unwrap_or_default(),
        ActionKind::FixSocketOwnership => match &facts.socket {
            Some(info) => format!(
                "lstat {}: socket {}; canonical path is the same",
                info.path.display(),
                info.ownership()
            ),
            None => String::new(),
        },
        ActionKind::ReloadNginx => match &facts.nginx_unit {
            Some(state) => unit::describe_state(state),
            None => "nginx's unit: systemd did not answer".to_owned(),
        },
        ActionKind::EditConfig => edit_config::describe(facts),
        ActionKind::Escalate | ActionKind::Unspecified => String::new(),
    }
}

/// An [`Outcome`] as the JSON `gatemend-agent act` prints, with the time from the request to
/// its end (verified, refused or failed).
pub fn outcome_json(outcome: &Outcome, elapsed: Duration) -> serde_json::Value {
    serde_json::json!({
        "status": outcome.status.to_string(),
        "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "message": outcome.message,
        "steps": outcome.steps.iter().map(|s| serde_json::json!({
            "name": s.name,
            "ok": s.ok,
            "duration_ms": s.duration_ms,
            "output": s.output,
        })).collect::<Vec<_>>(),
    })
}

/// `gatemend-agent act`: run one action on this host now, as the link would.
#[derive(Debug, Clone, clap::Args)]
pub struct ActArgs {
    /// The agent config whose allow-list and `actions:` section apply.
    #[arg(long, default_value = "/etc/gatemend/agent.yaml")]
    pub config: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// restart_unit, start_unit, fix_socket_ownership, reload_nginx, edit_config or escalate.
    pub kind: ActionKind,
    /// The unit, for restart_unit / start_unit.
    #[arg(long, default_value = "")]
    pub unit: String,
    /// The socket path: the one to fix, or for restart/start the one that must accept.
    #[arg(long, default_value = "")]
    pub socket: String,
    /// fix_socket_ownership: owner, group and mode (octal, `0660`); each must be the pool's or
    /// listed in the config's `actions.socket_ownership`, else the request is refused.
    #[arg(long, default_value = "")]
    pub owner: String,
    #[arg(long, default_value = "")]
    pub group: String,
    #[arg(long, default_value = "")]
    pub mode: String,
    /// The whole action's deadline in milliseconds (0: the config's default; at most
    /// `actions.max_deadline_ms`).
    #[arg(long, default_value_t = 0)]
    pub deadline_ms: u32,
    /// How long verification may wait, in milliseconds (0: the config's default).
    #[arg(long, default_value_t = 0)]
    pub verify_timeout_ms: u32,
    /// edit_config: the edit, as JSON: the `edit` object `gatemend-agent diagnose --json`
    /// prints (kind, file, block, block_outer, directive, old_value, new_value, file_sha256,
    /// diff, why).
    #[arg(long, value_parser = edit_config::parse_edit_json)]
    pub edit: Option<gatemend_proto::v1::ConfigEdit>,
}

impl ActArgs {
    /// The request the link would have received.
    pub fn request(&self, action_id: String) -> ActionRequest {
        ActionRequest {
            action_id,
            finding_id: String::new(),
            kind: self.kind as i32,
            unit: self.unit.clone(),
            socket_path: self.socket.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
            mode: self.mode.clone(),
            dry_run: self.dry_run,
            deadline_ms: self.deadline_ms,
            verify_timeout_ms: self.verify_timeout_ms,
            policy: "gatemend-agent act".to_owned(),
            edit: self.edit.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn actions(max_locks: usize) -> Actions {
        Actions::with_max_locks(
            Settings {
                allowed: ActionKind::ALL.to_vec(),
                actions: ActionsConfig::default(),
                root: PathBuf::from("/nonexistent"),
                state_dir: PathBuf::from("/nonexistent"),
            },
            max_locks,
        )
    }

    #[tokio::test]
    async fn a_units_lock_leaves_the_map_once_nobody_holds_or_waits_for_it() {
        let actions = actions(8);
        let held = actions.lock("php8.2-fpm.service").await.unwrap();
        assert_eq!(actions.busy_units(), 1);
        // A second action on the same unit waits behind the first.
        assert!(actions.lock("php8.2-fpm.service").now_or_never().is_none());
        drop(held);
        assert_eq!(actions.busy_units(), 0);
        for i in 0..100 {
            drop(actions.lock(&format!("php{i}-fpm.service")).await.unwrap());
        }
        assert_eq!(actions.busy_units(), 0, "a hundred units came and went");
    }

    #[tokio::test]
    async fn more_busy_units_than_the_cap_are_refused_and_counted() {
        let actions = actions(2);
        let a = actions.lock("a.service").await.unwrap();
        let _b = actions.lock("b.service").await.unwrap();
        let refused = actions
            .lock("c.service")
            .now_or_never()
            .expect("a refusal does not wait")
            .err()
            .expect("refused");
        assert!(refused.0.contains("2 units have actions"), "{refused}");
        assert_eq!(actions.stats().lock_refusals.load(Ordering::Relaxed), 1);
        assert_eq!(actions.busy_units(), 2);
        // A unit already in the map may still be waited for.
        assert!(actions.lock("a.service").now_or_never().is_none());
        drop(a);
        assert!(actions.lock("c.service").await.is_ok());
    }

    #[tokio::test]
    async fn an_entry_a_dropped_waiter_left_behind_is_swept_when_the_map_is_full() {
        let actions = actions(1);
        let held = actions.lock("a.service").await.unwrap();
        // A waiter whose deadline drops it after the holder let go: the holder saw the
        // waiter's reference and left the entry; the waiter had no UnitLock to remove it.
        let mut waiter = Box::pin(actions.lock("a.service"));
        assert!((&mut waiter).now_or_never().is_none());
        drop(held);
        drop(waiter);
        assert_eq!(actions.busy_units(), 1);
        let b = actions.lock("b.service").await;
        assert!(b.is_ok(), "the idle entry was swept");
        assert_eq!(actions.stats().lock_refusals.load(Ordering::Relaxed), 0);
    }
}
