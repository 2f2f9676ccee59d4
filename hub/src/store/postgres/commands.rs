//! Postgres queries for commands.
//!
//! Everything runs on the general pool, each call under the store's deadline
//! (`bounded`). A COMMIT returns once the server flushed its WAL, so a new
//! command is durable when `insert_command` returns.

use super::{PgStore, bounded};
use crate::store::StoreError;
use crate::store::commands::{
    CommandQuery, CommandRecord, CommandRow, NewCommand, SELECT_COMMANDS, action_to_db,
    command_records, reply_columns, value_to_db,
};

impl PgStore {
    /// Inserts (durable on return); None when the device already has a command under
    /// this idempotency key.
    pub(crate) async fn insert_command(&self, new: &NewCommand) -> Result<Option<i64>, StoreError> {
        bounded(async {
            let (reply_topic, reply_correlation) = reply_columns(new.reply.as_ref());
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO commands (device_pk, actuator_id, actuator_name, action, \
                     idempotency_key, source, status, created_at, expires_at, reply_topic, \
                     reply_correlation) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $10) \
                 ON CONFLICT (device_pk, idempotency_key) DO NOTHING RETURNING id",
            )
            .bind(new.device_pk)
            .bind(i32::from(new.actuator_id))
            .bind(&new.actuator_name)
            .bind(action_to_db(&new.action)?)
            .bind(new.idempotency_key.as_deref())
            .bind(&new.source)
            .bind(new.created_ms)
            .bind(new.expires_ms)
            .bind(reply_topic)
            .bind(reply_correlation)
            .fetch_optional(&self.pool)
            .await?;
            Ok(id)
        })
        .await
    }

    pub(crate) async fn command_by_id(&self, id: i64) -> Result<Option<CommandRecord>, StoreError> {
        bounded(async {
            let row: Option<CommandRow> =
                sqlx::query_as(&format!("{SELECT_COMMANDS} WHERE c.id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(CommandRecord::try_from).transpose()
        })
        .await
    }

    pub(crate) async fn command_by_idempotency_key(
        &self,
        device_pk: i64,
        key: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        bounded(async {
            let row: Option<CommandRow> = sqlx::query_as(&format!(
                "{SELECT_COMMANDS} WHERE c.device_pk = $1 AND c.idempotency_key = $2"
            ))
            .bind(device_pk)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            row.map(CommandRecord::try_from).transpose()
        })
        .await
    }

    pub(crate) async fn list_commands(
        &self,
        query: &CommandQuery,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        bounded(async {
            let rows: Vec<CommandRow> = sqlx::query_as(&format!(
                "{SELECT_COMMANDS} WHERE c.device_pk = $1 AND c.id < $2 AND ($3::text IS NULL OR c.status = $3) \
                 ORDER BY c.id DESC LIMIT $4"
            ))
            .bind(query.device_pk)
            .bind(query.before_id.unwrap_or(i64::MAX))
            .bind(query.status.map(|s| s.as_str()))
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?;
            command_records(rows)
        })
        .await
    }

    pub(crate) async fn open_commands(
        &self,
        device_pk: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        bounded(async {
            let rows: Vec<CommandRow> = sqlx::query_as(&format!(
                "{SELECT_COMMANDS} WHERE c.device_pk = $1 AND c.status IN ('queued', 'sent', 'delivered') \
                 ORDER BY c.id LIMIT $2"
            ))
            .bind(device_pk)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            command_records(rows)
        })
        .await
    }

    pub(crate) async fn queued_commands_since(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        bounded(async {
            let rows: Vec<CommandRow> = sqlx::query_as(&format!(
                "{SELECT_COMMANDS} WHERE c.status = 'queued' AND c.created_at >= $1 \
                 ORDER BY c.id LIMIT $2"
            ))
            .bind(since_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            command_records(rows)
        })
        .await
    }

    pub(crate) async fn due_commands(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        bounded(async {
            let rows: Vec<CommandRow> = sqlx::query_as(&format!(
                "{SELECT_COMMANDS} WHERE c.status IN ('queued', 'sent', 'delivered') AND c.expires_at <= $1 \
                 ORDER BY c.expires_at LIMIT $2"
            ))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            command_records(rows)
        })
        .await
    }

    /// Writes `after` over the row if it still holds `before`'s status and attempts.
    pub(crate) async fn update_command(
        &self,
        before: &CommandRecord,
        after: &CommandRecord,
    ) -> Result<bool, StoreError> {
        bounded(async {
            let result = sqlx::query(
                "UPDATE commands SET status = $1, sent_at = $2, delivered_at = $3, finished_at = $4, \
                     attempts = $5, result_value = $6, reason = $7 \
                 WHERE id = $8 AND status = $9 AND attempts = $10",
            )
            .bind(after.status.as_str())
            .bind(after.sent_ms)
            .bind(after.delivered_ms)
            .bind(after.finished_ms)
            .bind(i32::try_from(after.attempts).unwrap_or(i32::MAX))
            .bind(value_to_db(after.result_value)?)
            .bind(after.reason.as_deref())
            .bind(before.id)
            .bind(before.status.as_str())
            .bind(i32::try_from(before.attempts).unwrap_or(i32::MAX))
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected() == 1)
        })
        .await
    }
}
