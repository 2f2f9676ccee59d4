//! Postgres queries for API keys.

use super::{PgStore, bounded};
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

impl PgStore {
    /// Inserts a key; false if `id` is taken.
    pub(crate) async fn insert_api_key(
        &self,
        id: &str,
        name: &str,
        role: Role,
        key_hash: &[u8],
        created_at_ms: i64,
    ) -> Result<bool, StoreError> {
        bounded(async {
            let result = sqlx::query(
                "INSERT INTO api_keys (id, name, role, key_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(name)
            .bind(role.as_str())
            .bind(key_hash)
            .bind(created_at_ms)
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected() == 1)
        })
        .await
    }

    pub(crate) async fn api_key_credentials(
        &self,
        id: &str,
    ) -> Result<Option<ApiKeyCredentialRow>, StoreError> {
        bounded(async {
            let row: Option<CredentialRow> = sqlx::query_as(
                "SELECT pk, name, role, key_hash, revoked_at IS NOT NULL AS revoked, last_used_at \
                 FROM api_keys WHERE id = $1",
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
        })
        .await
    }

    pub(crate) async fn touch_api_key(&self, pk: i64, now_ms: i64) -> Result<(), StoreError> {
        bounded(async {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 \
                 WHERE pk = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(pk)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        bounded(async {
            let rows: Vec<KeyRow> = sqlx::query_as(
                "SELECT pk, id, name, role, created_at, revoked_at, last_used_at FROM api_keys \
                 ORDER BY pk",
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
        })
        .await
    }

    pub(crate) async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        bounded(async {
            let pk: Option<i64> = sqlx::query_scalar(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2 \
                 RETURNING pk",
            )
            .bind(now_ms)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(pk.is_some())
        })
        .await
    }
}
