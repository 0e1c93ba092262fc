//! The fleet state in the database (SQLite for one controller, PostgreSQL shared by several),
//! so that the guards count over the whole fleet whichever controller a host talks to, and a
//! restarted controller remembers what it did.
//!
//! Each controller keeps the state in memory ([`FleetState`]) as a cache of the tables and
//! decides in batches, each one a [`Session`]:
//! 1. [`StateDb::begin`]: on PostgreSQL, opens a transaction and locks the `fleet_meta` row
//!    (`SELECT ... FOR UPDATE`): every other controller's batch waits until this one commits,
//!    so two controllers never both see one free slot of `max_concurrent`. Then it brings the
//!    cache up to date: the hosts written since the version it last read, and the small tables
//!    (in-flight actions, storms, controllers) whole when anything changed.
//! 2. The dispatcher decides on the cache and applies the transitions.
//! 3. [`StateDb::commit`]: writes what changed ([`FleetState::take_changes`]) under a new
//!    version and commits. Only then may the batch's actions be sent.
//!
//! On SQLite there is one controller per file, and a write transaction may not stay open while
//! the audit log (the same file) is appended to: `begin` reads without a lock, and `commit`
//! takes the write lock (`BEGIN IMMEDIATE`) and checks that the version is still the one read;
//! if another process wrote meanwhile, the batch fails as a conflict and is decided again.
//!
//! A failure anywhere (the database lost, a conflict) leaves the cache unknown: the next
//! `begin` reloads it whole. No locking of our own beyond the database's: no consensus, no
//! leases.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, SqlSafeStr, Transaction};

use crate::audit::{Backend, placeholders};
use crate::decide::{FleetData, FleetState, HostState, InFlight, StormEpisode, UnixMs};

const SCHEMA_V1: &str = include_str!("state_db.sql");

/// How long a batch waits for a connection before it takes the database for lost. Waiting for
/// the fleet lock itself has no limit: another controller holds it for one batch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateDbError {
    #[error("the fleet state database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the fleet state database: creating the tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the fleet state database: {what} is not valid: {why}")]
    Corrupt { what: String, why: String },
    #[error("the fleet state database did not answer within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout,
    #[error(
        "the fleet state changed under this controller (version {read} read, {found} found): \
         another process writes the same SQLite file"
    )]
    Conflict { read: i64, found: i64 },
}

/// The tables. One per dispatcher.
#[derive(Debug)]
pub struct StateDb {
    pool: AnyPool,
    backend: Backend,
    /// The version the cache reflects; `None` when it must be reloaded whole.
    synced: Option<i64>,
}

/// One batch of decisions, between [`StateDb::begin`] and [`StateDb::commit`].
#[derive(Debug)]
pub struct Session {
    /// PostgreSQL: the transaction holding the fleet lock. SQLite: none until commit.
    tx: Option<Transaction<'static, Any>>,
    /// The version read at begin.
    version: i64,
}

impl Session {
    /// The transaction holding the fleet lock (PostgreSQL), for writes that must commit with
    /// the batch's decisions.
    pub fn connection(&mut self) -> Option<&mut sqlx::AnyConnection> {
        self.tx.as_deref_mut()
    }
}

impl StateDb {
    /// Uses the audit log's database (its pool), creating the tables if missing.
    pub async fn open(pool: AnyPool, backend: Backend) -> Result<StateDb, StateDbError> {
        let mut migrator = Migrator::with_migrations(vec![Migration::new(
            1,
            "fleet state".into(),
            MigrationType::Simple,
            AssertSqlSafe(SCHEMA_V1).into_sql_str(),
            false,
        )]);
        migrator.dangerous_set_table_name("fleet_migrations");
        migrator.run(&pool).await?;
        Ok(StateDb {
            pool,
            backend,
            synced: None,
        })
    }

    /// Starts a batch: takes the fleet lock (PostgreSQL) and brings `state` up to date.
    pub async fn begin(&mut self, state: &mut FleetState) -> Result<Session, StateDbError> {
        let mut session = Session {
            tx: None,
            version: 0,
        };
        let result = self.sync(&mut session, state).await;
        if result.is_err() {
            self.synced = None;
        }
        result.map(|()| session)
    }

