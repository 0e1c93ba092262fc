//! Approvals: a decision of `await_approval` becomes a pending approval with an expiry; an
//! operator approves or denies it (with a reason) through the API, the UI or the CLI, and an
//! approval is dispatched exactly once.
//!
//! The approvals live in the audit log's database (SQLite, or PostgreSQL shared by several
//! controllers), not in a controller's memory. Every decision is one conditional `UPDATE ...
//! WHERE state = 'pending' AND expires_at > now`: of two operators approving at the same
//! moment, through one controller or two, exactly one changes the row, and only that one is
//! handed to the dispatcher.
//!
//! An approval becomes dispatchable only once its audit record is written: approving moves it
//! `pending -> approving`, the caller appends the `approved` record, then [`Approvals::settle`]
//! moves it `approving -> approved` (or back to `pending` when the record could not be
//! written). The dispatcher only claims `approved` rows, so an approval the audit log does not
//! hold never runs.

mod error;

use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Row, SqlSafeStr};

pub use error::ApprovalError;

use crate::decide::{Finding, Time, UnixMs};

const SCHEMA_V1: &str = include_str!("schema_v1.sql");
const COLUMNS: &str = "id, host, incident, policy, policy_digest, actions, why, finding, \
                       created_at, expires_at, state, decided_by, reason, decided_at";

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    /// Approved by an operator, waiting for its audit record; not dispatched yet.
    Approving,
    Approved,
    Denied,
    Expired,
}

impl State {
    pub fn id(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approving => "approving",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
        }
    }

    fn parse(text: &str) -> State {
        match text {
            "approving" => State::Approving,
            "approved" => State::Approved,
            "denied" => State::Denied,
            "expired" => State::Expired,
            _ => State::Pending,
        }
    }
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Approval {
    /// Short and stable: derived from the finding revision and the policy.
    pub id: String,
    pub host: String,
    pub incident: String,
    pub policy: String,
    pub policy_digest: String,
    /// The policy's action ids, in order.
    pub actions: Vec<String>,
    /// What the operator is asked to approve, and why.
    pub why: String,
    /// The finding the decision was about.
    pub finding: Finding,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
    pub state: State,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub decided_at: Option<UnixMs>,
}

/// What a new approval asks.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub finding: Finding,
    /// The incident the finding belongs to (its timeline).
    pub incident: String,
    pub policy: String,
    pub policy_digest: String,
    pub actions: Vec<String>,
    pub why: String,
    pub expires_in: Duration,
}

/// The approvals table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Approvals {
    pool: AnyPool,
}

impl Approvals {
    /// Uses the audit log's database (its pool), creating the table if missing.
    pub async fn open(pool: AnyPool) -> Result<Approvals, ApprovalError> {
        let mut migrator = Migrator::with_migrations(vec![Migration::new(
            1,
            "approvals".into(),
            MigrationType::Simple,
            AssertSqlSafe(SCHEMA_V1).into_sql_str(),
            false,
        )]);
        migrator.dangerous_set_table_name("approvals_migrations");
        migrator.run(&pool).await?;
        Ok(Approvals { pool })
    }

