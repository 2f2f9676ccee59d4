-- Which hub holds each device's session (SQLite). A SQLite file serves one
-- hub, so this is always that hub's instance id (`--instance-id`) or NULL
-- while the device is offline; the column keeps the device list the same on
-- both backends. Postgres also notifies other hubs of command and session
-- changes (migrations/postgres/0004_cluster.sql); one hub needs no such thing.
ALTER TABLE devices ADD COLUMN hub_instance TEXT;

-- Hubs alive (see migrations/postgres/0004_cluster.sql): with one hub, the
-- row lets a restart under a new instance id release what the old one held.
CREATE TABLE hubs (
    instance   TEXT    PRIMARY KEY,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX devices_hub_instance ON devices (hub_instance) WHERE hub_instance IS NOT NULL;

-- SHA-256 of the device's last Hello (firmware, sensors, actuators in id
-- order), returned when a session opens: a reconnect that declares the
-- same things (nearly all of them) skips reading and comparing the stored
-- declarations, so a reconnect storm costs one write per device, not five
-- round trips. NULL until the device's next Hello is recorded.
ALTER TABLE devices ADD COLUMN hello_digest BLOB;
