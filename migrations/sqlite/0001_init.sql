-- Initial schema of the embedded SQLite backend.
--
-- Every time is INTEGER milliseconds since the Unix epoch. Value kinds are
-- stored as small integers: 0 float, 1 int, 2 bool (the postcard tags).

-- Devices and their credentials. `pk` is the compact key every other table
-- uses; `id` is the public 16-hex-char id that appears in tokens and URLs.
-- Only SHA-256 of the token's secret is kept. Devices are revoked, never
-- deleted, so their readings keep an owner and paging cursors stay valid.
CREATE TABLE devices (
    pk              INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    token_hash      BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    firmware        TEXT,
    online          INTEGER NOT NULL DEFAULT 0,
    -- Bumped on every connection; a disconnect only marks the device offline
    -- while its counter is still current (a newer session may be live).
    session_counter INTEGER NOT NULL DEFAULT 0,
    last_seen       INTEGER,
    -- Highest telemetry sequence number committed (0: none), sent in Welcome.
    last_seq        INTEGER NOT NULL DEFAULT 0
);

-- Hubs poll `revoked_at >= ?` every second; only revoked rows are indexed.
CREATE INDEX devices_revoked_at ON devices (revoked_at) WHERE revoked_at IS NOT NULL;

-- Sensors a device declared in its latest Hello.
CREATE TABLE sensors (
    device_pk INTEGER NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    sensor_id INTEGER NOT NULL CHECK (sensor_id BETWEEN 0 AND 65535),
    name      TEXT    NOT NULL,
    unit      TEXT    NOT NULL,
    kind      INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    PRIMARY KEY (device_pk, sensor_id)
) WITHOUT ROWID;

-- Actuators a device declared in its latest Hello.
CREATE TABLE actuators (
    device_pk   INTEGER NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    actuator_id INTEGER NOT NULL CHECK (actuator_id BETWEEN 0 AND 65535),
    name        TEXT    NOT NULL,
    kind        INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    PRIMARY KEY (device_pk, actuator_id)
) WITHOUT ROWID;

-- Telemetry. The primary key (device, sensor, time) makes resent readings
-- idempotent and serves every read: a range scan per sensor and a one-row
-- seek for the newest reading. WITHOUT ROWID stores rows in that key's
-- B-tree, with no second index. No foreign key and no CHECK: rows come from
-- validated frames of authenticated devices, which are never deleted.
-- Exactly one of value_float / value_int is set; bools are 0/1 in value_int.
-- Rows arrive here through `readings_inbox` (below), merged in key order.
CREATE TABLE readings (
    device_pk   INTEGER NOT NULL,
    sensor_id   INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    value_float REAL,
    value_int   INTEGER,
    PRIMARY KEY (device_pk, sensor_id, ts)
) WITHOUT ROWID;

-- Staging for the batch writer (the hot path). A batch of interleaved
-- readings inserted straight into `readings` dirties about one page per
-- (device, sensor) it touches, and every commit writes those pages to the WAL
-- again: with thousands of sensors that is megabytes per commit and the
-- writer falls to ~60k rows/s. Here the key starts with the batch number and
-- each batch is inserted sorted, so a commit appends a few pages at the end.
-- The store later moves the staged rows into `readings` in one large sorted
-- merge (ON CONFLICT DO NOTHING, oldest batch first, so the first write of a
-- key wins) and empties this table. Readers look at both tables in one
-- snapshot, seeking this one batch by batch.
CREATE TABLE readings_inbox (
    batch       INTEGER NOT NULL,
    device_pk   INTEGER NOT NULL,
    sensor_id   INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    value_float REAL,
    value_int   INTEGER,
    PRIMARY KEY (batch, device_pk, sensor_id, ts)
) WITHOUT ROWID;

-- Keys for the HTTP API: same scheme as device tokens, `<id>.<secret>`.
CREATE TABLE api_keys (
    pk           INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    name         TEXT    NOT NULL,
    key_hash     BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    -- Written at most once a minute per key, so authentication stays a read.
    last_used_at INTEGER
);
