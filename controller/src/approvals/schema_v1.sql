-- Approvals (issue 7), beside the audit log in the same database. Valid in SQLite and PostgreSQL.
-- A decision is a state column changed by one conditional UPDATE (pending -> approved | denied |
-- expired), so two operators approving at once cannot both win, on any number of controllers;
-- an approved one is claimed for dispatch the same way (dispatched_at set once), by the one
-- controller its host is connected to.
CREATE TABLE approvals (
    id            TEXT   PRIMARY KEY,
    host          TEXT   NOT NULL,
    incident      TEXT   NOT NULL,
    policy        TEXT   NOT NULL,
    policy_digest TEXT   NOT NULL,
    actions       TEXT   NOT NULL,
    why           TEXT   NOT NULL,
    finding       TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    decided_by    TEXT,
    reason        TEXT,
    decided_at    BIGINT,
    dispatched_at BIGINT
);
CREATE INDEX approvals_state ON approvals (state, expires_at);