    /// Records a pending approval; asking again for the same decision returns the one there.
    pub async fn request(&self, new: NewApproval, now: UnixMs) -> Result<Approval, ApprovalError> {
        let f = &new.finding;
        let id = approval_id(&f.host, &f.id, f.revision, &new.policy);
        let expires_at =
            now.saturating_add(i64::try_from(new.expires_in.as_millis()).unwrap_or(i64::MAX));
        let finding = serde_json::to_string(f).map_err(|source| ApprovalError::Finding {
            id: id.clone(),
            source,
        })?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', NULL, NULL, NULL) \
             ON CONFLICT (id) DO NOTHING"
        )))
        .bind(&id)
        .bind(&f.host)
        .bind(&new.incident)
        .bind(&new.policy)
        .bind(&new.policy_digest)
        .bind(new.actions.join(","))
        .bind(&new.why)
        .bind(finding)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        let held = self
            .get(&id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.clone()))?;
        // The id is short (typed by people), so it can collide: a row of another finding is
        // never handed back as this one's.
        if held.host != f.host || held.incident != new.incident || held.policy != new.policy {
            return Err(ApprovalError::Collision {
                id,
                host: held.host,
                incident: held.incident,
            });
        }
        Ok(held)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Approval>, ApprovalError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| approval_of(&r)).transpose()
    }

    /// Approvals in `state` (all when `None`), newest first.
    pub async fn list(&self, state: Option<State>) -> Result<Vec<Approval>, ApprovalError> {
        let rows = match state {
            Some(state) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM approvals WHERE state = $1 ORDER BY created_at DESC"
                )))
                .bind(state.id())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM approvals ORDER BY created_at DESC"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(approval_of).collect()
    }

    /// Approves a pending, unexpired approval. Exactly one of any number of concurrent calls
    /// succeeds; the others get `AlreadyDecided` (or `Expired`). The approval is `approving`:
    /// no controller dispatches it before [`Approvals::settle`] says its audit record is
    /// written.
    pub async fn approve(
        &self,
        id: &str,
        who: &str,
        reason: &str,
        now: UnixMs,
    ) -> Result<Approval, ApprovalError> {
        self.decide(id, State::Approving, who, reason, now).await
    }

    /// Ends an `approving` approval: `approved` (dispatchable) when its audit record was
    /// written, else `pending` again, so an operator can approve it once the log is back.
    pub async fn settle(&self, id: &str, audited: bool) -> Result<Approval, ApprovalError> {
        let changed = if audited {
            sqlx::query(
                "UPDATE approvals SET state = 'approved' WHERE id = $1 AND state = 'approving'",
            )
            .bind(id)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query(
                "UPDATE approvals SET state = 'pending', decided_by = NULL, reason = NULL, \
                 decided_at = NULL WHERE id = $1 AND state = 'approving'",
            )
            .bind(id)
            .execute(&self.pool)
            .await?
        }
        .rows_affected();
        let approval = self.must_get(id).await?;
        if changed == 1 {
            return Ok(approval);
        }
        Err(ApprovalError::AlreadyDecided {
            id: id.to_owned(),
            state: approval.state.id().to_owned(),
            by: approval.decided_by.unwrap_or_default(),
        })
    }

    /// Denies a pending, unexpired approval (same rules as [`Approvals::approve`]).
    pub async fn deny(
        &self,
        id: &str,
        who: &str,
        reason: &str,
        now: UnixMs,
    ) -> Result<Approval, ApprovalError> {
        self.decide(id, State::Denied, who, reason, now).await
    }

    async fn decide(
        &self,
        id: &str,
        to: State,
        who: &str,
        reason: &str,
        now: UnixMs,
    ) -> Result<Approval, ApprovalError> {
        if reason.trim().is_empty() {
            return Err(ApprovalError::NoReason);
        }
        let changed = sqlx::query(
            "UPDATE approvals SET state = $1, decided_by = $2, reason = $3, decided_at = $4 \
             WHERE id = $5 AND state = 'pending' AND expires_at > $6",
        )
        .bind(to.id())
        .bind(who)
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let approval = self.must_get(id).await?;
        if changed == 1 {
            return Ok(approval);
        }
        match approval.state {
            State::Pending | State::Expired => Err(ApprovalError::Expired {
                id: id.to_owned(),
                expired_at: Time(approval.expires_at).to_string(),
            }),
            state => Err(ApprovalError::AlreadyDecided {
                id: id.to_owned(),
                state: state.id().to_owned(),
                by: approval.decided_by.unwrap_or_default(),
            }),
        }
    }

    /// [`Approvals::get`], with a missing approval an error.
    async fn must_get(&self, id: &str) -> Result<Approval, ApprovalError> {
        self.get(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))
    }

    /// Approved approvals no controller has dispatched yet, oldest first.
    pub async fn undispatched(&self) -> Result<Vec<Approval>, ApprovalError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE state = 'approved' AND dispatched_at IS NULL \
             ORDER BY decided_at"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_of).collect()
    }

    /// Claims an approved approval for dispatch: true for exactly one caller, whichever
    /// controller it runs in.
    pub async fn claim(&self, id: &str, now: UnixMs) -> Result<bool, ApprovalError> {
        claim_on(&self.pool, id, now).await
    }

    /// [`Approvals::claim`] inside the caller's transaction (the dispatcher's batch on a
    /// shared database): the claim commits together with the dispatch it leads to, or not at
    /// all.
    pub async fn claim_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        now: UnixMs,
    ) -> Result<bool, ApprovalError> {
        claim_on(tx, id, now).await
    }

    /// Marks every pending approval past its expiry expired; returns them. An `approving`
    /// one (its controller died before it settled) expires the same way: never dispatched.
    pub async fn expire_due(&self, now: UnixMs) -> Result<Vec<Approval>, ApprovalError> {
        let due = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE state IN ('pending', 'approving') \
             AND expires_at <= $1"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::new();
        for row in &due {
            let approval = approval_of(row)?;
            let changed = sqlx::query(
                "UPDATE approvals SET state = 'expired', decided_at = $1 \
                 WHERE id = $2 AND state IN ('pending', 'approving')",
            )
            .bind(now)
            .bind(&approval.id)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if changed == 1 {
                expired.push(Approval {
                    state: State::Expired,
                    decided_at: Some(now),
                    ..approval
                });
            }
        }
        Ok(expired)
    }
}

/// 12 hex digits of SHA-256 over the host, the finding revision and the policy: short enough
/// to type.
fn approval_id(host: &str, finding: &str, revision: u64, policy: &str) -> String {
    use sha2::{Digest, Sha256};
    // The host is part of the key: one host's finding ids can never name another's approval.
    let digest = Sha256::digest(format!("{host}\n{finding}@{revision}/{policy}"));
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn approval_of(row: &sqlx::any::AnyRow) -> Result<Approval, ApprovalError> {
    let id: String = row.try_get(0)?;
    let finding: String = row.try_get(7)?;
    let finding = serde_json::from_str(&finding).map_err(|source| ApprovalError::Finding {
        id: id.clone(),
        source,
    })?;
    let actions: String = row.try_get(5)?;
    let state: String = row.try_get(10)?;
    Ok(Approval {
        id,
        host: row.try_get(1)?,
        incident: row.try_get(2)?,
        policy: row.try_get(3)?,
        policy_digest: row.try_get(4)?,
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        why: row.try_get(6)?,
        finding,
        created_at: row.try_get(8)?,
        expires_at: row.try_get(9)?,
        state: State::parse(&state),
        decided_by: row.try_get(11)?,
        reason: row.try_get(12)?,
        decided_at: row.try_get(13)?,
    })
}

/// Sets `dispatched_at` once: true for the one caller that changed the row.
async fn claim_on<'c, E>(executor: E, id: &str, now: UnixMs) -> Result<bool, ApprovalError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let changed = sqlx::query(
        "UPDATE approvals SET dispatched_at = $1 \
         WHERE id = $2 AND state = 'approved' AND dispatched_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(executor)
    .await?
    .rows_affected();
    Ok(changed == 1)
}
