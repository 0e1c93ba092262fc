//! systemd over D-Bus (zbus): unit state, and the manager calls the actions are built on.
//!
//! This is the one module that speaks to systemd. It talks to the system bus of the host it
//! runs on, or to any bus address (the testbed reaches a host's bus through
//! `/proc/PID/root/run/dbus/system_bus_socket`).

use futures_util::StreamExt;
use serde::Serialize;
use zbus::{Connection, OwnedObjectPath, proxy};

use super::ProbeError;

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// Loads the unit if needed and returns its object path (works for inactive units too).
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queues a restart job for the unit; returns the job's object path.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queues a start job for the unit; returns the job's object path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queues a reload job for the unit; returns the job's object path.
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Clears the unit's failed state and start-limit counter.
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    /// Asks systemd to emit job and unit signals to this client.
    fn subscribe(&self) -> zbus::Result<()>;
    /// A job finished: `result` is done, canceled, timeout, failed, dependency or skipped.
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    /// 128 random bits, new each time the unit really starts (empty when it never ran).
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> zbus::Result<Vec<u8>>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitState {
    /// The unit name, e.g. `php8.2-fpm.service`.
    pub name: String,
    /// `loaded`, `not-found`, `masked`, ...
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, ...
    pub active_state: String,
    /// `running`, `dead`, `exited`, ...
    pub sub_state: String,
    /// Service units only: `success`, `exit-code`, `signal`, `start-limit-hit`, ...
    pub result: Option<String>,
    /// Service units only: how often systemd restarted it automatically.
    pub n_restarts: Option<u32>,
    /// Service units only: the main process, 0 when none runs.
    pub main_pid: Option<u32>,
}

/// A connection to one host's systemd.
#[derive(Debug, Clone)]
pub struct Systemd {
    connection: Connection,
}

impl Systemd {
    /// Connects to the system bus of the host this process runs on.
    pub async fn system() -> Result<Self, ProbeError> {
        let connection = Connection::system()
            .await
            .map_err(|source| ProbeError::Dbus {
                call: "connect to the system bus".into(),
                source,
            })?;
        Ok(Self { connection })
    }

    /// Connects to the bus at a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`.
    pub async fn at_address(address: &str) -> Result<Self, ProbeError> {
        let dbus = |source| ProbeError::Dbus {
            call: format!("connect to {address}"),
            source,
        };
        let connection = zbus::connection::Builder::address(address)
            .build()
            .await
            .map_err(dbus)?;
        Ok(Self { connection })
    }

    /// The manager proxy, for the calls actions make.
    pub async fn manager(&self) -> Result<ManagerProxy<'static>, ProbeError> {
        ManagerProxy::new(&self.connection)
            .await
            .map_err(|source| ProbeError::Dbus {
                call: "Manager proxy".into(),
                source,
            })
    }

    /// The unit's current InvocationID as hex (empty when it never ran). A start job that
    /// failed without changing it never ran the unit: systemd refused it up front (the start
    /// limit), which the unit's `Result` does not always say.
    pub async fn invocation_id(&self, name: &str) -> Result<String, ProbeError> {
        let (_, unit) = self.unit(name).await?;
        let id = unit
            .invocation_id()
            .await
            .map_err(|e| dbus(name, "Get InvocationID", e))?;
        Ok(id.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Loads the unit (also an inactive one) and builds the proxy of its object.
    async fn unit(&self, name: &str) -> Result<(OwnedObjectPath, UnitProxy<'static>), ProbeError> {
        let path = self
            .manager()
            .await?
            .load_unit(name)
            .await
            .map_err(|e| dbus(name, "LoadUnit", e))?;
        let unit = UnitProxy::builder(&self.connection)
            .path(path.clone())
            .build()
            .await
            .map_err(|e| dbus(name, "Unit proxy", e))?;
        Ok((path, unit))
    }

    /// A stream that yields a unit's name each time systemd reports a change of its properties
    /// (ActiveState, SubState, Result, ...: `PropertiesChanged` on the unit's object), so a
    /// unit going down or coming back is an event, not something the next poll finds.
    pub async fn unit_changes(
        &self,
        units: &[String],
    ) -> Result<futures_util::stream::BoxStream<'static, String>, ProbeError> {
        use futures_util::StreamExt;
        let manager = self.manager().await?;
        // systemd emits unit signals only to clients that subscribed.
        manager
            .subscribe()
            .await
            .map_err(|source| ProbeError::Dbus {
                call: "Subscribe".into(),
                source,
            })?;
        let mut streams = Vec::with_capacity(units.len());
        for name in units {
            let dbus = |call: &str, source| dbus(name, call, source);
            let path = manager
                .load_unit(name)
                .await
                .map_err(|e| dbus("LoadUnit", e))?;
            let properties = zbus::fdo::PropertiesProxy::builder(&self.connection)
                .destination("org.freedesktop.systemd1")
                .path(path)
                .build()
                .await
                .map_err(|e| dbus("Properties proxy", e))?;
            let changes = properties
                .receive_properties_changed()
                .await
                .map_err(|e| dbus("PropertiesChanged", e))?;
            let name = name.clone();
            streams.push(changes.map(move |_| name.clone()).boxed());
        }
        Ok(futures_util::stream::select_all(streams).boxed())
    }

    /// Reads a unit's state. A unit that does not exist is reported with `load_state`
    /// `not-found`, as systemd itself does.
    pub async fn unit_state(&self, name: &str) -> Result<UnitState, ProbeError> {
        let dbus = |call: &str, source| dbus(name, call, source);
        let (path, unit) = self.unit(name).await?;
        let mut state = UnitState {
            name: name.to_owned(),
            load_state: unit
                .load_state()
                .await
                .map_err(|e| dbus("Get LoadState", e))?,
            active_state: unit
                .active_state()
                .await
                .map_err(|e| dbus("Get ActiveState", e))?,
            sub_state: unit
                .sub_state()
                .await
                .map_err(|e| dbus("Get SubState", e))?,
            result: None,
            n_restarts: None,
            main_pid: None,
        };
        if name.ends_with(".service") {
            let service = ServiceProxy::builder(&self.connection)
                .path(path)
                .build()
                .await
                .map_err(|e| dbus("Service proxy", e))?;
            state.result = Some(service.result().await.map_err(|e| dbus("Get Result", e))?);
            state.n_restarts = Some(
                service
                    .n_restarts()
                    .await
                    .map_err(|e| dbus("Get NRestarts", e))?,
            );
            state.main_pid = Some(
                service
                    .main_pid()
                    .await
                    .map_err(|e| dbus("Get MainPID", e))?,
            );
        }
        Ok(state)
    }
}

