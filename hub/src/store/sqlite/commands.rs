//! SQLite queries for commands.
//!
//! Writes go through the writer connection, queued behind the ingest batches
//! in the pool's order instead of sleeping in SQLite's busy handler (which
//! backs off in whole milliseconds and would dominate a command's round
//! trip). Like a batch, a new command is made durable through `wal_sync`
//! before the caller hears it was stored. Status updates are not waited for:
//! they reach the disk with the next sync, and a status lost to a power cut
//! is repaired by the resend on reconnect (the device answers from memory).

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::commands::{
    CommandQuery, CommandRecord, CommandRow, NewCommand, SELECT_COMMANDS, action_to_db,
    command_records, reply_columns, value_to_db,
};

impl SqliteStore {
    /// Inserts and syncs; None when the device already has a command under
    /// this idempotency key.
    pub(crate) async fn insert_command(&self, new: &NewCommand) -> Result<Option<i64>, StoreError> {
        let (reply_topic, reply_correlation) = reply_columns(new.reply.as_ref());
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO commands (device_pk, actuator_id, actuator_name, action, \
                 idempotency_key, source, status, created_at, expires_at, reply_topic, \
                 reply_correlation) \
             VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?) \
             ON CONFLICT (device_pk, idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(new.device_pk)
        .bind(i64::from(new.actuator_id))
        .bind(&new.actuator_name)
        .bind(action_to_db(&new.action)?)
        .bind(new.idempotency_key.as_deref())
        .bind(&new.source)
        .bind(new.created_ms)
        .bind(new.expires_ms)
        .bind(reply_topic)
        .bind(reply_correlation)
        .fetch_optional(&self.writer)
        .await?;
        if id.is_some() {
            let commit = self.wal_sync.record_commit();
            self.wal_sync.wait_durable(commit).await?;
        }
        Ok(id)
    }

    pub(crate) async fn command_by_id(&self, id: i64) -> Result<Option<CommandRecord>, StoreError> {
        let row: Option<CommandRow> = sqlx::query_as(&format!("{SELECT_COMMANDS} WHERE c.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(CommandRecord::try_from).transpose()
    }

    pub(crate) async fn command_by_idempotency_key(
        &self,
        device_pk: i64,
        key: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let row: Option<CommandRow> = sqlx::query_as(&format!(
            "{SELECT_COMMANDS} WHERE c.device_pk = ? AND c.idempotency_key = ?"
        ))
        .bind(device_pk)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(CommandRecord::try_from).transpose()
    }

    pub(crate) async fn list_commands(
        &self,
        query: &CommandQuery,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let rows: Vec<CommandRow> = sqlx::query_as(&format!(
            "{SELECT_COMMANDS} WHERE c.device_pk = ?1 AND c.id < ?2 AND (?3 IS NULL OR c.status = ?3) \
             ORDER BY c.id DESC LIMIT ?4"
        ))
        .bind(query.device_pk)
        .bind(query.before_id.unwrap_or(i64::MAX))
        .bind(query.status.map(|s| s.as_str()))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        command_records(rows)
    }

    pub(crate) async fn open_commands(
        &self,
        device_pk: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let rows: Vec<CommandRow> = sqlx::query_as(&format!(
            "{SELECT_COMMANDS} WHERE c.device_pk = ? AND c.status IN ('queued', 'sent', 'delivered') \
             ORDER BY c.id LIMIT ?"
        ))
        .bind(device_pk)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        command_records(rows)
    }

    pub(crate) async fn queued_commands_since(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let rows: Vec<CommandRow> = sqlx::query_as(&format!(
            "{SELECT_COMMANDS} WHERE c.status = 'queued' AND c.created_at >= ? \
             ORDER BY c.id LIMIT ?"
        ))
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        command_records(rows)
    }

    pub(crate) async fn due_commands(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let rows: Vec<CommandRow> = sqlx::query_as(&format!(
            "{SELECT_COMMANDS} WHERE c.status IN ('queued', 'sent', 'delivered') AND c.expires_at <= ? \
             ORDER BY c.expires_at LIMIT ?"
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        command_records(rows)
    }

    /// Writes `after` over the row if it still holds `before`'s status and attempts.
    pub(crate) async fn update_command(
        &self,
        before: &CommandRecord,
        after: &CommandRecord,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE commands SET status = ?, sent_at = ?, delivered_at = ?, finished_at = ?, \
                 attempts = ?, result_value = ?, reason = ? \
             WHERE id = ? AND status = ? AND attempts = ?",
        )
        .bind(after.status.as_str())
        .bind(after.sent_ms)
        .bind(after.delivered_ms)
        .bind(after.finished_ms)
        .bind(after.attempts)
        .bind(value_to_db(after.result_value)?)
        .bind(after.reason.as_deref())
        .bind(before.id)
        .bind(before.status.as_str())
        .bind(before.attempts)
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}
