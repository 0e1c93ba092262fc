-- The fleet state the guards count on (issue 9), beside the audit log in the same database, so
-- that several controllers on one PostgreSQL count cooldowns, attempts, in-flight actions and
-- storms over the whole fleet. Valid in SQLite and PostgreSQL.
--
-- Every write bumps fleet_meta.version, and stamps the host rows it wrote with the new
-- version: a controller that last read version v re-reads only the hosts with version > v,
-- and the small tables whole. On PostgreSQL a controller holds fleet_meta's row lock
-- (SELECT ... FOR UPDATE) from reading to committing, so decisions are serialised fleet-wide.
CREATE TABLE fleet_meta (
    id      INTEGER PRIMARY KEY,
    version BIGINT  NOT NULL
);
INSERT INTO fleet_meta (id, version) VALUES (1, 0);

-- One row per host: its HostState as JSON.
CREATE TABLE fleet_hosts (
    name    TEXT   PRIMARY KEY,
    version BIGINT NOT NULL,
    state   TEXT   NOT NULL
);
CREATE INDEX fleet_hosts_version ON fleet_hosts (version);

-- One row per in-flight action chain: its InFlight as JSON.
CREATE TABLE fleet_in_flight (
    id     TEXT PRIMARY KEY,
    action TEXT NOT NULL
);

-- One row per storm episode: its StormEpisode as JSON, by cause id.
CREATE TABLE fleet_storms (
    cause   TEXT PRIMARY KEY,
    episode TEXT NOT NULL
);

-- One row per controller deciding on this state: its latest heartbeat.
CREATE TABLE fleet_controllers (
    id           TEXT   PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL
);
