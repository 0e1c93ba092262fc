//! systemd over D-Bus (zbus): unit state, and the manager calls the actions are built on.
//!
//! This is the one module that speaks to systemd. It talks to the system bus of the host it
//! runs on, or to any bus address (the testbed reaches a host's bus through
//! `/proc/PID/root/run/dbus/system_bus_socket`).

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

/// A D-Bus failure, naming the call and the unit it was about.
fn dbus(unit: &str, call: &str, source: zbus::Error) -> ProbeError {
    ProbeError::Dbus {
        call: format!("{call}({unit})"),
        source,
    }
}
