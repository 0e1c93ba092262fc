//! `gatemend approvals list|approve|deny`: the controller's approvals API from a terminal.
//! The token comes from `--token-file` or `GATEMEND_TOKEN`, never from the command line
//! (where `ps` and shell history would show it).

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde::Deserialize;

/// The environment variable the token is read from when no --token-file is given.
pub const TOKEN_ENV: &str = "GATEMEND_TOKEN";

/// Where and as whom to reach the controller.
#[derive(Debug, Args)]
pub struct Connection {
    /// The controller's review UI / API address (its --http-listen).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub controller: String,
    /// A file holding the operator token (else $GATEMEND_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// `gatemend approvals ...`.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals (pending unless --state says otherwise), newest first.
    List {
        #[command(flatten)]
        connection: Connection,
        /// pending, approved, denied, expired or all.
        #[arg(long, default_value = "pending")]
        state: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one approval: what it would run and why, and for a configuration edit the diff
    /// approving applies.
    Show {
        #[command(flatten)]
        connection: Connection,
        /// The approval's id.
        id: String,
    },
    /// Approve a pending approval: its actions are dispatched (exactly once).
    Approve {
        #[command(flatten)]
        connection: Connection,
        /// The approval's id (from `gatemend approvals list`).
        id: String,
        /// Why (recorded in the audit log with your name).
        #[arg(long)]
        reason: String,
    },
    /// Deny a pending approval: nothing runs.
    Deny {
        #[command(flatten)]
        connection: Connection,
        /// The approval's id.
        id: String,
        /// Why (recorded in the audit log with your name).
        #[arg(long)]
        reason: String,
    },
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalsCliError {
    #[error("no token: give --token-file FILE or set {TOKEN_ENV}")]
    NoToken,
    #[error("cannot read the token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot reach the controller at {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The controller refused or failed: its status and message.
    #[error("the controller answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("the controller's answer is not what this CLI expects")]
    Answer(#[source] reqwest::Error),
    #[error("starting the runtime")]
    Runtime(#[source] io::Error),
    #[error("writing the output")]
    Output(#[source] io::Error),
}

/// An approval as the API returns it (the fields this CLI shows).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ApprovalView {
    pub id: String,
    pub host: String,
    pub incident: String,
    pub policy: String,
    pub actions: Vec<String>,
    pub why: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// The finding it is about (with its proposed edit, when there is one).
    #[serde(default)]
    pub finding: serde_json::Value,
}

fn token(connection: &Connection) -> Result<String, ApprovalsCliError> {
    let token = match &connection.token_file {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|source| ApprovalsCliError::TokenFile {
                path: path.clone(),
                source,
            })?
        }
        None => std::env::var(TOKEN_ENV).map_err(|_| ApprovalsCliError::NoToken)?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(ApprovalsCliError::NoToken);
    }
    Ok(token)
}

/// Sends one request and decodes a JSON answer, or the controller's `{"error": ...}`.
async fn call<T: for<'de> Deserialize<'de>>(
    connection: &Connection,
    request: impl FnOnce(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> Result<T, ApprovalsCliError> {
    let token = token(connection)?;
    let base = connection.controller.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(ApprovalsCliError::Answer)?;
    let response = request(&client, base)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|source| ApprovalsCliError::Request {
            url: base.to_owned(),
            source,
        })?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(text);
        return Err(ApprovalsCliError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    response.json().await.map_err(ApprovalsCliError::Answer)
}

fn show_time(ms: i64) -> String {
    u64::try_from(ms)
        .map(|ms| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// Runs `gatemend approvals ...`.
pub fn run(command: ApprovalsCommand) -> Result<(), ApprovalsCliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ApprovalsCliError::Runtime)?;
    runtime.block_on(run_async(command))
}

async fn run_async(command: ApprovalsCommand) -> Result<(), ApprovalsCliError> {
    let mut out = io::stdout().lock();
    match command {
        ApprovalsCommand::List {
            connection,
            state,
            json,
        } => {
            let list: Vec<ApprovalView> = call(&connection, |c, base| {
                c.get(format!("{base}/api/v1/approvals"))
                    .query(&[("state", &state)])
            })
            .await?;
            if json {
                for a in &list {
                    let line = serde_json::to_string(a).unwrap_or_default();
                    writeln!(out, "{line}").map_err(ApprovalsCliError::Output)?;
                }
            } else {
                writeln!(
                    out,
                    "{:<12}  {:<9}  {:<16}  {:<20}  {:<24}  {:<20}  WHY",
                    "ID", "STATE", "HOST", "INCIDENT", "ACTIONS", "EXPIRES"
                )
                .map_err(ApprovalsCliError::Output)?;
                for a in &list {
                    writeln!(
                        out,
                        "{:<12}  {:<9}  {:<16}  {:<20}  {:<24}  {:<20}  {}",
                        a.id,
                        a.state,
                        a.host,
                        a.incident,
                        a.actions.join(","),
                        show_time(a.expires_at),
                        a.why
                    )
                    .map_err(ApprovalsCliError::Output)?;
                }
            }
        }
        ApprovalsCommand::Show { connection, id } => {
            let a: ApprovalView = call(&connection, |c, base| {
                c.get(format!("{base}/api/v1/approvals/{id}"))
            })
            .await?;
            let text = |v: &serde_json::Value, key: &str| {
                v.get(key).and_then(|v| v.as_str()).unwrap_or("").to_owned()
            };
            let mut shown = format!(
                "approval {} ({})\nhost      {}\nincident  {}\npolicy    {}\nactions   {}\nexpires   {}\nwhy       {}\n",
                a.id,
                a.state,
                a.host,
                a.incident,
                a.policy,
                a.actions.join(", "),
                show_time(a.expires_at),
                a.why
            );
            if let Some(edit) = a.finding.get("edit").filter(|e| !e.is_null()) {
                shown.push_str(&format!(
                    "edit      {} {} -> {} in {}\nsized     {}\nsha256    {}\n\n{}",
                    text(edit, "directive"),
                    text(edit, "old_value"),
                    text(edit, "new_value"),
                    text(edit, "file"),
                    text(edit, "why"),
                    text(edit, "file_sha256"),
                    text(edit, "diff"),
                ));
            }
            write!(out, "{shown}").map_err(ApprovalsCliError::Output)?;
        }
        ApprovalsCommand::Approve {
            connection,
            id,
            reason,
        } => {
            let a: ApprovalView = call(&connection, |c, base| {
                c.post(format!("{base}/api/v1/approvals/{id}/approve"))
                    .json(&serde_json::json!({ "reason": reason }))
            })
            .await?;
            writeln!(
                out,
                "approved {} ({} on {}) as {}; the controller dispatches it now",
                a.id,
                a.actions.join(", "),
                a.host,
                a.decided_by.unwrap_or_default()
            )
            .map_err(ApprovalsCliError::Output)?;
        }
        ApprovalsCommand::Deny {
            connection,
            id,
            reason,
        } => {
            let a: ApprovalView = call(&connection, |c, base| {
                c.post(format!("{base}/api/v1/approvals/{id}/deny"))
                    .json(&serde_json::json!({ "reason": reason }))
            })
            .await?;
            writeln!(
                out,
                "denied {} ({} on {}) as {}; nothing runs",
                a.id,
                a.actions.join(", "),
                a.host,
                a.decided_by.unwrap_or_default()
            )
            .map_err(ApprovalsCliError::Output)?;
        }
    }
    Ok(())
}
