//! SQLite queries for hub liveness (see `store::hubs`).

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::hubs::ReleasedDevice;

impl SqliteStore {
    pub(crate) async fn hub_alive(&self, instance: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hubs (instance, started_at, last_seen) VALUES (?1, ?2, ?2) \
             ON CONFLICT (instance) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(instance)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn stale_hubs(
        &self,
        before_ms: i64,
        except: &str,
    ) -> Result<Vec<String>, StoreError> {
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT instance FROM hubs WHERE last_seen < ?1 AND instance <> ?2 ORDER BY instance",
        )
        .bind(before_ms)
        .bind(except)
        .fetch_all(&self.pool)
        .await?;
        Ok(stale)
    }

    pub(crate) async fn claim_stale_hub(
        &self,
        instance: &str,
        before_ms: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM hubs WHERE instance = ?1 AND last_seen < ?2")
            .bind(instance)
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub(crate) async fn forget_hub(&self, instance: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM hubs WHERE instance = ?1")
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn release_hub_devices(
        &self,
        instance: &str,
    ) -> Result<Vec<ReleasedDevice>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE devices SET online = 0, hub_instance = NULL \
             WHERE hub_instance = ?1 RETURNING id, session_counter",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, session_counter)| ReleasedDevice {
                id,
                session_counter,
            })
            .collect())
    }
}
