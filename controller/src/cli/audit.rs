//! `gatemend audit`: verify the chain, list, show and export records.

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use futures_util::TryStreamExt;

use crate::audit::{Audit, AuditError, Filter, Kind, Record, Verification, now_ms};

/// Where the controller keeps its audit log unless told otherwise.
pub const DEFAULT_DB: &str = "sqlite:///var/lib/gatemend/audit.db";

/// `gatemend audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain: exit 0 when intact, 1 naming the first record that does not
    /// match (edited, deleted or reordered).
    Verify {
        /// The audit database (sqlite:///path or postgres://user@host/db).
        #[arg(long, default_value = DEFAULT_DB)]
        db: String,
    },
    /// List records, oldest first: a table, or JSON lines with --json.
    List {
        /// The audit database.
        #[arg(long, default_value = DEFAULT_DB)]
        db: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one record in full (exit 1 if there is none at SEQ).
    Show {
        /// The audit database.
        #[arg(long, default_value = DEFAULT_DB)]
        db: String,
        /// The record's sequence number.
        seq: i64,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Export records with every column, hashes included (JSON lines with --json, else a table
    /// with the hashes).
    Export {
        /// The audit database.
        #[arg(long, default_value = DEFAULT_DB)]
        db: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per line, every field.
        #[arg(long)]
        json: bool,
    },
}

/// The filters shared by `list` and `export`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this host.
    #[arg(long)]
    host: Option<String>,
    /// Only this incident (finding id).
    #[arg(long)]
    incident: Option<String>,
    /// Only records at or after: RFC 3339 (2026-11-21T03:12:00Z), milliseconds since the epoch,
    /// or a duration ago (2h, 30m).
    #[arg(long)]
    since: Option<String>,
    /// Only records before: same forms as --since.
    #[arg(long)]
    until: Option<String>,
    /// Only this kind (finding, decision, approved, action_step, ...).
    #[arg(long)]
    kind: Option<Kind>,
}

/// Why `gatemend audit` could not do its job (a broken chain is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    /// The store failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// `--since`/`--until` does not parse.
    #[error(
        "--{flag} {value}: expected RFC 3339 (2026-11-21T03:12:00Z), milliseconds since the epoch, or a duration ago (2h)"
    )]
    Time {
        /// `since` or `until`.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
    /// Writing to stdout failed.
    #[error("cannot write the output")]
    Output(#[source] io::Error),
}

/// Runs the subcommand. `Ok(false)`: the chain is broken (verify) or there is no such record
/// (show); the reason has been printed.
pub fn run(command: AuditCommand) -> Result<bool, AuditCliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AuditCliError::Runtime)?;
    runtime.block_on(run_async(command))
}

async fn run_async(command: AuditCommand) -> Result<bool, AuditCliError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let ok = match command {
        AuditCommand::Verify { db } => {
            let audit = Audit::open_existing(&db).await?;
            match audit.verify().await? {
                Verification::Intact { records } => {
                    writeln!(out, "audit log {}: intact, {records} records", audit.url())
                        .map_err(AuditCliError::Output)?;
                    true
                }
                Verification::Broken(broken) => {
                    writeln!(out, "audit log {}: BROKEN at {broken}", audit.url())
                        .map_err(AuditCliError::Output)?;
                    false
                }
            }
        }
        AuditCommand::List {
            db,
            filter,
            limit,
            json,
        } => {
            let audit = Audit::open_existing(&db).await?;
            let mut filter = filter.into_filter(now_ms())?;
            filter.limit = limit;
            print_records(&audit, &filter, json, false, &mut out).await?;
            true
        }
        AuditCommand::Export { db, filter, json } => {
            let audit = Audit::open_existing(&db).await?;
            let filter = filter.into_filter(now_ms())?;
            print_records(&audit, &filter, json, true, &mut out).await?;
            true
        }
        AuditCommand::Show { db, seq, json } => {
            let audit = Audit::open_existing(&db).await?;
            match audit.get(seq).await? {
                Some(record) if json => {
                    writeln!(out, "{}", to_json(&record)).map_err(AuditCliError::Output)?;
                    true
                }
                Some(record) => {
                    write!(out, "{}", show(&record)).map_err(AuditCliError::Output)?;
                    true
                }
                None => {
                    eprintln!("gatemend: no audit record {seq} in {}", audit.url());
                    false
                }
            }
        }
    };
    out.flush().map_err(AuditCliError::Output)?;
    Ok(ok)
}

