//! The store: one sqlx code path (the `Any` driver) over SQLite and PostgreSQL. The few places the
//! two SQL dialects differ are the methods of `Backend`, and nowhere else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use futures_util::stream::BoxStream;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row, SqlSafeStr};
use tracing::{debug, info};

use super::error::AuditError;
use super::hash::{self, Fields};
use super::record::{Filter, Kind, NewRecord, Record};
use super::verify::{ChainCheck, StoredRow, Verification};
use super::writer;

/// The tables, created at open (embedded; tracked in `audit_migrations`, apart from any other
/// component's migrations in the same database). The same DDL is valid in both dialects.
const SCHEMA_V1: &str = include_str!("schema_v1.sql");

/// The columns of `audit_log`, in the order `row_of` reads them.
const COLUMNS: &str =
    "seq, at, kind, host, incident, actor, policy, policy_digest, body, prev_hash, hash";

/// How long a writer waits for the SQLite write lock before the append fails.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;

/// Which database a URL names. Every SQL dialect difference is one method here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded file (`sqlite://...`), the default store for one controller.
    Sqlite,
    /// A server (`postgres://...`), shared by several controllers.
    Postgres,
}

impl Backend {
    /// Recognizes the URL's scheme.
    pub fn of_url(url: &str) -> Result<Backend, AuditError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(AuditError::UnsupportedUrl { url: redact(url) })
        }
    }

    /// Opens an append transaction. SQLite: `BEGIN IMMEDIATE` takes the database's write lock at
    /// once, so two writers never both read the same head (a deferred `BEGIN` would let both
    /// read it and fail one of them on upgrade). PostgreSQL: a plain transaction; the head row
    /// is locked by `lock_head`.
    fn begin_append(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Reads the chain head inside the append transaction, locked against other writers.
    /// PostgreSQL: `FOR UPDATE` row lock, held to commit; another controller's append waits on
    /// it, then reads the head it committed (READ COMMITTED re-reads the locked row). SQLite has
    /// no `FOR UPDATE` and needs none: `BEGIN IMMEDIATE` already excludes every other writer.
    fn lock_head(self) -> &'static str {
        match self {
            Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        }
    }

    /// Opens a read transaction that sees one snapshot (the head and the rows agree while
    /// others append). SQLite in WAL mode: a deferred transaction's first read fixes its
    /// snapshot. PostgreSQL: REPEATABLE READ.
    fn begin_snapshot(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }
}

/// The audit log. Cheap to clone (a connection pool); share one between tasks.
#[derive(Debug, Clone)]
pub struct Audit {
    pool: AnyPool,
    backend: Backend,
    url: String,
    /// This process's appends go through one writer task, which commits whatever is queued
    /// together (group commit: one transaction and one fsync for many appends). It is not what
    /// keeps the chain whole: the database lock in `write_group` does that, across processes
    /// too.
    writer: writer::Handle,
}

impl Audit {
    /// Opens the log at `url`, creating the SQLite file (not its directory) and the tables if
    /// missing. `sqlite:///var/lib/gatemend/audit.db` or `postgres://user@host:port/db`.
    pub async fn open(url: &str) -> Result<Audit, AuditError> {
        Audit::connect(url, true).await
    }

    /// Opens an existing log; a SQLite file that does not exist is `AuditError::Missing`
    /// (what the read-only CLI commands want: not to create an empty log by a typo).
    pub async fn open_existing(url: &str) -> Result<Audit, AuditError> {
        Audit::connect(url, false).await
    }

