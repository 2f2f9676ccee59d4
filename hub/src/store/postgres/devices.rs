//! Postgres queries for devices, their credentials and declarations.

use sqlx::Postgres;

use super::{PgStore, bounded};
use crate::store::StoreError;
use crate::store::columns::{
    DeviceRow, device_columns, device_record, kind_code, kind_from_code, small_id,
};
use crate::store::devices::{
    ActuatorInfo, CredentialColumns, DeviceCredentialRow, DeviceQuery, DeviceRecord, SensorInfo,
};

/// One page of devices after a key. One statement for every filter
/// combination (NULL disables a filter), so it is prepared once; the key
/// range drives the plan. `COLLATE "C"` makes `lower` fold ASCII letters
/// only, whatever the database's locale, as SQLite's `lower` does.
const LIST_SQL: &str = concat!(
    "SELECT ",
    device_columns!(),
    " FROM devices \
     WHERE pk > $1 \
       AND ($2::boolean IS NULL OR online = $2) \
       AND ($3::text IS NULL OR strpos(lower(name COLLATE \"C\"), lower($3 COLLATE \"C\")) > 0) \
     ORDER BY pk LIMIT $4"
);

impl PgStore {
    /// Inserts a device; false if `id` is taken.
    pub(crate) async fn insert_device(
        &self,
        id: &str,
        name: &str,
        token_hash: &[u8],
        created_at_ms: i64,
    ) -> Result<bool, StoreError> {
        bounded(async {
            let result = sqlx::query(
                "INSERT INTO devices (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(name)
            .bind(token_hash)
            .bind(created_at_ms)
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected() == 1)
        })
        .await
    }

