//! What the other hubs sharing this database changed: the notifications of
//! the Postgres triggers in `migrations/postgres/0004_cluster.sql`, parsed.
//!
//! Each hub holds live sessions for its own devices only, so a command
//! accepted by one hub must reach the hub that holds the device, and every
//! hub must learn each command's status changes (for `?wait` and the live
//! stream) and when a device opened a newer session elsewhere. The triggers
//! notify inside the transaction that made the change, so a notification
//! leaves exactly when the change commits. Notifications are not stored:
//! one sent while a hub's listening connection was down is lost, which
//! [`ClusterNotice::Reconnected`] tells the hub so it can catch up from the
//! tables. SQLite serves one hub and has no feed.

use super::postgres::cluster::PgClusterListener;
use super::{Backend, CommandStatus, Store, StoreError};

/// Channel of command changes: payload `ID DEVICE_PK STATUS ORIGIN`.
pub(crate) const COMMAND_CHANNEL: &str = "hub_commands";
/// Channel of opened sessions: payload `DEVICE_PK SESSION_COUNTER ORIGIN`.
pub(crate) const SESSION_CHANNEL: &str = "hub_sessions";

/// One notification as it came off the connection.
#[derive(Debug, Clone)]
pub(crate) struct RawNotice {
    pub channel: String,
    pub payload: String,
}

/// A change some hub made, or the news that some may have been missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterNotice {
    /// A command was accepted (`Queued`) or changed status.
    Command {
        /// The command's id.
        id: i64,
        /// Its device's database key.
        device_pk: i64,
        /// Its status after the change.
        status: CommandStatus,
        /// Instance id of the hub that made the change ("" for the admin CLI).
        origin: String,
    },
    /// A device opened a session.
    Session {
        /// The device's database key.
        device_pk: i64,
        /// The new session's counter.
        session_counter: i64,
        /// Instance id of the hub holding the new session.
        origin: String,
    },
    /// The listening connection was lost and made again: notifications sent
    /// in between are gone.
    Reconnected,
}

impl ClusterNotice {
    /// The notice a trigger's notification carries; None for a payload this
    /// version does not understand (logged by the caller, never fatal).
    pub(crate) fn parse(raw: &RawNotice) -> Option<ClusterNotice> {
        match raw.channel.as_str() {
            COMMAND_CHANNEL => {
                let mut parts = raw.payload.splitn(4, ' ');
                let id = parts.next()?.parse().ok()?;
                let device_pk = parts.next()?.parse().ok()?;
                let status = CommandStatus::parse(parts.next()?)?;
                let origin = parts.next().unwrap_or_default().to_owned();
                Some(ClusterNotice::Command {
                    id,
                    device_pk,
                    status,
                    origin,
                })
            }
            SESSION_CHANNEL => {
                let mut parts = raw.payload.splitn(3, ' ');
                let device_pk = parts.next()?.parse().ok()?;
                let session_counter = parts.next()?.parse().ok()?;
                let origin = parts.next().unwrap_or_default().to_owned();
                Some(ClusterNotice::Session {
                    device_pk,
                    session_counter,
                    origin,
                })
            }
            _ => None,
        }
    }

    /// The hub that made the change, for the changes.
    pub fn origin(&self) -> Option<&str> {
        match self {
            ClusterNotice::Command { origin, .. } | ClusterNotice::Session { origin, .. } => {
                Some(origin)
            }
            ClusterNotice::Reconnected => None,
        }
    }
}

/// The stream of [`ClusterNotice`]s of one hub (Postgres only).
pub struct ClusterFeed {
    listener: PgClusterListener,
}

impl ClusterFeed {
    /// The next notice. An error means the server could not be reached
    /// (the caller waits and calls again; the feed reconnects by itself).
    /// A payload this version cannot read is skipped with a warning.
    pub async fn next(&mut self) -> Result<ClusterNotice, StoreError> {
        loop {
            let Some(raw) = self.listener.next().await? else {
                return Ok(ClusterNotice::Reconnected);
            };
            match ClusterNotice::parse(&raw) {
                Some(notice) => return Ok(notice),
                None => tracing::warn!(
                    channel = raw.channel,
                    payload = raw.payload,
                    "ignoring a cluster notification this hub cannot read"
                ),
            }
        }
    }
}

impl Store {
    /// Starts listening to the other hubs' changes; None on SQLite, which
    /// serves a single hub. Fails while the server cannot be reached.
    pub async fn cluster_feed(&self) -> Result<Option<ClusterFeed>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(db) => Ok(Some(ClusterFeed {
                listener: db.cluster_listener().await?,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(channel: &str, payload: &str) -> RawNotice {
        RawNotice {
            channel: channel.into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn command_notices_parse_with_and_without_origin() {
        assert_eq!(
            ClusterNotice::parse(&raw(COMMAND_CHANNEL, "12 7 sent hub-a")),
            Some(ClusterNotice::Command {
                id: 12,
                device_pk: 7,
                status: CommandStatus::Sent,
                origin: "hub-a".into(),
            })
        );
        assert_eq!(
            ClusterNotice::parse(&raw(COMMAND_CHANNEL, "12 7 queued ")),
            Some(ClusterNotice::Command {
                id: 12,
                device_pk: 7,
                status: CommandStatus::Queued,
                origin: String::new(),
            })
        );
    }

    #[test]
    fn session_notices_parse() {
        assert_eq!(
            ClusterNotice::parse(&raw(SESSION_CHANNEL, "7 31 hub-b")),
            Some(ClusterNotice::Session {
                device_pk: 7,
                session_counter: 31,
                origin: "hub-b".into(),
            })
        );
    }

    #[test]
    fn unreadable_notices_are_none() {
        for (channel, payload) in [
            (COMMAND_CHANNEL, ""),
            (COMMAND_CHANNEL, "x 7 sent a"),
            (COMMAND_CHANNEL, "1 7 dancing a"),
            (SESSION_CHANNEL, "7"),
            ("other", "1 2 3"),
        ] {
            assert_eq!(
                ClusterNotice::parse(&raw(channel, payload)),
                None,
                "{payload}"
            );
        }
    }
}