    async fn connect(url: &str, create: bool) -> Result<Audit, AuditError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let shown = redact(url);
        let mut connect_url = url.to_owned();
        if backend == Backend::Sqlite {
            let path = sqlite_path(url);
            if !create && !path.exists() {
                return Err(AuditError::Missing { path });
            }
            // sqlx opens an existing file read-write by default; `rwc` also creates it.
            if create && !url.contains("mode=") {
                connect_url.push(if url.contains('?') { '&' } else { '?' });
                connect_url.push_str("mode=rwc");
            }
        }
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                // One writer at a time anyway; a few more for concurrent readers.
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers do not block the writer. synchronous=FULL: the WAL is
                        // fsynced at every commit, so an append is on disk when it returns —
                        // the controller writes the record before it dispatches the action.
                        conn.execute(AssertSqlSafe(format!(
                            "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"
                        )))
                        .await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                    }
                    Ok(())
                })
            });
        let pool = options
            .connect(&connect_url)
            .await
            .map_err(|source| AuditError::Open {
                url: shown.clone(),
                source,
            })?;
        let mut migrator = Migrator::with_migrations(vec![Migration::new(
            1,
            "audit log and chain head".into(),
            MigrationType::Simple,
            AssertSqlSafe(SCHEMA_V1).into_sql_str(),
            false,
        )]);
        // Our own table, so the audit schema's versions never collide with another
        // component's migrations in a shared PostgreSQL database. sqlx takes an advisory lock
        // on PostgreSQL while migrating, so controllers starting together do not race.
        migrator.dangerous_set_table_name("audit_migrations");
        migrator
            .run(&pool)
            .await
            .map_err(|source| AuditError::Migrate {
                url: shown.clone(),
                source,
            })?;
        info!(url = %shown, backend = ?backend, "Opened the audit log.");
        Ok(Audit {
            backend,
            url: shown,
            writer: writer::spawn(pool.clone(), backend),
            pool,
        })
    }

    /// The database this log is in (`Backend::Sqlite` or `Backend::Postgres`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL it was opened with, password removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection pool, for the other tables that live beside the log (approvals).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Appends a record and returns it with its `seq` and hashes. Durable when it returns
    /// (committed; SQLite fsyncs with synchronous=FULL, PostgreSQL with its default
    /// synchronous_commit=on). Safe from any number of tasks and processes: the chain head is
    /// locked for the whole read-head / insert / move-head transaction. Appends that are
    /// queued at the same moment in this process are committed together (one fsync); each
    /// still returns only once its record is committed. Once queued, a record is written even
    /// if the caller stops waiting.
    pub async fn append(&self, new: NewRecord) -> Result<Record, AuditError> {
        let kind = new.kind;
        let mut appended = self.append_many(vec![new]).await?;
        appended.pop().ok_or(AuditError::WriterGone { kind })
    }

    /// Appends several records consecutively in the chain, in one transaction: all or none are
    /// written. For a burst (a finding and its decision) and for bulk loads.
    pub async fn append_many(&self, batch: Vec<NewRecord>) -> Result<Vec<Record>, AuditError> {
        let Some(kind) = batch.first().map(|r| r.kind) else {
            return Ok(Vec::new());
        };
        self.writer.submit(kind, batch).await
    }
}

/// Rows per INSERT statement: 11 parameters each, far below both databases' limits.
const INSERT_CHUNK: usize = 256;

/// `INSERT INTO audit_log (...) VALUES (...), ...` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES {}",
        placeholders(rows, 11)
    )
}

