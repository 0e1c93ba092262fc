//! Recomputing the chain: a pure checker fed the stored rows in `seq` order, then the head.

use std::fmt;

use super::hash::{self, Fields};

/// The outcome of `Audit::verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every record matches its hash and the one before it; the head matches the last record.
    Intact {
        /// How many records the chain holds.
        records: u64,
    },
    /// The first record that does not match.
    Broken(Broken),
}

/// Where the chain breaks: the first record (by `seq`) that does not match, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The first record that does not match (for a deleted record: its `seq`, now missing).
    pub seq: i64,
    /// What does not match, for the operator.
    pub why: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {}", self.seq, self.why)
    }
}

/// One row as stored, untyped: verification must report a tampered row (an unknown kind, a body
/// that is not JSON) as a broken chain, not fail to decode it.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// `seq` column.
    pub seq: i64,
    /// `at` column.
    pub at: i64,
    /// `kind` column.
    pub kind: String,
    /// `host` column.
    pub host: Option<String>,
    /// `incident` column.
    pub incident: Option<String>,
    /// `actor` column.
    pub actor: String,
    /// `policy` column.
    pub policy: Option<String>,
    /// `policy_digest` column.
    pub policy_digest: Option<String>,
    /// `body` column (canonical JSON text).
    pub body: String,
    /// `prev_hash` column (hex).
    pub prev_hash: String,
    /// `hash` column (hex).
    pub hash: String,
}

impl StoredRow {
    /// The hashed fields, borrowed.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            seq: self.seq,
            at: self.at,
            kind: &self.kind,
            host: self.host.as_deref(),
            incident: self.incident.as_deref(),
            actor: &self.actor,
            policy: self.policy.as_deref(),
            policy_digest: self.policy_digest.as_deref(),
            body: &self.body,
        }
    }
}

/// Walks the chain one row at a time, holding only the previous hash.
#[derive(Debug)]
pub struct ChainCheck {
    last_seq: i64,
    last_hash: [u8; 32],
    last_hex: String,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            last_seq: 0,
            last_hash: hash::GENESIS,
            last_hex: hash::GENESIS_HEX.to_owned(),
        }
    }
}

impl ChainCheck {
    /// Checks the next row (rows must come in ascending `seq` order).
    pub fn check(&mut self, row: &StoredRow) -> Result<(), Broken> {
        let expected = self.last_seq + 1;
        if row.seq != expected {
            let why = if row.seq > expected && self.last_seq == 0 {
                format!(
                    "record {expected} is missing: the log starts at record {}",
                    row.seq
                )
            } else if row.seq > expected {
                format!(
                    "record {expected} is missing: record {} is followed by record {}",
                    self.last_seq, row.seq
                )
            } else {
                format!(
                    "record {} is out of order after record {}",
                    row.seq, self.last_seq
                )
            };
            return Err(Broken {
                seq: expected.min(row.seq),
                why,
            });
        }
        if row.prev_hash != self.last_hex {
            return Err(Broken {
                seq: row.seq,
                why: format!(
                    "its prev_hash {} is not the hash of record {} ({}): a record before it was \
                     replaced or moved",
                    row.prev_hash, self.last_seq, self.last_hex
                ),
            });
        }
        let computed = hash::chain_hash(&self.last_hash, &row.fields());
        match hash::parse_hex(&row.hash) {
            Some(stored) if stored == computed => {
                self.last_seq = row.seq;
                self.last_hash = stored;
                self.last_hex.clone_from(&row.hash);
                Ok(())
            }
            _ => Err(Broken {
                seq: row.seq,
                why: format!(
                    "its contents hash to {} but it says {}: the record was edited or moved",
                    hex::encode(computed),
                    row.hash
                ),
            }),
        }
    }

