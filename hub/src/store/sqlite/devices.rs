//! SQLite queries for devices, their credentials and declarations.

use sqlx::Sqlite;

use super::SqliteStore;
use super::batch::ChunkedSql;
use crate::store::StoreError;
use crate::store::columns::{
    DeviceRow, device_columns, device_record, kind_code, kind_from_code, small_id,
};
use crate::store::devices::{
    ActuatorInfo, CredentialColumns, DeviceCredentialRow, DeviceQuery, DeviceRecord, HelloRecord,
    SensorInfo,
};

/// True when `err` is a UNIQUE constraint failure (an id collision).
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn build_device_credentials(ids: usize) -> String {
    format!(
        "SELECT id, pk, name, token_hash, revoked_at IS NOT NULL, token_generation \
         FROM devices WHERE id IN ({})",
        vec!["?"; ids].join(",")
    )
}

/// Token checks of a batch of connecting devices, one lookup per chunk.
static DEVICE_CREDENTIALS: ChunkedSql = ChunkedSql::new(512, build_device_credentials);

impl SqliteStore {
    /// Inserts a device; false if `id` is taken.
    pub(crate) async fn insert_device(
        &self,
        id: &str,
        name: &str,
        token_hash: &[u8],
        created_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO devices (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(id)
        .bind(name)
        .bind(token_hash)
        .bind(created_at_ms)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_unique_violation(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Credentials of the devices with public ids `ids` (distinct), as found.
    pub(crate) async fn device_credentials(
        &self,
        ids: &[&str],
    ) -> Result<Vec<DeviceCredentialRow>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for (sql, chunk) in DEVICE_CREDENTIALS.chunks(ids) {
            let mut query = sqlx::query_as::<_, CredentialColumns>(sql);
            for id in chunk {
                query = query.bind(*id);
            }
            found.extend(
                query
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(DeviceCredentialRow::from),
            );
        }
        Ok(found)
    }

    pub(crate) async fn get_device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let row: Option<DeviceRow> = sqlx::query_as(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(device_record).transpose()
    }

    /// Up to `fetch` devices after the cursor, in creation (key) order.
    pub(crate) async fn list_devices(
        &self,
        query: &DeviceQuery,
        fetch: u32,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let after_pk = match &query.after {
            None => 0,
            Some(id) => {
                let pk: Option<i64> = sqlx::query_scalar("SELECT pk FROM devices WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                pk.ok_or(StoreError::InvalidCursor)?
            }
        };
        // One statement for every filter combination (NULL disables a
        // filter), so it is prepared once. The key range drives the plan.
        let rows: Vec<DeviceRow> = sqlx::query_as(concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices \
             WHERE pk > ?1 \
               AND (?2 IS NULL OR online = ?2) \
               AND (?3 IS NULL OR instr(lower(name), lower(?3)) > 0) \
             ORDER BY pk LIMIT ?4"
        ))
        .bind(after_pk)
        .bind(query.online)
        .bind(query.name_contains.as_deref())
        .bind(i64::from(fetch))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(device_record).collect()
    }

    pub(crate) async fn revoke_device(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let pk = sqlx::query_scalar(
            "UPDATE devices SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING pk",
        )
        .bind(now_ms)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(pk)
    }

    /// Replaces the token hash of an unrevoked device and bumps its
    /// generation; (pk, new generation), or None if no unrevoked device has `id`.
    pub(crate) async fn rotate_device_token(
        &self,
        id: &str,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query_as(
            "UPDATE devices SET token_hash = ?, token_generation = token_generation + 1, \
                 token_rotated_at = ? \
             WHERE id = ? AND revoked_at IS NULL RETURNING pk, token_generation",
        )
        .bind(token_hash)
        .bind(now_ms)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    pub(crate) async fn devices_rotated_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT pk, token_generation FROM devices WHERE token_rotated_at >= ? \
             ORDER BY token_rotated_at, pk",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub(crate) async fn sensors(&self, pk: i64) -> Result<Vec<SensorInfo>, StoreError> {
        sensors_of(&self.pool, pk).await
    }

    pub(crate) async fn actuators(&self, pk: i64) -> Result<Vec<ActuatorInfo>, StoreError> {
        actuators_of(&self.pool, pk).await
    }

    /// `sensors` and `actuators` are sorted by id (the facade does it).
    /// Records each Hello (declarations sorted by id, the facade does it)
    /// and its digest, all in one write transaction: one commit, so one
    /// fsync, for a batch of first connects. False where the device does
    /// not exist.
    pub(crate) async fn record_hellos(
        &self,
        hellos: &[(HelloRecord, [u8; 32])],
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut recorded = Vec::with_capacity(hellos.len());
        for (hello, digest) in hellos {
            let found = record_hello_in(&mut tx, hello).await?;
            if found {
                sqlx::query("UPDATE devices SET hello_digest = ? WHERE pk = ?")
                    .bind(digest.as_slice())
                    .bind(hello.pk)
                    .execute(&mut *tx)
                    .await?;
            }
            recorded.push(found);
        }
        tx.commit().await?;
        Ok(recorded)
    }
}

/// Replaces what changed of one device's firmware and declarations, inside
/// the caller's write transaction; false if the device does not exist.
async fn record_hello_in(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    hello: &HelloRecord,
) -> Result<bool, StoreError> {
    let pk = hello.pk;
    let current: Option<Option<String>> =
        sqlx::query_scalar("SELECT firmware FROM devices WHERE pk = ?")
            .bind(pk)
            .fetch_optional(&mut **tx)
            .await?;
    let Some(current_firmware) = current else {
        return Ok(false);
    };
    if current_firmware.as_deref() != Some(hello.firmware.as_str()) {
        sqlx::query("UPDATE devices SET firmware = ? WHERE pk = ?")
            .bind(&hello.firmware)
            .bind(pk)
            .execute(&mut **tx)
            .await?;
    }
    if sensors_of(&mut **tx, pk).await? != hello.sensors {
        sqlx::query("DELETE FROM sensors WHERE device_pk = ?")
            .bind(pk)
            .execute(&mut **tx)
            .await?;
        for sensor in &hello.sensors {
            sqlx::query(
                "INSERT INTO sensors (device_pk, sensor_id, name, unit, kind) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(pk)
            .bind(i64::from(sensor.id))
            .bind(&sensor.name)
            .bind(&sensor.unit)
            .bind(kind_code(sensor.kind))
            .execute(&mut **tx)
            .await?;
        }
    }
    if actuators_of(&mut **tx, pk).await? != hello.actuators {
        sqlx::query("DELETE FROM actuators WHERE device_pk = ?")
            .bind(pk)
            .execute(&mut **tx)
            .await?;
        for actuator in &hello.actuators {
            sqlx::query(
                "INSERT INTO actuators (device_pk, actuator_id, name, kind) VALUES (?, ?, ?, ?)",
            )
            .bind(pk)
            .bind(i64::from(actuator.id))
            .bind(&actuator.name)
            .bind(kind_code(actuator.kind))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(true)
}

pub(super) async fn sensors_of<'e, E>(executor: E, pk: i64) -> Result<Vec<SensorInfo>, StoreError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT sensor_id, name, unit, kind FROM sensors WHERE device_pk = ? ORDER BY sensor_id",
    )
    .bind(pk)
    .fetch_all(executor)
    .await?;
    rows.into_iter()
        .map(|(id, name, unit, kind)| {
            Ok(SensorInfo {
                id: small_id("sensor_id", id)?,
                name,
                unit,
                kind: kind_from_code(kind)?,
            })
        })
        .collect()
}

async fn actuators_of<'e, E>(executor: E, pk: i64) -> Result<Vec<ActuatorInfo>, StoreError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT actuator_id, name, kind FROM actuators WHERE device_pk = ? ORDER BY actuator_id",
    )
    .bind(pk)
    .fetch_all(executor)
    .await?;
    rows.into_iter()
        .map(|(id, name, kind)| {
            Ok(ActuatorInfo {
                id: small_id("actuator_id", id)?,
                name,
                kind: kind_from_code(kind)?,
            })
        })
        .collect()
}