/// `($1, $2), ($3, $4), ...`: `rows` rows of `columns` parameters, for a multi-row statement
/// (the same text in both dialects).
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends `batch` consecutively in one transaction that locks the chain head; all or nothing.
pub(super) async fn write_group(
    pool: &AnyPool,
    backend: Backend,
    batch: Vec<NewRecord>,
) -> Result<Vec<Record>, AuditError> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let kind = first.kind;
    let err = |source| AuditError::Append {
        kind,
        source: Arc::new(source),
    };
    let mut tx = pool.begin_with(backend.begin_append()).await.map_err(err)?;
    let head = sqlx::query(backend.lock_head())
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
    let Some(head) = head else {
        return Err(AuditError::NoHead);
    };
    let mut seq: i64 = head.try_get(0).map_err(err)?;
    let mut prev_hex: String = head.try_get(1).map_err(err)?;
    let Some(mut prev) = hash::parse_hex(&prev_hex) else {
        return Err(AuditError::Corrupt {
            seq,
            why: format!("the chain head's hash {prev_hex:?} is not 64 hex digits"),
        });
    };
    let mut appended = Vec::with_capacity(batch.len());
    let mut bodies = Vec::with_capacity(batch.len());
    for new in batch {
        seq += 1;
        let body = hash::canonical_json(&new.body);
        let fields = Fields {
            seq,
            at: new.at,
            kind: new.kind.as_str(),
            host: new.host.as_deref(),
            incident: new.incident.as_deref(),
            actor: &new.actor,
            policy: new.policy.as_deref(),
            policy_digest: new.policy_digest.as_deref(),
            body: &body,
        };
        let hash = hash::chain_hash(&prev, &fields);
        let hash_hex = hex::encode(hash);
        bodies.push(body);
        appended.push(Record {
            seq,
            at: new.at,
            kind: new.kind,
            host: new.host,
            incident: new.incident,
            actor: new.actor,
            policy: new.policy,
            policy_digest: new.policy_digest,
            body: new.body,
            prev_hash: std::mem::replace(&mut prev_hex, hash_hex.clone()),
            hash: hash_hex,
        });
        prev = hash;
    }
    // Many rows per INSERT: one round trip per chunk, not per record.
    for (records, bodies) in appended
        .chunks(INSERT_CHUNK)
        .zip(bodies.chunks(INSERT_CHUNK))
    {
        let err = |source| AuditError::Append {
            kind: records.first().map_or(kind, |r| r.kind),
            source: Arc::new(source),
        };
        let mut query = sqlx::query(AssertSqlSafe(insert_sql(records.len())));
        for (r, body) in records.iter().zip(bodies) {
            query = query
                .bind(r.seq)
                .bind(r.at)
                .bind(r.kind.as_str())
                .bind(r.host.clone())
                .bind(r.incident.clone())
                .bind(r.actor.clone())
                .bind(r.policy.clone())
                .bind(r.policy_digest.clone())
                .bind(body.clone())
                .bind(r.prev_hash.clone())
                .bind(r.hash.clone());
        }
        query.execute(&mut *tx).await.map_err(err)?;
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(prev_hex)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    debug!(seq, records = appended.len(), kind = %kind, "Appended audit records.");
    Ok(appended)
}

impl Audit {
    /// The record at `seq`, if there is one.
    pub async fn get(&self, seq: i64) -> Result<Option<Record>, AuditError> {
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| AuditError::Read {
                what: "one record",
                source,
            })?;
        row.map(|r| record_of(&r)).transpose()
    }

    /// The records matching `filter`, in `seq` order, collected.
    pub async fn query(&self, filter: &Filter) -> Result<Vec<Record>, AuditError> {
        self.records(filter).try_collect().await
    }

    /// The records matching `filter`, in `seq` order, streamed (for exports of any size).
    pub fn records(&self, filter: &Filter) -> BoxStream<'_, Result<Record, AuditError>> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
        // The SQL is built from fixed fragments only; every value is a bound parameter.
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if filter.host.is_some() {
            sql.push_str(&format!(" AND host = ${}", next()));
        }
        if filter.incident.is_some() {
            sql.push_str(&format!(" AND incident = ${}", next()));
        }
        if filter.since.is_some() {
            sql.push_str(&format!(" AND at >= ${}", next()));
        }
        if filter.until.is_some() {
            sql.push_str(&format!(" AND at < ${}", next()));
        }
        if filter.kind.is_some() {
            sql.push_str(&format!(" AND kind = ${}", next()));
        }
        sql.push_str(" ORDER BY seq");
        if filter.limit.is_some() {
            sql.push_str(&format!(" LIMIT ${}", next()));
        }
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(host) = &filter.host {
            query = query.bind(host.clone());
        }
        if let Some(incident) = &filter.incident {
            query = query.bind(incident.clone());
        }
        if let Some(since) = filter.since {
            query = query.bind(since);
        }
        if let Some(until) = filter.until {
            query = query.bind(until);
        }
        if let Some(kind) = filter.kind {
            query = query.bind(kind.as_str());
        }
        if let Some(limit) = filter.limit {
            query = query.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        Box::pin(
            query
                .fetch(&self.pool)
                .map_err(|source| AuditError::Read {
                    what: "records",
                    source,
                })
                .and_then(|row| async move { record_of(&row) }),
        )
    }

    /// Recomputes the whole chain from record 1, streaming the rows in `seq` order (memory does
    /// not grow with the log), inside one snapshot so concurrent appends do not disturb it.
    /// `Broken` names the first record that does not match: edited, deleted (the missing seq),
    /// reordered (seqs swapped), or the newest ones deleted (the head says more).
    pub async fn verify(&self) -> Result<Verification, AuditError> {
        let err = |source| AuditError::Read {
            what: "the chain",
            source,
        };
        let mut tx = self
            .pool
            .begin_with(self.backend.begin_snapshot())
            .await
            .map_err(err)?;
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?
            .ok_or(AuditError::NoHead)?;
        let head_seq: i64 = head.try_get(0).map_err(err)?;
        let head_hash: String = head.try_get(1).map_err(err)?;
        let mut check = ChainCheck::default();
        let outcome = {
            let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY seq");
            let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *tx);
            let mut broken = None;
            while let Some(row) = rows.try_next().await.map_err(err)? {
                let row = stored_row_of(&row).map_err(err)?;
                if let Err(b) = check.check(&row) {
                    broken = Some(b);
                    break;
                }
            }
            broken
        };
        // Read-only: rolling back releases the snapshot without writing anything.
        tx.rollback().await.map_err(err)?;
        Ok(match outcome {
            Some(broken) => Verification::Broken(broken),
            None => check.finish(head_seq, &head_hash),
        })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn stored_row_of(row: &AnyRow) -> Result<StoredRow, sqlx::Error> {
    Ok(StoredRow {
        seq: row.try_get(0)?,
        at: row.try_get(1)?,
        kind: row.try_get(2)?,
        host: row.try_get(3)?,
        incident: row.try_get(4)?,
        actor: row.try_get(5)?,
        policy: row.try_get(6)?,
        policy_digest: row.try_get(7)?,
        body: row.try_get(8)?,
        prev_hash: row.try_get(9)?,
        hash: row.try_get(10)?,
    })
}

