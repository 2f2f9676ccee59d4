-- Several hubs on one database (Postgres): which hub holds each device's
-- session, and the notifications that carry command and session changes
-- from the hub that made them to every other hub.

-- The instance id (`--instance-id`) of the hub holding the device's live
-- session; NULL while the device is offline. Written with `online` and
-- `session_counter` when a session opens, cleared when the current one
-- closes (a late close of a replaced session leaves it alone).
ALTER TABLE devices ADD COLUMN hub_instance TEXT;

-- Each hub sets `hub.instance` on its connections (a startup option), so a
-- notification names its origin and a hub can skip what it did itself.
-- Connections without it (the admin CLI) notify with an empty origin.

-- A command was accepted or changed status: `ID DEVICE_PK STATUS ORIGIN`.
-- Sent from the trigger, so the notification leaves exactly when the change
-- commits (NOTIFY is transactional) and never for a rolled-back one.
CREATE FUNCTION hub_notify_command() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM pg_notify('hub_commands', NEW.id || ' ' || NEW.device_pk || ' ' || NEW.status
            || ' ' || coalesce(current_setting('hub.instance', true), ''));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER commands_notify
    AFTER INSERT OR UPDATE OF status ON commands
    FOR EACH ROW EXECUTE FUNCTION hub_notify_command();

-- A device opened a session: `DEVICE_PK SESSION_COUNTER ORIGIN`. Another hub
-- still holding an older session of that device (a half-open connection the
-- device already left) closes it as replaced.
CREATE FUNCTION hub_notify_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hub_sessions', NEW.pk || ' ' || NEW.session_counter
        || ' ' || coalesce(current_setting('hub.instance', true), ''));
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_session_notify
    AFTER UPDATE OF session_counter ON devices
    FOR EACH ROW WHEN (NEW.session_counter > OLD.session_counter)
    EXECUTE FUNCTION hub_notify_session();

-- Hubs alive: each hub writes its row every few seconds. A hub whose row
-- went stale (killed, its machine lost) is claimed by another hub, which
-- marks the devices it held offline: a crash does not leave them "online"
-- forever. A hub restarting under the same instance id releases its own
-- leftovers at start.
CREATE TABLE hubs (
    instance   TEXT   PRIMARY KEY,
    started_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
-- Releasing a hub's devices.
CREATE INDEX devices_hub_instance ON devices (hub_instance) WHERE hub_instance IS NOT NULL;

-- SHA-256 of the device's last Hello (firmware, sensors, actuators in id
-- order), returned when a session opens: a reconnect that declares the
-- same things (nearly all of them) skips reading and comparing the stored
-- declarations, so a reconnect storm costs one write per device, not five
-- round trips. NULL until the device's next Hello is recorded.
ALTER TABLE devices ADD COLUMN hello_digest BYTEA;