impl FilterArgs {
    fn into_filter(self, now: i64) -> Result<Filter, AuditCliError> {
        let since = self
            .since
            .map(|v| {
                parse_time(&v, now).ok_or(AuditCliError::Time {
                    flag: "since",
                    value: v,
                })
            })
            .transpose()?;
        let until = self
            .until
            .map(|v| {
                parse_time(&v, now).ok_or(AuditCliError::Time {
                    flag: "until",
                    value: v,
                })
            })
            .transpose()?;
        Ok(Filter {
            host: self.host,
            incident: self.incident,
            since,
            until,
            kind: self.kind,
            limit: None,
        })
    }
}

/// RFC 3339, unix milliseconds, or a duration before `now` (unix ms).
fn parse_time(text: &str, now: i64) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        let d = t.duration_since(UNIX_EPOCH).ok()?;
        return i64::try_from(d.as_millis()).ok();
    }
    let ago = humantime::parse_duration(text).ok()?;
    now.checked_sub(i64::try_from(ago.as_millis()).ok()?)
}

async fn print_records(
    audit: &Audit,
    filter: &Filter,
    json: bool,
    hashes: bool,
    out: &mut impl Write,
) -> Result<(), AuditCliError> {
    let w = |r: io::Result<()>| r.map_err(AuditCliError::Output);
    if !json {
        w(writeln!(out, "{}", table_header(hashes)))?;
    }
    let mut records = audit.records(filter);
    while let Some(record) = records.try_next().await? {
        if json {
            w(writeln!(out, "{}", to_json(&record)))?;
        } else {
            w(writeln!(out, "{}", table_row(&record, hashes)))?;
        }
    }
    Ok(())
}

fn to_json(record: &Record) -> serde_json::Value {
    // Every field, hashes included; `at` also as RFC 3339 for people reading the export.
    let mut value = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("at_rfc3339".into(), format_at(record.at).into());
    }
    value
}

fn table_header(hashes: bool) -> String {
    let mut line = format!(
        "{:>6}  {:<24}  {:<18}  {:<12}  {:<14}  {:<10}  {:<12}  ",
        "SEQ", "AT", "KIND", "HOST", "INCIDENT", "ACTOR", "POLICY"
    );
    if hashes {
        line.push_str(&format!("{:<16}  {:<16}  ", "PREV_HASH", "HASH"));
    }
    line.push_str("BODY");
    line
}

fn table_row(r: &Record, hashes: bool) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{:>6}  {:<24}  {:<18}  {:<12}  {:<14}  {:<10}  {:<12}  ",
        r.seq,
        format_at(r.at),
        r.kind.as_str(),
        dash(&r.host),
        dash(&r.incident),
        r.actor,
        dash(&r.policy)
    );
    if hashes {
        line.push_str(&format!(
            "{:<16}  {:<16}  ",
            short(&r.prev_hash, 16),
            short(&r.hash, 16)
        ));
        line.push_str(&crate::audit::canonical_json(&r.body));
    } else {
        line.push_str(&short(&crate::audit::canonical_json(&r.body), 80));
    }
    line
}

fn show(r: &Record) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let body = serde_json::to_string_pretty(&r.body).unwrap_or_else(|_| r.body.to_string());
    format!(
        "seq:           {}\nat:            {} ({})\nkind:          {}\nhost:          {}\n\
         incident:      {}\nactor:         {}\npolicy:        {}\npolicy_digest: {}\n\
         prev_hash:     {}\nhash:          {}\nbody:\n{}\n",
        r.seq,
        format_at(r.at),
        r.at,
        r.kind,
        dash(&r.host),
        dash(&r.incident),
        r.actor,
        dash(&r.policy),
        dash(&r.policy_digest),
        r.prev_hash,
        r.hash,
        body
    )
}

/// Unix ms as RFC 3339 UTC with milliseconds; times before 1970 as the raw number.
fn format_at(at: i64) -> String {
    match u64::try_from(at) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => at.to_string(),
    }
}

/// The first `max` characters, with an ellipsis if cut (on a character boundary).
fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("1700000000000", now), Some(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_time("2h", now), Some(now - 7_200_000));
        assert_eq!(parse_time("yesterday-ish", now), None);
    }

    #[test]
    fn short_cuts_on_character_boundaries() {
        assert_eq!(short("ééé", 2), "éé…");
        assert_eq!(short("ab", 2), "ab");
    }

    #[test]
    fn format_at_is_rfc3339_millis() {
        assert_eq!(format_at(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_at(-5), "-5");
    }
}
