//! API keys: credentials for the HTTP API, kept apart from device tokens.
//!
//! Same `<id>.<secret>` scheme and rules as device tokens (see `secret`).
//! Authentication is a read; `last_used_at` is written at most once a minute
//! per key, decided from the row already read, so busy API clients do not
//! turn every request into a database write.

use super::secret::{self, Credential};
use super::{Backend, Store, StoreError, now_ms, validate_name};

/// `last_used_at` is refreshed when older than this.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// A key just created: the only time the key exists outside its holder.
///
/// `Debug` shows everything but the key.
#[derive(Clone)]
pub struct NewApiKey {
    /// Public id (16 lowercase hex characters).
    pub id: String,
    /// Name given at creation (who or what uses it).
    pub name: String,
    /// `<id>.<secret>`, for `Authorization: Bearer`; it cannot be recovered later.
    pub key: String,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// An API key as stored (without its hash).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    /// Database key.
    pub pk: i64,
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
    /// Last successful authentication, to the minute.
    pub last_used_at_ms: Option<i64>,
}

/// The holder of a valid API key.
#[derive(Debug, Clone)]
pub struct ApiKeyIdentity {
    /// Database key.
    pub pk: i64,
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// What a backend returns to check an API key.
pub(crate) struct ApiKeyCredentialRow {
    pub pk: i64,
    pub name: String,
    pub key_hash: Vec<u8>,
    pub revoked: bool,
    pub last_used_at_ms: Option<i64>,
}

/// How many fresh ids to try when one collides with an existing key.
const ID_ATTEMPTS: usize = 3;

impl Store {
    /// Creates an API key named `name`. The returned key is the only copy.
    pub async fn create_api_key(&self, name: &str) -> Result<NewApiKey, StoreError> {
        validate_name(name).map_err(StoreError::InvalidName)?;
        let created_at_ms = now_ms();
        for _ in 0..ID_ATTEMPTS {
            let cred = Credential::generate();
            let inserted = match &*self.backend {
                Backend::Sqlite(db) => {
                    db.insert_api_key(&cred.id, name, &cred.hash, created_at_ms)
                        .await?
                }
                Backend::Postgres(db) => {
                    db.insert_api_key(&cred.id, name, &cred.hash, created_at_ms)
                        .await?
                }
            };
            if inserted {
                return Ok(NewApiKey {
                    id: cred.id,
                    name: name.to_owned(),
                    key: cred.token,
                    created_at_ms,
                });
            }
        }
        Err(StoreError::Corrupt(
            "could not generate an unused API key id".into(),
        ))
    }

    /// Checks a `<key-id>.<secret>` key; None when malformed, unknown, wrong or revoked.
    pub async fn authenticate_api_key(
        &self,
        key: &str,
    ) -> Result<Option<ApiKeyIdentity>, StoreError> {
        let Some(presented) = secret::parse(key) else {
            return Ok(None);
        };
        let row = match &*self.backend {
            Backend::Sqlite(db) => db.api_key_credentials(presented.id).await?,
            Backend::Postgres(db) => db.api_key_credentials(presented.id).await?,
        };
        let Some(row) = row else {
            return Ok(None);
        };
        if !secret::matches(&presented.hash, &row.key_hash) || row.revoked {
            return Ok(None);
        }
        let now = now_ms();
        let stale = row
            .last_used_at_ms
            .is_none_or(|used| now.saturating_sub(used) >= LAST_USED_RESOLUTION_MS);
        if stale {
            match &*self.backend {
                Backend::Sqlite(db) => db.touch_api_key(row.pk, now).await?,
                Backend::Postgres(db) => db.touch_api_key(row.pk, now).await?,
            }
        }
        Ok(Some(ApiKeyIdentity {
            pk: row.pk,
            id: presented.id.to_owned(),
            name: row.name,
        }))
    }

    /// Every API key, revoked or not, in creation order.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.list_api_keys().await,
            Backend::Postgres(db) => db.list_api_keys().await,
        }
    }

    /// Revokes the key; false if no key has this id. Revoking twice keeps the first time.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        if !secret::is_valid_id(id) {
            return Ok(false);
        }
        match &*self.backend {
            Backend::Sqlite(db) => db.revoke_api_key(id, now_ms()).await,
            Backend::Postgres(db) => db.revoke_api_key(id, now_ms()).await,
        }
    }
}