    /// The cache is not to be trusted (the batch that changed it was not committed): the next
    /// `begin` reloads it whole.
    pub fn forget_cache(&mut self) {
        self.synced = None;
    }

    async fn sync(
        &mut self,
        session: &mut Session,
        state: &mut FleetState,
    ) -> Result<(), StateDbError> {
        let version: i64 = match self.backend {
            Backend::Postgres => {
                let mut tx = tokio::time::timeout(CONNECT_TIMEOUT, self.pool.begin_with("BEGIN"))
                    .await
                    .map_err(|_| StateDbError::Timeout)??;
                let row = sqlx::query("SELECT version FROM fleet_meta WHERE id = 1 FOR UPDATE")
                    .fetch_one(&mut *tx)
                    .await?;
                session.tx = Some(tx);
                row.try_get(0)?
            }
            Backend::Sqlite => tokio::time::timeout(
                CONNECT_TIMEOUT,
                sqlx::query("SELECT version FROM fleet_meta WHERE id = 1").fetch_one(&self.pool),
            )
            .await
            .map_err(|_| StateDbError::Timeout)??
            .try_get(0)?,
        };
        session.version = version;
        if self.synced == Some(version) {
            return Ok(());
        }
        let since = self.synced.unwrap_or(-1);
        let hosts = self
            .fetch(
                session,
                "SELECT name, state FROM fleet_hosts WHERE version > $1",
                Some(since),
            )
            .await?;
        let in_flight = self
            .fetch(session, "SELECT id, action FROM fleet_in_flight", None)
            .await?;
        let storms = self
            .fetch(session, "SELECT cause, episode FROM fleet_storms", None)
            .await?;
        let controllers = self
            .fetch(
                session,
                "SELECT id, heartbeat_at FROM fleet_controllers",
                None,
            )
            .await?;
        let in_flight: BTreeMap<String, InFlight> = decode_all(&in_flight, "in-flight action")?;
        let storms = decode_all(&storms, "storm episode")?
            .into_iter()
            .map(|(cause, episode): (String, StormEpisode)| {
                cause
                    .parse()
                    .map(|cause| (cause, episode))
                    .map_err(|_| StateDbError::Corrupt {
                        what: format!("storm of cause {cause:?}"),
                        why: "not a cause id".into(),
                    })
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let controllers = controllers
            .iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
            .collect::<Result<BTreeMap<String, UnixMs>, sqlx::Error>>()?;
        let hosts: BTreeMap<String, HostState> = decode_all(&hosts, "host")?;
        if self.synced.is_none() {
            // Whole: whatever the cache held is forgotten.
            *state = FleetState::from_data(FleetData {
                hosts: hosts.into_iter().collect(),
                in_flight,
                storms,
                controllers,
            });
        } else {
            for (name, host) in hosts {
                state.set_host(&name, host);
            }
            state.set_in_flight(in_flight);
            state.set_storms(storms);
            state.set_controllers(controllers);
        }
        // What was read is not a change of ours.
        state.take_changes();
        self.synced = Some(version);
        Ok(())
    }

    async fn fetch(
        &self,
        session: &mut Session,
        sql: &'static str,
        bind: Option<i64>,
    ) -> Result<Vec<AnyRow>, StateDbError> {
        let mut query = sqlx::query(sql);
        if let Some(value) = bind {
            query = query.bind(value);
        }
        let rows = match &mut session.tx {
            Some(tx) => query.fetch_all(&mut **tx).await?,
            None => query.fetch_all(&self.pool).await?,
        };
        Ok(rows)
    }

    /// Ends a batch: writes what changed in `state` and commits. When it fails, nothing of the
    /// batch is in the database and the cache is reloaded at the next `begin`.
    pub async fn commit(
        &mut self,
        session: Session,
        state: &mut FleetState,
    ) -> Result<(), StateDbError> {
        let changes = state.take_changes();
        let result = self.write(session, state, &changes).await;
        if result.is_err() {
            self.synced = None;
        }
        result
    }

    async fn write(
        &mut self,
        session: Session,
        state: &FleetState,
        changes: &crate::decide::Changes,
    ) -> Result<(), StateDbError> {
        let unchanged = changes.hosts.is_empty()
            && !changes.in_flight
            && !changes.storms
            && !changes.controllers;
        let mut tx = match session.tx {
            Some(tx) if unchanged => {
                tx.rollback().await?;
                return Ok(());
            }
            Some(tx) => tx,
            None if unchanged => return Ok(()),
            None => {
                let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                let found: i64 = sqlx::query("SELECT version FROM fleet_meta WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                if found != session.version {
                    return Err(StateDbError::Conflict {
                        read: session.version,
                        found,
                    });
                }
                tx
            }
        };
        let version = session.version + 1;
        let data = state.data();
        let hosts = changes
            .hosts
            .iter()
            .filter_map(|name| Some((name, data.hosts.get(name)?)))
            .map(|(name, host)| Ok((name.clone(), encode(host)?)))
            .collect::<Result<Vec<_>, StateDbError>>()?;
        // Many rows per statement: one round trip per chunk, not per host.
        for chunk in hosts.chunks(UPSERT_CHUNK) {
            let mut query = sqlx::query(AssertSqlSafe(upsert_hosts_sql(chunk.len())));
            for (name, state) in chunk {
                query = query.bind(name.clone()).bind(version).bind(state.clone());
            }
            query.execute(&mut *tx).await?;
        }
        if changes.in_flight {
            let rows = data
                .in_flight
                .iter()
                .map(|(id, action)| Ok((id.clone(), encode(action)?)))
                .collect::<Result<Vec<_>, StateDbError>>()?;
            replace_rows(&mut tx, "fleet_in_flight", "id, action", rows).await?;
        }
        if changes.storms {
            let rows = data
                .storms
                .iter()
                .map(|(cause, episode)| Ok((cause.to_string(), encode(episode)?)))
                .collect::<Result<Vec<_>, StateDbError>>()?;
            replace_rows(&mut tx, "fleet_storms", "cause, episode", rows).await?;
        }
        if changes.controllers {
            let rows = data
                .controllers
                .iter()
                .map(|(id, at)| (id.clone(), *at))
                .collect();
            replace_rows(&mut tx, "fleet_controllers", "id, heartbeat_at", rows).await?;
        }
        sqlx::query("UPDATE fleet_meta SET version = $1 WHERE id = 1")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.synced = Some(version);
        Ok(())
    }
}

/// Host rows per upsert statement (3 parameters each).
const UPSERT_CHUNK: usize = 512;

/// Inserts or replaces `rows` hosts.
fn upsert_hosts_sql(rows: usize) -> String {
    format!(
        "INSERT INTO fleet_hosts (name, version, state) VALUES {} \
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, state = excluded.state",
        placeholders(rows, 3)
    )
}

/// Replaces the rows of one of the small tables whole: (key, value) into `columns`.
async fn replace_rows<V>(
    tx: &mut sqlx::AnyConnection,
    table: &'static str,
    columns: &'static str,
    rows: Vec<(String, V)>,
) -> Result<(), sqlx::Error>
where
    V: for<'q> sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send + 'static,
{
    sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
        .execute(&mut *tx)
        .await?;
    let insert = format!("INSERT INTO {table} ({columns}) VALUES ($1, $2)");
    for (key, value) in rows {
        sqlx::query(AssertSqlSafe(insert.clone()))
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StateDbError> {
    serde_json::to_string(value).map_err(|e| StateDbError::Corrupt {
        what: "a state row being written".into(),
        why: e.to_string(),
    })
}

/// Decodes (key, JSON) rows.
fn decode_all<T: serde::de::DeserializeOwned>(
    rows: &[AnyRow],
    what: &str,
) -> Result<BTreeMap<String, T>, StateDbError> {
    rows.iter()
        .map(|row| {
            let key: String = row.try_get(0)?;
            let text: String = row.try_get(1)?;
            let value = serde_json::from_str(&text).map_err(|e| StateDbError::Corrupt {
                what: format!("{what} {key:?}"),
                why: e.to_string(),
            })?;
            Ok((key, value))
        })
        .collect()
}
