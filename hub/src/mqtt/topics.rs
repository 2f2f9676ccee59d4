//! The MQTT topic layout (DESIGN.md §7), as pure functions.
//!
//! Every topic the bridge subscribes to or publishes on is built or parsed
//! here, and nowhere else, so the layout is written down once and can be
//! tested without a broker:
//!
//! | direction | topic                                         |
//! |-----------|-----------------------------------------------|
//! | in        | `{prefix}/devices/{device}/commands`          |
//! | out       | `{prefix}/devices/{device}/commands/{id}/status` |
//! | out       | `{prefix}/devices/{device}/telemetry`         |
//! | out       | `{prefix}/devices/{device}/status` (retained) |
//! | out       | `{prefix}/errors`                             |
//!
//! A device id becomes one topic level, so an id that could split a level
//! (`/`) or act as a wildcard (`+`, `#`) is refused rather than published
//! somewhere unexpected. The hub's own ids are 16 hex characters, so this
//! only guards against surprises.

/// The shared-subscription group every hub joins for command requests: the
/// broker hands each request to one member only (MQTT v5 §4.8.2).
pub const SHARE_GROUP: &str = "hubs";

/// A device id that cannot be one topic level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device id {0:?} cannot be an MQTT topic level (empty, or contains '/', '+', '#' or NUL)")]
pub struct BadDeviceId(pub String);

/// Whether `id` can stand as one topic level.
fn is_level(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#', '\0'])
}

fn checked(id: &str) -> Result<&str, BadDeviceId> {
    if is_level(id) {
        Ok(id)
    } else {
        Err(BadDeviceId(id.to_owned()))
    }
}

/// `{prefix}/devices/+/commands`: where command requests arrive.
pub fn command_filter(prefix: &str) -> String {
    format!("{prefix}/devices/+/commands")
}

/// `$share/hubs/{prefix}/devices/+/commands`: the same requests, shared
/// among every hub subscribed this way (each request reaches one hub).
/// Messages still arrive on their real topic, so parsing is unchanged.
pub fn shared_command_filter(prefix: &str) -> String {
    format!("$share/{SHARE_GROUP}/{}", command_filter(prefix))
}

/// The device id of a command request topic, or None when `topic` is not
/// `{prefix}/devices/{device}/commands` with a usable device id.
pub fn device_of_command_topic<'t>(prefix: &str, topic: &'t str) -> Option<&'t str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("/devices/")?;
    let device = rest.strip_suffix("/commands")?;
    is_level(device).then_some(device)
}

/// `{prefix}/devices/{device}/commands/{command_id}/status`.
pub fn command_status_topic(
    prefix: &str,
    device: &str,
    command_id: i64,
) -> Result<String, BadDeviceId> {
    Ok(format!(
        "{prefix}/devices/{}/commands/{command_id}/status",
        checked(device)?
    ))
}

/// `{prefix}/devices/{device}/telemetry`.
pub fn telemetry_topic(prefix: &str, device: &str) -> Result<String, BadDeviceId> {
    Ok(format!("{prefix}/devices/{}/telemetry", checked(device)?))
}

/// `{prefix}/devices/{device}/status`: retained online/offline.
pub fn presence_topic(prefix: &str, device: &str) -> Result<String, BadDeviceId> {
    Ok(format!("{prefix}/devices/{}/status", checked(device)?))
}

/// `{prefix}/errors`: refused requests.
pub fn errors_topic(prefix: &str) -> String {
    format!("{prefix}/errors")
}

/// Whether `topic` may be published to: non-empty, no wildcards, no NUL,
/// at most 65535 bytes (MQTT v5 §4.7). Used on requesters' Response Topics.
pub fn is_publishable(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= usize::from(u16::MAX) && !topic.contains(['+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_under_a_prefix() {
        assert_eq!(command_filter("hub"), "hub/devices/+/commands");
        assert_eq!(
            shared_command_filter("site/a"),
            "$share/hubs/site/a/devices/+/commands"
        );
        assert_eq!(
            command_status_topic("hub", "0f3a", 42).as_deref(),
            Ok("hub/devices/0f3a/commands/42/status")
        );
        assert_eq!(
            telemetry_topic("hub", "0f3a").as_deref(),
            Ok("hub/devices/0f3a/telemetry")
        );
        assert_eq!(
            presence_topic("x/y", "0f3a").as_deref(),
            Ok("x/y/devices/0f3a/status")
        );
        assert_eq!(errors_topic("hub"), "hub/errors");
    }

    #[test]
    fn device_ids_come_out_of_request_topics() {
        assert_eq!(
            device_of_command_topic("hub", "hub/devices/0f3a/commands"),
            Some("0f3a")
        );
        assert_eq!(
            device_of_command_topic("site/a", "site/a/devices/d1/commands"),
            Some("d1")
        );
        for topic in [
            "hub/devices//commands",
            "hub/devices/a/b/commands",
            "hub/devices/0f3a/commands/1/status",
            "hub/devices/0f3a/telemetry",
            "other/devices/0f3a/commands",
            "hubx/devices/0f3a/commands",
            "hub/devices/commands",
            "hub/errors",
            "",
        ] {
            assert_eq!(device_of_command_topic("hub", topic), None, "{topic}");
        }
    }

    #[test]
    fn ids_that_would_break_a_topic_are_refused() {
        for id in ["", "a/b", "+", "a#", "a\0b"] {
            assert_eq!(
                telemetry_topic("hub", id),
                Err(BadDeviceId(id.to_owned())),
                "{id:?}"
            );
            assert!(presence_topic("hub", id).is_err());
            assert!(command_status_topic("hub", id, 1).is_err());
        }
    }

    #[test]
    fn response_topics_must_be_publishable() {
        assert!(is_publishable("app/replies/7"));
        for bad in ["", "app/+/x", "app/#", "a\0"] {
            assert!(!is_publishable(bad), "{bad:?}");
        }
    }
}