/// A manager call that queues a job on a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCall {
    /// `RestartUnit(unit, "replace")`.
    Restart,
    /// `StartUnit(unit, "replace")`.
    Start,
    /// `ReloadUnit(unit, "replace")`.
    Reload,
}

impl JobCall {
    /// The manager method's name, as steps and errors show it.
    pub fn method(self) -> &'static str {
        match self {
            JobCall::Restart => "RestartUnit",
            JobCall::Start => "StartUnit",
            JobCall::Reload => "ReloadUnit",
        }
    }
}

/// A job that ran to its JobRemoved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// The job's object path, e.g. `/org/freedesktop/systemd1/job/1234`.
    pub job: String,
    /// JobRemoved's result: `done`, `canceled`, `timeout`, `failed`, `dependency` or `skipped`.
    pub result: String,
}

impl JobRun {
    /// Whether the job did what it was queued for.
    pub fn done(&self) -> bool {
        self.result == "done"
    }
}

/// Jobs queued on one subscription to JobRemoved, so that every job's signal is matched before
/// the job exists. Several jobs may run on one watch (a start after a reset of the start
/// limit); systemd refuses a second `Subscribe()` from the same client on some versions.
#[derive(Debug)]
pub struct JobWatch {
    manager: ManagerProxy<'static>,
    removed: JobRemovedStream,
}

impl Systemd {
    /// `Subscribe()` and a match rule for JobRemoved, before any job is queued: systemd emits
    /// job signals only to subscribed clients, and a job may end before its call returns.
    /// `note` is told each step as it happens, so a deadline that cuts this short still has
    /// them.
    pub async fn watch_jobs(
        &self,
        note: &mut (dyn FnMut(String) + Send),
    ) -> Result<JobWatch, ProbeError> {
        let manager = self.manager().await?;
        manager
            .subscribe()
            .await
            .map_err(|source| ProbeError::Dbus {
                call: "Subscribe()".into(),
                source,
            })?;
        let removed = manager
            .receive_job_removed()
            .await
            .map_err(|source| ProbeError::Dbus {
                call: "AddMatch(JobRemoved)".into(),
                source,
            })?;
        note("Subscribe() -> ok; listening for JobRemoved".into());
        Ok(JobWatch { manager, removed })
    }

    /// Subscribes, queues `call` on `unit` in mode `replace`, and waits for that job's
    /// JobRemoved. The action's deadline bounds the wait. `note` is told each step as it
    /// happens.
    pub async fn run_job(
        &self,
        unit: &str,
        call: JobCall,
        note: &mut (dyn FnMut(String) + Send),
    ) -> Result<JobRun, ProbeError> {
        self.watch_jobs(note).await?.run(unit, call, note).await
    }
}

impl JobWatch {
    /// Queues `call` on `unit` in mode `replace` and waits for that job's JobRemoved.
    pub async fn run(
        &mut self,
        unit: &str,
        call: JobCall,
        note: &mut (dyn FnMut(String) + Send),
    ) -> Result<JobRun, ProbeError> {
        let method = call.method();
        let job = match call {
            JobCall::Restart => self.manager.restart_unit(unit, "replace").await,
            JobCall::Start => self.manager.start_unit(unit, "replace").await,
            JobCall::Reload => self.manager.reload_unit(unit, "replace").await,
        }
        .map_err(|source| ProbeError::Dbus {
            call: format!("{method}({unit}, replace)"),
            source,
        })?;
        note(format!(
            "{method}(\"{unit}\", \"replace\") -> {}",
            job.as_str()
        ));
        let result = self.wait(&job).await?;
        note(format!("JobRemoved({}) result={result}", job.as_str()));
        Ok(JobRun {
            job: job.as_str().to_owned(),
            result,
        })
    }

    /// `ResetFailedUnit(unit)`: clears the failed state and the start-limit counter.
    pub async fn reset_failed(&self, unit: &str) -> Result<(), ProbeError> {
        self.manager
            .reset_failed_unit(unit)
            .await
            .map_err(|e| dbus(unit, "ResetFailedUnit", e))
    }

    /// The result of `job` from its JobRemoved signal; other jobs' signals are skipped.
    async fn wait(&mut self, job: &OwnedObjectPath) -> Result<String, ProbeError> {
        while let Some(signal) = self.removed.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.job == *job {
                return Ok(args.result);
            }
        }
        Err(ProbeError::SignalStreamEnded {
            job: job.as_str().to_owned(),
        })
    }
}

/// A D-Bus failure, naming the call and the unit it was about.
fn dbus(unit: &str, call: &str, source: zbus::Error) -> ProbeError {
    ProbeError::Dbus {
        call: format!("{call}({unit})"),
        source,
    }
}
