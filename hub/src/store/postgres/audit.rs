//! Postgres queries for the audit log (`detail` is JSONB).

use super::{PgStore, bounded};
use crate::store::StoreError;
use crate::store::audit::{AuditQuery, AuditRow, NewAuditEntry};

/// A row of `audit_log`, the detail as text.
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

impl PgStore {
    pub(crate) async fn insert_audit(
        &self,
        at_ms: i64,
        entry: &NewAuditEntry,
        detail: &str,
    ) -> Result<i64, StoreError> {
        bounded(async {
            let id = sqlx::query_scalar(
                "INSERT INTO audit_log (at, actor, action, target, outcome, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING id",
            )
            .bind(at_ms)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(entry.target.as_deref())
            .bind(&entry.outcome)
            .bind(detail)
            .fetch_one(&self.pool)
            .await?;
            Ok(id)
        })
        .await
    }

    pub(crate) async fn delete_audit_before(
        &self,
        cutoff_ms: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        bounded(async {
            let result = sqlx::query(
                "DELETE FROM audit_log WHERE id IN ( \
                     SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected())
        })
        .await
    }

    pub(crate) async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        bounded(async {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT id, at, actor, action, target, outcome, detail::text AS detail \
                 FROM audit_log \
                 WHERE id < $1 AND ($2::text IS NULL OR actor = $2) \
                   AND ($3::text IS NULL OR action = $3) \
                 ORDER BY id DESC LIMIT $4",
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
        })
        .await
    }
}
