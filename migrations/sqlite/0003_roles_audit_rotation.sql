-- Operator roles on API keys, the audit log, and device token rotation.

-- What an API key may do: viewer (read), operator (also commands), admin
-- (also devices, API keys and the audit log). Keys created before roles
-- existed could do everything, so they become admin: nothing breaks for
-- their holders. New keys always name their role.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('viewer', 'operator', 'admin'));

-- Device token rotation. `token_generation` counts rotations; a session
-- remembers the generation it authenticated with, and hubs poll
-- `token_rotated_at >= ?` (like `revoked_at`) to close sessions still on an
-- older token. Only rotated rows are indexed.
ALTER TABLE devices ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN token_rotated_at INTEGER;
CREATE INDEX devices_token_rotated_at ON devices (token_rotated_at)
    WHERE token_rotated_at IS NOT NULL;

-- Who did what, when, and how it ended: every command submission (accepted
-- or refused) and every admin action, from the API, MQTT or the CLI.
-- actor: `api:<key name>`, `mqtt` or `cli`; action: `command.create`,
-- `device.create`, `device.revoke`, `device.rotate_token`, `api_key.create`,
-- `api_key.revoke`; target: the device or key id (or what was asked for);
-- outcome: `ok` or the refusal's error code; detail: a JSON object.
-- Rows are only ever appended; `id` orders them (newest first in the API).
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT,
    outcome TEXT    NOT NULL,
    detail  TEXT    NOT NULL DEFAULT '{}'
);

-- The API's filters, each newest first.
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
-- Retention deletes by age (--audit-retention-days).
CREATE INDEX audit_log_at ON audit_log (at);
