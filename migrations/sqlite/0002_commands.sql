-- Commands for device actuators, and every step of their lifecycle.
--
-- The database is the source of truth for command state (DESIGN.md §5): a
-- command is stored before it is sent, and each transition is written with
-- its time, so a hub restart or a move to another hub loses nothing.
--
-- status: queued -> sent -> delivered -> succeeded | failed | rejected,
-- or expired when the TTL runs out before a final answer. `action` is the
-- hub's JSON encoding of what to do ({"Set": VALUE} or {"Invoke": {"name",
-- "args"}}, VALUE being {"Float": x}, {"Int": n} or {"Bool": b});
-- `result_value` is a VALUE the device reported with its success.
CREATE TABLE commands (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    device_pk         INTEGER NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    actuator_id       INTEGER NOT NULL CHECK (actuator_id BETWEEN 0 AND 65535),
    -- The actuator's name when the command was accepted (declarations change).
    actuator_name     TEXT    NOT NULL,
    action            TEXT    NOT NULL,
    -- The caller's key for safe retries; unique per device.
    idempotency_key   TEXT,
    -- Who asked: "api:<key name>" or "mqtt".
    source            TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN
        ('queued', 'sent', 'delivered', 'succeeded', 'failed', 'rejected', 'expired')),
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    sent_at           INTEGER,
    delivered_at      INTEGER,
    finished_at       INTEGER,
    -- Times the command was written to a device socket (resends count).
    attempts          INTEGER NOT NULL DEFAULT 0,
    result_value      TEXT,
    reason            TEXT,
    -- MQTT v5 Response Topic and Correlation Data of the request, if any:
    -- every status change is also published there, by whichever hub makes it.
    reply_topic       TEXT,
    reply_correlation BLOB,
    UNIQUE (device_pk, idempotency_key)
);

-- Listing a device's commands, newest first, optionally by status.
CREATE INDEX commands_device ON commands (device_pk, id);
-- What to (re)send when a device connects: its unfinished commands, oldest first.
CREATE INDEX commands_open ON commands (device_pk, id)
    WHERE status IN ('queued', 'sent', 'delivered');
-- The expiry sweep: unfinished commands by deadline.
CREATE INDEX commands_expiry ON commands (expires_at)
    WHERE status IN ('queued', 'sent', 'delivered');
-- Retention: finished commands by finishing time (only finished ones are deleted).
CREATE INDEX commands_finished ON commands (finished_at) WHERE finished_at IS NOT NULL;
