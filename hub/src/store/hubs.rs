//! Which hubs are alive, and releasing the devices of one that is not.
//!
//! A hub marks its devices offline as their connections close; a hub that
//! is killed or loses its machine cannot. So every hub writes a row in
//! `hubs` every few seconds ([`Store::hub_alive`]); a row left stale is
//! claimed by exactly one other hub ([`Store::claim_stale_hub`] deletes it
//! and says whether this caller got it), which then releases the devices the
//! dead hub held ([`Store::release_hub_devices`]). A hub starting under an
//! instance id it had before releases its own leftovers the same way. A
//! device that already reconnected elsewhere names its new hub and is left
//! alone, so the release never hides a live session.

use super::{Backend, Store, StoreError};

/// A device a release marked offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedDevice {
    /// Public id.
    pub id: String,
    /// The session counter of the session that ended with its hub.
    pub session_counter: i64,
}

impl Store {
    /// Records that hub `instance` is alive at `now_ms` (first call: started).
    pub async fn hub_alive(&self, instance: &str, now_ms: i64) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.hub_alive(instance, now_ms).await,
            Backend::Postgres(db) => db.hub_alive(instance, now_ms).await,
        }
    }

    /// Hubs other than `except` not seen since `before_ms`.
    pub async fn stale_hubs(
        &self,
        before_ms: i64,
        except: &str,
    ) -> Result<Vec<String>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.stale_hubs(before_ms, except).await,
            Backend::Postgres(db) => db.stale_hubs(before_ms, except).await,
        }
    }

    /// Removes hub `instance`'s row if it is still stale (not seen since
    /// `before_ms`); true for the one caller that removed it.
    pub async fn claim_stale_hub(
        &self,
        instance: &str,
        before_ms: i64,
    ) -> Result<bool, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.claim_stale_hub(instance, before_ms).await,
            Backend::Postgres(db) => db.claim_stale_hub(instance, before_ms).await,
        }
    }

    /// Removes hub `instance`'s row (it stops cleanly).
    pub async fn forget_hub(&self, instance: &str) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.forget_hub(instance).await,
            Backend::Postgres(db) => db.forget_hub(instance).await,
        }
    }

    /// Marks offline every device whose live session was on hub `instance`
    /// and returns them.
    pub async fn release_hub_devices(
        &self,
        instance: &str,
    ) -> Result<Vec<ReleasedDevice>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.release_hub_devices(instance).await,
            Backend::Postgres(db) => db.release_hub_devices(instance).await,
        }
    }
}
