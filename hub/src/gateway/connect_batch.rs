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

use std::future::Future;
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
        let tokens = batched(
            store,
            metrics,
            ConnectOp::Auth,
            MAX_BATCH,
            |store, tokens: Vec<String>| async move {
                let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
                store.authenticate_devices(&tokens).await
            },
        );
        let instance: Arc<str> = instance.into();
        let opens = batched(
            store,
            metrics,
            ConnectOp::SessionOpen,
            MAX_BATCH,
            move |store, openings: Vec<SessionOpening>| {
                let instance = Arc::clone(&instance);
                async move { store.sessions_opened(&instance, &openings).await }
            },
        );
        let closes = batched(
            store,
            metrics,
            ConnectOp::SessionClose,
            MAX_BATCH,
            |store, closings: Vec<SessionClosing>| async move { store.sessions_closed(&closings).await },
        );
        let hellos = batched(
            store,
            metrics,
            ConnectOp::Hello,
            MAX_HELLO_BATCH,
            |store, hellos: Vec<HelloRecord>| async move { store.record_hellos(&hellos).await },
        );
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

/// A coalescer of up to `max` requests whose batches run `call` on `store`,
/// each batch's size observed as `op`.
fn batched<Req, Resp, F, Fut>(
    store: &Store,
    metrics: &Arc<Metrics>,
    op: ConnectOp,
    max: usize,
    call: F,
) -> Coalescer<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Store, Vec<Req>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<Resp>, StoreError>> + Send,
{
    let store = store.clone();
    let metrics = Arc::clone(metrics);
    Coalescer::spawn(max, move |requests: Vec<Req>| {
        metrics.connect_batch(op, requests.len());
        call(store.clone(), requests)
    })
}
