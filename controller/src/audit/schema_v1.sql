-- The audit log (issue 7). Valid in both SQLite and PostgreSQL.
-- Hashes are lowercase hex; body is canonical JSON text (see audit/mod.rs for what the hash covers).
CREATE TABLE audit_log (
    seq           BIGINT PRIMARY KEY,
    at            BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    host          TEXT,
    incident      TEXT,
    actor         TEXT   NOT NULL,
    policy        TEXT,
    policy_digest TEXT,
    body          TEXT   NOT NULL,
    prev_hash     TEXT   NOT NULL,
    hash          TEXT   NOT NULL
);
CREATE INDEX audit_log_host_at ON audit_log (host, at);
CREATE INDEX audit_log_incident ON audit_log (incident, seq);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_kind_at ON audit_log (kind, at);

-- The chain head: one row, the last seq and its hash. Every append locks it (PostgreSQL: FOR
-- UPDATE; SQLite: BEGIN IMMEDIATE), so concurrent writers, in one process or many, extend one
-- chain. It also lets verify notice that the newest records were deleted.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
