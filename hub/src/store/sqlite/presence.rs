//! SQLite queries for sessions, last-seen times and revocation polling.

use super::SqliteStore;
use super::batch::{ChunkedSql, placeholders};
use crate::store::StoreError;
use crate::store::columns::seq_from_db;
use crate::store::presence::SessionStart;

fn build_touch(rows: usize) -> String {
    format!(
        "WITH v(pk, ms) AS (VALUES {}) \
         UPDATE devices SET last_seen = v.ms FROM v \
         WHERE devices.pk = v.pk AND (devices.last_seen IS NULL OR devices.last_seen < v.ms)",
        placeholders(rows, 2)
    )
}

/// Bulk last-seen update; the facade guarantees one row per key.
static TOUCH_LAST_SEEN: ChunkedSql = ChunkedSql::new(512, build_touch);

impl SqliteStore {
    pub(crate) async fn session_opened(
        &self,
        pk: i64,
        now_ms: i64,
        instance: &str,
        hello_digest: &[u8],
    ) -> Result<SessionStart, StoreError> {
        let row: Option<(i64, i64, bool, bool)> = sqlx::query_as(
            "UPDATE devices SET online = 1, session_counter = session_counter + 1, \
                 last_seen = max(coalesce(last_seen, ?2), ?2), hub_instance = ?3 \
             WHERE pk = ?1 RETURNING session_counter, last_seq, hello_digest IS NOT ?4, \
                 EXISTS (SELECT 1 FROM commands WHERE device_pk = ?1 \
                         AND status IN ('queued', 'sent', 'delivered'))",
        )
        .bind(pk)
        .bind(now_ms)
        .bind(instance)
        .bind(hello_digest)
        .fetch_optional(&self.presence)
        .await?;
        let (session_counter, last_seq, hello_changed, open_commands) =
            row.ok_or(StoreError::UnknownDevice(pk))?;
        // The writer's commits become durable a moment after they are visible
        // (see `wal_sync`). The device drops every frame up to `last_seq` from
        // its outbox, so that seq must be on disk before we report it.
        self.wal_sync.wait_all_durable().await?;
        Ok(SessionStart {
            session_counter,
            last_stored_seq: seq_from_db(last_seq)?,
            hello_changed,
            open_commands,
        })
    }

    pub(crate) async fn session_closed(
        &self,
        pk: i64,
        session_counter: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let current: Option<i64> = sqlx::query_scalar(
            "UPDATE devices SET \
                 online = CASE WHEN session_counter = ?2 THEN 0 ELSE online END, \
                 hub_instance = CASE WHEN session_counter = ?2 THEN NULL ELSE hub_instance END, \
                 last_seen = max(coalesce(last_seen, ?3), ?3) \
             WHERE pk = ?1 RETURNING session_counter",
        )
        .bind(pk)
        .bind(session_counter)
        .bind(now_ms)
        .fetch_optional(&self.presence)
        .await?;
        Ok(current == Some(session_counter))
    }

    pub(crate) async fn set_hello_digest(&self, pk: i64, digest: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET hello_digest = ?2 WHERE pk = ?1")
            .bind(pk)
            .bind(digest)
            .execute(&self.presence)
            .await?;
        Ok(())
    }

    /// `seen` has one entry per key (the facade deduplicates).
    pub(crate) async fn touch_last_seen(&self, seen: &[(i64, i64)]) -> Result<(), StoreError> {
        let mut tx = self.presence.begin_with("BEGIN IMMEDIATE").await?;
        for (sql, chunk) in TOUCH_LAST_SEEN.chunks(seen) {
            let mut query = sqlx::query(sql);
            for &(pk, ms) in chunk {
                query = query.bind(pk).bind(ms);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn devices_revoked_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT pk, revoked_at FROM devices WHERE revoked_at >= ? ORDER BY revoked_at, pk",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
