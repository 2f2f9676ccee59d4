//! SQLite queries for API keys.

use super::SqliteStore;
use super::devices::is_unique_violation;
use crate::store::StoreError;
use crate::store::api_keys::{ApiKeyCredentialRow, ApiKeyRecord, Role, role_from_db};

/// A row of `api_keys` without its hash.
#[derive(sqlx::FromRow)]
struct KeyRow {
    pk: i64,
    id: String,
    name: String,
    role: String,
    created_at: i64,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

/// What authentication reads.
#[derive(sqlx::FromRow)]
struct CredentialRow {
    pk: i64,
    name: String,
    role: String,
    key_hash: Vec<u8>,
    revoked: bool,
    last_used_at: Option<i64>,
}

impl SqliteStore {
    /// Inserts a key; false if `id` is taken.
    pub(crate) async fn insert_api_key(
        &self,
        id: &str,
        name: &str,
        role: Role,
        key_hash: &[u8],
        created_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO api_keys (id, name, role, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(name)
        .bind(role.as_str())
        .bind(key_hash)
        .bind(created_at_ms)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_unique_violation(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    pub(crate) async fn api_key_credentials(
        &self,
        id: &str,
    ) -> Result<Option<ApiKeyCredentialRow>, StoreError> {
        let row: Option<CredentialRow> = sqlx::query_as(
            "SELECT pk, name, role, key_hash, revoked_at IS NOT NULL AS revoked, last_used_at \
             FROM api_keys WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ApiKeyCredentialRow {
                pk: row.pk,
                role: role_from_db(&row.role)?,
                name: row.name,
                key_hash: row.key_hash,
                revoked: row.revoked,
                last_used_at_ms: row.last_used_at,
            })
        })
        .transpose()
    }

    pub(crate) async fn touch_api_key(&self, pk: i64, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = ?2 \
             WHERE pk = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        )
        .bind(pk)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT pk, id, name, role, created_at, revoked_at, last_used_at FROM api_keys ORDER BY pk",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ApiKeyRecord {
                    pk: row.pk,
                    role: role_from_db(&row.role)?,
                    id: row.id,
                    name: row.name,
                    created_at_ms: row.created_at,
                    revoked_at_ms: row.revoked_at,
                    last_used_at_ms: row.last_used_at,
                })
            })
            .collect()
    }

    pub(crate) async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let pk: Option<i64> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING pk",
        )
        .bind(now_ms)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(pk.is_some())
    }
}