    /// Compares the end of the table with the chain head (which catches deleting the newest
    /// records, since every remaining record still matches its predecessor).
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Verification {
        let last = self.last_seq;
        if head_seq > last {
            return Verification::Broken(Broken {
                seq: last + 1,
                why: format!(
                    "record {} is missing: the chain head says the log ends at record {head_seq}, \
                     the table ends at record {last}",
                    last + 1
                ),
            });
        }
        if head_seq < last {
            return Verification::Broken(Broken {
                seq: head_seq + 1,
                why: format!(
                    "record {} is past the chain head (record {head_seq}): it was not appended \
                     through the audit log",
                    head_seq + 1
                ),
            });
        }
        if head_hash != self.last_hex {
            return Verification::Broken(Broken {
                seq: last,
                why: format!(
                    "its hash {} is not the chain head's ({head_hash})",
                    self.last_hex
                ),
            });
        }
        Verification::Intact {
            records: u64::try_from(last).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<StoredRow> {
        let mut prev = hash::GENESIS;
        (1..=n)
            .map(|seq| {
                let mut row = StoredRow {
                    seq,
                    at: 1000 + seq,
                    kind: "finding".into(),
                    host: Some("web-1".into()),
                    incident: None,
                    actor: "controller".into(),
                    policy: None,
                    policy_digest: None,
                    body: format!("{{\"n\":{seq}}}"),
                    prev_hash: hex::encode(prev),
                    hash: String::new(),
                };
                prev = hash::chain_hash(&prev, &row.fields());
                row.hash = hex::encode(prev);
                row
            })
            .collect()
    }

    fn run(rows: &[StoredRow], head_seq: i64, head_hash: &str) -> Verification {
        let mut check = ChainCheck::default();
        for row in rows {
            if let Err(b) = check.check(row) {
                return Verification::Broken(b);
            }
        }
        check.finish(head_seq, head_hash)
    }

    fn broken_at(v: Verification) -> i64 {
        match v {
            Verification::Broken(b) => b.seq,
            Verification::Intact { .. } => panic!("expected a broken chain"),
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let rows = chain(5);
        let head = rows[4].hash.clone();
        assert_eq!(run(&rows, 5, &head), Verification::Intact { records: 5 });
        assert_eq!(
            run(&[], 0, hash::GENESIS_HEX),
            Verification::Intact { records: 0 }
        );
    }

    #[test]
    fn an_edit_is_named_by_its_seq() {
        let mut rows = chain(5);
        let head = rows[4].hash.clone();
        rows[2].body = "{\"n\":99}".into();
        assert_eq!(broken_at(run(&rows, 5, &head)), 3);
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_record() {
        let mut rows = chain(5);
        let head = rows[4].hash.clone();
        rows[2].actor = "mallory".into();
        let prev = hash::parse_hex(&rows[2].prev_hash).expect("hex");
        rows[2].hash = hex::encode(hash::chain_hash(&prev, &rows[2].fields()));
        assert_eq!(broken_at(run(&rows, 5, &head)), 4);
    }

    #[test]
    fn a_deleted_record_is_named() {
        let rows = chain(5);
        let head = rows[4].hash.clone();
        let mut gap = rows.clone();
        gap.remove(1);
        assert_eq!(broken_at(run(&gap, 5, &head)), 2);
        let mut first = rows.clone();
        first.remove(0);
        assert_eq!(broken_at(run(&first, 5, &head)), 1);
        let mut last = rows;
        last.pop();
        assert_eq!(broken_at(run(&last, 5, &head)), 5);
    }

    #[test]
    fn swapped_seqs_are_caught_at_the_first() {
        let mut rows = chain(5);
        let head = rows[4].hash.clone();
        rows[1].seq = 4;
        rows[3].seq = 2;
        rows.sort_by_key(|r| r.seq);
        assert_eq!(broken_at(run(&rows, 5, &head)), 2);
    }

    #[test]
    fn a_row_past_the_head_is_caught() {
        let rows = chain(5);
        let head = rows[3].hash.clone();
        assert_eq!(broken_at(run(&rows, 4, &head)), 5);
    }
}
