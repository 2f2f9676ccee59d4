//! Postgres queries for hub liveness (see `store::hubs`).

use super::{PgStore, bounded};
use crate::store::StoreError;
use crate::store::hubs::ReleasedDevice;

impl PgStore {
    pub(crate) async fn hub_alive(&self, instance: &str, now_ms: i64) -> Result<(), StoreError> {
        bounded(async {
            sqlx::query(
                "INSERT INTO hubs (instance, started_at, last_seen) VALUES ($1, $2, $2) \
                 ON CONFLICT (instance) DO UPDATE SET last_seen = excluded.last_seen",
            )
            .bind(instance)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn stale_hubs(
        &self,
        before_ms: i64,
        except: &str,
    ) -> Result<Vec<String>, StoreError> {
        bounded(async {
            let stale: Vec<String> = sqlx::query_scalar(
                "SELECT instance FROM hubs WHERE last_seen < $1 AND instance <> $2 ORDER BY instance",
            )
            .bind(before_ms)
            .bind(except)
            .fetch_all(&self.pool)
            .await?;
            Ok(stale)
        })
        .await
    }

    pub(crate) async fn claim_stale_hub(
        &self,
        instance: &str,
        before_ms: i64,
    ) -> Result<bool, StoreError> {
        bounded(async {
            let result = sqlx::query("DELETE FROM hubs WHERE instance = $1 AND last_seen < $2")
                .bind(instance)
                .bind(before_ms)
                .execute(&self.pool)
                .await?;
            Ok(result.rows_affected() == 1)
        })
        .await
    }

    pub(crate) async fn forget_hub(&self, instance: &str) -> Result<(), StoreError> {
        bounded(async {
            sqlx::query("DELETE FROM hubs WHERE instance = $1")
                .bind(instance)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn release_hub_devices(
        &self,
        instance: &str,
    ) -> Result<Vec<ReleasedDevice>, StoreError> {
        bounded(async {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "UPDATE devices SET online = false, hub_instance = NULL \
                 WHERE hub_instance = $1 RETURNING id, session_counter",
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
        })
        .await
    }
}