    /// Credentials of the devices with public ids `ids` (distinct), as found.
    pub(crate) async fn device_credentials(
        &self,
        ids: &[&str],
    ) -> Result<Vec<DeviceCredentialRow>, StoreError> {
        bounded(async {
            let rows: Vec<CredentialColumns> = sqlx::query_as(
                "SELECT id, pk, name, token_hash, revoked_at IS NOT NULL, token_generation \
                 FROM devices WHERE id = ANY($1)",
            )
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(DeviceCredentialRow::from).collect())
        })
        .await
    }

    pub(crate) async fn get_device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        bounded(async {
            let row: Option<DeviceRow> = sqlx::query_as(concat!(
                "SELECT ",
                device_columns!(),
                " FROM devices WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            row.map(device_record).transpose()
        })
        .await
    }

    /// Up to `fetch` devices after the cursor, in creation (key) order.
    pub(crate) async fn list_devices(
        &self,
        query: &DeviceQuery,
        fetch: u32,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        bounded(async {
            let after_pk = match &query.after {
                None => 0,
                Some(id) => {
                    let pk: Option<i64> =
                        sqlx::query_scalar("SELECT pk FROM devices WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&self.pool)
                            .await?;
                    pk.ok_or(StoreError::InvalidCursor)?
                }
            };
            let rows: Vec<DeviceRow> = sqlx::query_as(LIST_SQL)
                .bind(after_pk)
                .bind(query.online)
                .bind(query.name_contains.as_deref())
                .bind(i64::from(fetch))
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(device_record).collect()
        })
        .await
    }

    pub(crate) async fn revoke_device(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        bounded(async {
            let pk = sqlx::query_scalar(
                "UPDATE devices SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2 \
                 RETURNING pk",
            )
            .bind(now_ms)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(pk)
        })
        .await
    }

    /// Replaces the token hash of an unrevoked device and bumps its
    /// generation; (pk, new generation), or None if no unrevoked device has `id`.
    pub(crate) async fn rotate_device_token(
        &self,
        id: &str,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        bounded(async {
            let row = sqlx::query_as(
                "UPDATE devices SET token_hash = $1, token_generation = token_generation + 1, \
                     token_rotated_at = $2 \
                 WHERE id = $3 AND revoked_at IS NULL RETURNING pk, token_generation",
            )
            .bind(token_hash)
            .bind(now_ms)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row)
        })
        .await
    }

    pub(crate) async fn devices_rotated_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        bounded(async {
            let rows = sqlx::query_as(
                "SELECT pk, token_generation FROM devices WHERE token_rotated_at >= $1 \
                 ORDER BY token_rotated_at, pk",
            )
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows)
        })
        .await
    }

    pub(crate) async fn sensors(&self, pk: i64) -> Result<Vec<SensorInfo>, StoreError> {
        bounded(sensors_of(&self.pool, pk)).await
    }

    pub(crate) async fn actuators(&self, pk: i64) -> Result<Vec<ActuatorInfo>, StoreError> {
        bounded(actuators_of(&self.pool, pk)).await
    }

    /// `sensors` and `actuators` are sorted by id (the facade does it).
    pub(crate) async fn record_hello(
        &self,
        pk: i64,
        firmware: &str,
        sensors: &[SensorInfo],
        actuators: &[ActuatorInfo],
    ) -> Result<(), StoreError> {
        bounded(self.record_hello_inner(pk, firmware, sensors, actuators)).await
    }

    async fn record_hello_inner(
        &self,
        pk: i64,
        firmware: &str,
        sensors: &[SensorInfo],
        actuators: &[ActuatorInfo],
    ) -> Result<(), StoreError> {
        // Compare first: a reconnect usually declares the same things, and
        // then nothing is written (no row versions, no WAL).
        let current: Option<Option<String>> =
            sqlx::query_scalar("SELECT firmware FROM devices WHERE pk = $1")
                .bind(pk)
                .fetch_optional(&self.pool)
                .await?;
        let Some(current_firmware) = current else {
            return Err(StoreError::UnknownDevice(pk));
        };
        let firmware_same = current_firmware.as_deref() == Some(firmware);
        let sensors_same = sensors_of(&self.pool, pk).await? == sensors;
        let actuators_same = actuators_of(&self.pool, pk).await? == actuators;
        if firmware_same && sensors_same && actuators_same {
            return Ok(());
        }

        let mut tx = self.pool.begin().await?;
        // Two Hellos of one device (an old and a new session, perhaps on two
        // hubs) replace the declarations one after the other, not
        // interleaved: the second waits here until the first commits, then
        // deletes what the first inserted. NO KEY: the device's readings and
        // declarations may still reference the row meanwhile.
        let locked: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM devices WHERE pk = $1 FOR NO KEY UPDATE")
                .bind(pk)
                .fetch_optional(&mut *tx)
                .await?;
        if locked.is_none() {
            return Err(StoreError::UnknownDevice(pk));
        }
        if !firmware_same {
            sqlx::query("UPDATE devices SET firmware = $1 WHERE pk = $2")
                .bind(firmware)
                .bind(pk)
                .execute(&mut *tx)
                .await?;
        }
        if !sensors_same {
            sqlx::query("DELETE FROM sensors WHERE device_pk = $1")
                .bind(pk)
                .execute(&mut *tx)
                .await?;
            let ids: Vec<i32> = sensors.iter().map(|s| i32::from(s.id)).collect();
            let names: Vec<&str> = sensors.iter().map(|s| s.name.as_str()).collect();
            let units: Vec<&str> = sensors.iter().map(|s| s.unit.as_str()).collect();
            let kinds: Vec<i16> = sensors.iter().map(|s| kind_code(s.kind)).collect();
            sqlx::query(
                "INSERT INTO sensors (device_pk, sensor_id, name, unit, kind) \
                 SELECT $1::int8, * FROM UNNEST($2::int4[], $3::text[], $4::text[], $5::int2[])",
            )
            .bind(pk)
            .bind(&ids)
            .bind(&names)
            .bind(&units)
            .bind(&kinds)
            .execute(&mut *tx)
            .await?;
        }
        if !actuators_same {
            sqlx::query("DELETE FROM actuators WHERE device_pk = $1")
                .bind(pk)
                .execute(&mut *tx)
                .await?;
            let ids: Vec<i32> = actuators.iter().map(|a| i32::from(a.id)).collect();
            let names: Vec<&str> = actuators.iter().map(|a| a.name.as_str()).collect();
            let kinds: Vec<i16> = actuators.iter().map(|a| kind_code(a.kind)).collect();
            sqlx::query(
                "INSERT INTO actuators (device_pk, actuator_id, name, kind) \
                 SELECT $1::int8, * FROM UNNEST($2::int4[], $3::text[], $4::int2[])",
            )
            .bind(pk)
            .bind(&ids)
            .bind(&names)
            .bind(&kinds)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

pub(super) async fn sensors_of<'e, E>(executor: E, pk: i64) -> Result<Vec<SensorInfo>, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows: Vec<(i32, String, String, i16)> = sqlx::query_as(
        "SELECT sensor_id, name, unit, kind FROM sensors WHERE device_pk = $1 ORDER BY sensor_id",
    )
    .bind(pk)
    .fetch_all(executor)
    .await?;
    rows.into_iter()
        .map(|(id, name, unit, kind)| {
            Ok(SensorInfo {
                id: small_id("sensor_id", i64::from(id))?,
                name,
                unit,
                kind: kind_from_code(i64::from(kind))?,
            })
        })
        .collect()
}

async fn actuators_of<'e, E>(executor: E, pk: i64) -> Result<Vec<ActuatorInfo>, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows: Vec<(i32, String, i16)> = sqlx::query_as(
        "SELECT actuator_id, name, kind FROM actuators WHERE device_pk = $1 \
         ORDER BY actuator_id",
    )
    .bind(pk)
    .fetch_all(executor)
    .await?;
    rows.into_iter()
        .map(|(id, name, kind)| {
            Ok(ActuatorInfo {
                id: small_id("actuator_id", i64::from(id))?,
                name,
                kind: kind_from_code(i64::from(kind))?,
            })
        })
        .collect()
}
