//! The database work of devices connecting and disconnecting, batched.
//!
//! Every reconnect asks three things of the database: whose token is this,
//! open the session, and later close it; a first connect (or a changed
//! Hello) also records the declarations. In a reconnect storm (a hub or a
//! load balancer restarts, a cell tower comes back) thousands of devices ask
//! at once; one statement each would make the database round trips, and on
//! SQLite the hand-offs to its worker thread, the hub's bottleneck. Each of
//! the four goes through its own [`Coalescer`], so devices that arrive
//! together share one statement and a lone device still goes at once.

use std::sync::Arc;

use crate::coalesce::Coalescer;
use crate::metrics::{ConnectOp, Metrics};
use crate::store::{
    DeviceIdentity, HelloRecord, SessionClosing, SessionOpening, SessionStart, Store, StoreError,
};

/// Most requests in one statement: the backends' largest chunk.
const MAX_BATCH: usize = 512;

/// Most Hellos recorded in one transaction: each is several statements under
/// SQLite's write lock, which the telemetry writer waits for meanwhile.
const MAX_HELLO_BATCH: usize = 64;

/// Batched token checks, session opens and closes, and Hello records; cheap
/// to clone.
#[derive(Clone)]
pub struct ConnectBatcher {
    tokens: Coalescer<String, Option<DeviceIdentity>>,
    opens: Coalescer<SessionOpening, Option<SessionStart>>,
    closes: Coalescer<SessionClosing, bool>,
    hellos: Coalescer<HelloRecord, bool>,
}

impl ConnectBatcher {
    /// Spawns the batch tasks on `store`; sessions open on hub `instance`;
    /// each batch's size goes to `hub_connect_batch_size`. They end when the
    /// last clone is dropped.
    pub fn spawn(store: &Store, instance: &str, metrics: &Arc<Metrics>) -> Self {
        let tokens = {
            let store = store.clone();
            let metrics = Arc::clone(metrics);
            Coalescer::spawn(MAX_BATCH, move |tokens: Vec<String>| {
                let store = store.clone();
                metrics.connect_batch(ConnectOp::Auth, tokens.len());
                async move {
                    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
                    store.authenticate_devices(&tokens).await
                }
            })
        };
        let opens = {
            let store = store.clone();
            let instance = instance.to_owned();
            let metrics = Arc::clone(metrics);
            Coalescer::spawn(MAX_BATCH, move |openings: Vec<SessionOpening>| {
                let store = store.clone();
                metrics.connect_batch(ConnectOp::SessionOpen, openings.len());
                let instance = instance.clone();
                async move { store.sessions_opened(&instance, &openings).await }
            })
        };
        let closes = {
            let store = store.clone();
            let metrics = Arc::clone(metrics);
            Coalescer::spawn(MAX_BATCH, move |closings: Vec<SessionClosing>| {
                let store = store.clone();
                metrics.connect_batch(ConnectOp::SessionClose, closings.len());
                async move { store.sessions_closed(&closings).await }
            })
        };
        let hellos = {
            let store = store.clone();
            let metrics = Arc::clone(metrics);
            Coalescer::spawn(MAX_HELLO_BATCH, move |hellos: Vec<HelloRecord>| {
                let store = store.clone();
                metrics.connect_batch(ConnectOp::Hello, hellos.len());
                async move { store.record_hellos(&hellos).await }
            })
        };
        ConnectBatcher {
            tokens,
            opens,
            closes,
            hellos,
        }
    }

    /// [`Store::authenticate_device`], batched.
    pub async fn authenticate(&self, token: &str) -> Result<Option<DeviceIdentity>, StoreError> {
        self.tokens.call(token.to_owned()).await
    }

    /// [`Store::session_opened`], batched; [`StoreError::UnknownDevice`] if
    /// the device is gone.
    pub async fn open(&self, opening: SessionOpening) -> Result<SessionStart, StoreError> {
        let pk = opening.pk;
        self.opens
            .call(opening)
            .await?
            .ok_or(StoreError::UnknownDevice(pk))
    }

    /// [`Store::record_hello`], batched: a device whose Hello changed (or
    /// its first session); [`StoreError::UnknownDevice`] if it is gone.
    pub async fn record_hello(&self, hello: HelloRecord) -> Result<(), StoreError> {
        let pk = hello.pk;
        if self.hellos.call(hello).await? {
            Ok(())
        } else {
            Err(StoreError::UnknownDevice(pk))
        }
    }

    /// [`Store::session_closed`], batched.
    pub async fn close(&self, closing: SessionClosing) -> Result<bool, StoreError> {
        self.closes.call(closing).await
    }
}
