//! SQLite queries for the audit log.
//!
//! Appends go through the writer connection, like command writes (queued in
//! the pool's order rather than sleeping in SQLite's busy handler); they
//! reach the disk with the writer's next sync.

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::audit::{AuditQuery, AuditRow, NewAuditEntry};

/// A row of `audit_log`.
#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    target: Option<String>,
    outcome: String,
    detail: String,
}

impl SqliteStore {
    pub(crate) async fn insert_audit(
        &self,
        at_ms: i64,
        entry: &NewAuditEntry,
        detail: &str,
    ) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(
            "INSERT INTO audit_log (at, actor, action, target, outcome, detail) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(at_ms)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(entry.target.as_deref())
        .bind(&entry.outcome)
        .bind(detail)
        .fetch_one(&self.writer)
        .await?;
        Ok(id)
    }

    pub(crate) async fn delete_audit_before(
        &self,
        cutoff_ms: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM audit_log WHERE id IN ( \
                 SELECT id FROM audit_log WHERE at < ?1 ORDER BY at LIMIT ?2)",
        )
        .bind(cutoff_ms)
        .bind(i64::from(limit))
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected())
    }

    pub(crate) async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, at, actor, action, target, outcome, detail FROM audit_log \
             WHERE id < ?1 AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR action = ?3) \
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(query.before_id.unwrap_or(i64::MAX))
        .bind(query.actor.as_deref())
        .bind(query.action.as_deref())
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRow {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                outcome: r.outcome,
                detail: r.detail,
            })
            .collect())
    }
}