fn record_of(row: &AnyRow) -> Result<Record, AuditError> {
    let stored = stored_row_of(row).map_err(|source| AuditError::Read {
        what: "a record's columns",
        source,
    })?;
    let kind = stored
        .kind
        .parse::<Kind>()
        .map_err(|e| AuditError::Corrupt {
            seq: stored.seq,
            why: e.to_string(),
        })?;
    let body = serde_json::from_str(&stored.body).map_err(|e| AuditError::Corrupt {
        seq: stored.seq,
        why: format!("its body is not JSON: {e}"),
    })?;
    Ok(Record {
        seq: stored.seq,
        at: stored.at,
        kind,
        host: stored.host,
        incident: stored.incident,
        actor: stored.actor,
        policy: stored.policy,
        policy_digest: stored.policy_digest,
        body,
        prev_hash: stored.prev_hash,
        hash: stored.hash,
    })
}

/// The file a `sqlite:` URL names: `sqlite:///abs/path`, `sqlite://rel/path`, `sqlite:path`,
/// without any `?options`.
pub fn sqlite_path(url: &str) -> PathBuf {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let rest = rest.split('?').next().unwrap_or(rest);
    PathBuf::from(rest)
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_parameter_row_after_row() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
        assert_eq!(placeholders(0, 4), "");
    }

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            Backend::of_url("sqlite:///var/lib/a.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::of_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::of_url("mysql://u@h/db").is_err());
        assert!(Backend::of_url("/var/lib/a.db").is_err());
    }

    #[test]
    fn sqlite_paths_drop_scheme_and_options() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/a.db"),
            PathBuf::from("/var/lib/a.db")
        );
        assert_eq!(sqlite_path("sqlite://a.db?mode=rw"), PathBuf::from("a.db"));
        assert_eq!(sqlite_path("sqlite:a.db"), PathBuf::from("a.db"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://gm:s3cret@db:5432/audit"),
            "postgres://gm:***@db:5432/audit"
        );
        assert_eq!(redact("postgres://gm@db/audit"), "postgres://gm@db/audit");
        assert_eq!(redact("sqlite:///a.db"), "sqlite:///a.db");
    }
}
