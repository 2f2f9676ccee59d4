//! The Postgres side of several hubs on one database: a connection that
//! LISTENs to the notifications the triggers of
//! `migrations/postgres/0004_cluster.sql` send when a command or a session
//! changes.

use sqlx::postgres::{PgListener, PgPoolOptions};

use super::{ACQUIRE_TIMEOUT, PgStore};
use crate::store::StoreError;
use crate::store::cluster::{COMMAND_CHANNEL, RawNotice, SESSION_CHANNEL};

/// A listening connection of its own (outside the pools, which hand
/// connections to anyone).
pub(crate) struct PgClusterListener {
    listener: PgListener,
}

impl PgStore {
    pub(crate) async fn cluster_listener(&self) -> Result<PgClusterListener, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // The listener holds its connection for the hub's lifetime.
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with((*self.listen_options).clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        // The pool is the listener's alone; nobody closes it but the drop.
        listener.ignore_pool_close_event(true);
        listener
            .listen_all([COMMAND_CHANNEL, SESSION_CHANNEL])
            .await?;
        Ok(PgClusterListener { listener })
    }
}

impl PgClusterListener {
    /// The next notification; `Ok(None)` when the connection was lost and
    /// made again (whatever was sent meanwhile is gone).
    pub(crate) async fn next(&mut self) -> Result<Option<RawNotice>, StoreError> {
        match self.listener.try_recv().await? {
            Some(notification) => Ok(Some(RawNotice {
                channel: notification.channel().to_owned(),
                payload: notification.payload().to_owned(),
            })),
            None => Ok(None),
        }
    }
}
