//! API keys: credentials for the HTTP API, kept apart from device tokens.
//!
//! Same `<id>.<secret>` scheme and rules as device tokens (see `secret`).
//! Each key has a [`Role`] that bounds what it may do; the API checks it per
//! route (`api::extract::Require`).
//! Authentication is a read; `last_used_at` is written at most once a minute
//! per key, decided from the row already read, so busy API clients do not
//! turn every request into a database write.

use super::secret::{self, Credential};
use super::{Backend, Store, StoreError, now_ms, validate_name};

/// `last_used_at` is refreshed when older than this.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// What an API key may do. Each role includes the ones before it, so roles
/// compare: `Viewer < Operator < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything (every `GET`).
    Viewer,
    /// A viewer that may also send commands.
    Operator,
    /// An operator that may also create, revoke and rotate devices, manage
    /// API keys and read the audit log.
    Admin,
}

/// A role name that is not `viewer`, `operator` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected viewer, operator or admin)")]
pub struct UnknownRole(pub String);

impl Role {
    /// Every role, least powerful first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role named `name` (exactly as [`Role::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// True when this role includes everything `needed` may do.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::parse(s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A role read back from the database; anything else is corruption.
pub(crate) fn role_from_db(name: &str) -> Result<Role, StoreError> {
    Role::parse(name).ok_or_else(|| StoreError::Corrupt(format!("unknown API key role {name:?}")))
}

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
    /// What the key may do.
    pub role: Role,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("role", &self.role)
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
    /// What the key may do.
    pub role: Role,
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
    /// What the key may do.
    pub role: Role,
}

/// What a backend returns to check an API key.
pub(crate) struct ApiKeyCredentialRow {
    pub pk: i64,
    pub name: String,
    pub role: Role,
    pub key_hash: Vec<u8>,
    pub revoked: bool,
    pub last_used_at_ms: Option<i64>,
}

/// How many fresh ids to try when one collides with an existing key.
const ID_ATTEMPTS: usize = 3;

impl Store {
    /// Creates an admin API key named `name` (what every key could do before
    /// roles existed). The returned key is the only copy.
    pub async fn create_api_key(&self, name: &str) -> Result<NewApiKey, StoreError> {
        self.create_api_key_with_role(name, Role::Admin).await
    }

    /// Creates an API key named `name` with `role`. The returned key is the only copy.
    pub async fn create_api_key_with_role(
        &self,
        name: &str,
        role: Role,
    ) -> Result<NewApiKey, StoreError> {
        validate_name(name).map_err(StoreError::InvalidName)?;
        let created_at_ms = now_ms();
        for _ in 0..ID_ATTEMPTS {
            let cred = Credential::generate();
            let inserted = match &*self.backend {
                Backend::Sqlite(db) => {
                    db.insert_api_key(&cred.id, name, role, &cred.hash, created_at_ms)
                        .await?
                }
                Backend::Postgres(db) => {
                    db.insert_api_key(&cred.id, name, role, &cred.hash, created_at_ms)
                        .await?
                }
            };
            if inserted {
                return Ok(NewApiKey {
                    id: cred.id,
                    name: name.to_owned(),
                    key: cred.token,
                    role,
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
            role: row.role,
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
