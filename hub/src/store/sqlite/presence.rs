//! SQLite queries for sessions, last-seen times and revocation polling.

use super::SqliteStore;
use super::batch::{ChunkedSql, placeholders};
use crate::store::StoreError;
use crate::store::presence::{ClosedRow, OpenedColumns, OpenedRow, SessionClosing, SessionOpening};

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

/// Opens sessions: online on this hub (the last parameter), counter bumped.
/// RETURNING may not name the FROM table in SQLite, so the stored Hello
/// digest comes back and the facade compares it.
fn build_sessions_opened(rows: usize) -> String {
    format!(
        "WITH v(pk, now) AS (VALUES {}) \
         UPDATE devices SET online = 1, session_counter = session_counter + 1, \
             last_seen = max(coalesce(last_seen, v.now), v.now), hub_instance = ? \
         FROM v WHERE devices.pk = v.pk \
         RETURNING pk, session_counter, last_seq, hello_digest, \
             EXISTS (SELECT 1 FROM commands WHERE commands.device_pk = devices.pk \
                     AND status IN ('queued', 'sent', 'delivered'))",
        placeholders(rows, 2)
    )
}

/// The facade guarantees one row per key.
static SESSIONS_OPENED: ChunkedSql = ChunkedSql::new(512, build_sessions_opened);

/// Closes sessions: offline (on no hub) only where the counter is still the
/// session's own; last seen never moves backwards.
fn build_sessions_closed(rows: usize) -> String {
    format!(
        "WITH v(pk, counter, now) AS (VALUES {}) \
         UPDATE devices SET \
             online = CASE WHEN session_counter = v.counter THEN 0 ELSE online END, \
             hub_instance = CASE WHEN session_counter = v.counter THEN NULL ELSE hub_instance END, \
             last_seen = max(coalesce(last_seen, v.now), v.now) \
         FROM v WHERE devices.pk = v.pk RETURNING pk, session_counter",
        placeholders(rows, 3)
    )
}

/// The facade guarantees one row per key.
static SESSIONS_CLOSED: ChunkedSql = ChunkedSql::new(512, build_sessions_closed);

impl SqliteStore {
    pub(crate) async fn sessions_opened(
        &self,
        instance: &str,
        openings: &[&SessionOpening],
    ) -> Result<Vec<OpenedRow>, StoreError> {
        let mut rows = Vec::with_capacity(openings.len());
        let mut chunks = SESSIONS_OPENED.chunks(openings).peekable();
        let mut tx = None;
        while let Some((sql, chunk)) = chunks.next() {
            // More than one chunk: one transaction, so one commit.
            if tx.is_none() && chunks.peek().is_some() {
                tx = Some(self.presence.begin_with("BEGIN IMMEDIATE").await?);
            }
            let mut query = sqlx::query_as::<_, OpenedColumns>(sql);
            for opening in chunk {
                query = query.bind(opening.pk).bind(opening.now_ms);
            }
            query = query.bind(instance);
            let found = match tx.as_mut() {
                Some(tx) => query.fetch_all(&mut **tx).await?,
                None => query.fetch_all(&self.presence).await?,
            };
            rows.extend(found.into_iter().map(OpenedRow::from));
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        // The writer's commits become durable a moment after they are visible
        // (see `wal_sync`). The device drops every frame up to `last_seq` from
        // its outbox, so that seq must be on disk before we report it.
        self.wal_sync.wait_all_durable().await?;
        Ok(rows)
    }

    pub(crate) async fn sessions_closed(
        &self,
        closings: &[SessionClosing],
    ) -> Result<Vec<ClosedRow>, StoreError> {
        let mut rows = Vec::with_capacity(closings.len());
        let mut chunks = SESSIONS_CLOSED.chunks(closings).peekable();
        let mut tx = None;
        while let Some((sql, chunk)) = chunks.next() {
            if tx.is_none() && chunks.peek().is_some() {
                tx = Some(self.presence.begin_with("BEGIN IMMEDIATE").await?);
            }
            let mut query = sqlx::query_as::<_, (i64, i64)>(sql);
            for closing in chunk {
                query = query
                    .bind(closing.pk)
                    .bind(closing.session_counter)
                    .bind(closing.now_ms);
            }
            let found = match tx.as_mut() {
                Some(tx) => query.fetch_all(&mut **tx).await?,
                None => query.fetch_all(&self.presence).await?,
            };
            rows.extend(found.into_iter().map(|(pk, session_counter)| ClosedRow {
                pk,
                session_counter,
            }));
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        Ok(rows)
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
