//! Devices: provisioning, credentials, lookup, listing, revocation, token
//! rotation, and the sensors and actuators each device declared in its
//! latest Hello.
//!
//! Rotation replaces the token's secret (the id stays) and bumps the
//! device's `token_generation`. A session remembers the generation it
//! authenticated with ([`DeviceIdentity::token_generation`]); hubs poll
//! [`Store::devices_rotated_since`] and close sessions on an older one, so
//! a rotation by any process (another hub, the CLI) ends them.
//!
//! The credential rules (token shape, hashing, constant-time comparison,
//! revocation) are applied here, above the backend, so every backend enforces
//! them identically; backends only store and fetch rows.

use std::collections::HashMap;

use schema::ValueKind;

use super::secret::{self, Credential};
use super::{Backend, Store, StoreError, now_ms, validate_name};

/// An authenticated device.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// Database key.
    pub pk: i64,
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
    /// How many times the token had been rotated when this identity was
    /// checked; a session whose generation is older than the stored one
    /// authenticated with a token that no longer works. A session that used
    /// no token (a client certificate) carries `i64::MAX`: no rotation closes it.
    pub token_generation: i64,
}

/// What a device declared in its Hello, for [`Store::record_hellos`].
#[derive(Debug, Clone)]
pub struct HelloRecord {
    /// The device.
    pub pk: i64,
    /// Firmware version string.
    pub firmware: String,
    /// Declared sensors, in any order.
    pub sensors: Vec<SensorInfo>,
    /// Declared actuators, in any order.
    pub actuators: Vec<ActuatorInfo>,
}

/// A sensor declaration as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorInfo {
    /// Compact id.
    pub id: u16,
    /// Name.
    pub name: String,
    /// Unit.
    pub unit: String,
    /// Value kind.
    pub kind: ValueKind,
}

/// An actuator declaration as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ActuatorInfo {
    /// Compact id.
    pub id: u16,
    /// Name.
    pub name: String,
    /// Value kind.
    pub kind: ValueKind,
}

/// A device just created: the only time its token exists outside the device.
///
/// `Debug` shows everything but the token.
#[derive(Clone)]
pub struct NewDevice {
    /// Public id (16 lowercase hex characters).
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// `<id>.<secret>`: give it to the device; it cannot be recovered later.
    pub token: String,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
}

impl std::fmt::Debug for NewDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDevice")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// A device as stored, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    /// Database key (what sessions and readings refer to).
    pub pk: i64,
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
    /// When the credentials were revoked, if they were.
    pub revoked_at_ms: Option<i64>,
    /// Firmware string from the latest Hello, if the device ever connected.
    pub firmware: Option<String>,
    /// Whether a hub holds a live session (as last written to the database).
    pub online: bool,
    /// Last frame or pong as last flushed to the database, ms since the epoch.
    pub last_seen_ms: Option<i64>,
    /// Highest telemetry sequence number committed (0: none).
    pub last_seq: u64,
    /// Instance id of the hub holding the device's live session, as last
    /// written to the database (None while offline).
    pub hub_instance: Option<String>,
}

impl DeviceRecord {
    /// Whether the device's credentials were revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at_ms.is_some()
    }
}

/// Which devices [`Store::list_devices`] returns, one page at a time.
#[derive(Debug, Clone)]
pub struct DeviceQuery {
    /// Most devices per page (at least 1 is returned when any match).
    pub limit: u32,
    /// Cursor from the previous page's [`DevicePage::next`]; None for the first page.
    pub after: Option<String>,
    /// Only devices whose online flag equals this.
    pub online: Option<bool>,
    /// Only devices whose name contains this (ASCII case-insensitive).
    pub name_contains: Option<String>,
}

impl Default for DeviceQuery {
    fn default() -> Self {
        DeviceQuery {
            limit: 100,
            after: None,
            online: None,
            name_contains: None,
        }
    }
}

/// One page of devices in creation order.
#[derive(Debug, Clone)]
pub struct DevicePage {
    /// The devices on this page.
    pub devices: Vec<DeviceRecord>,
    /// Cursor for the next page; None on the last one.
    pub next: Option<String>,
}

/// What a backend returns to check a device token.
pub(crate) struct DeviceCredentialRow {
    pub id: String,
    pub pk: i64,
    pub name: String,
    pub token_hash: Vec<u8>,
    pub revoked: bool,
    pub token_generation: i64,
}

/// The columns a backend's credential lookup returns, in
/// [`DeviceCredentialRow`]'s order.
pub(crate) type CredentialColumns = (String, i64, String, Vec<u8>, bool, i64);

impl From<CredentialColumns> for DeviceCredentialRow {
    fn from((id, pk, name, token_hash, revoked, token_generation): CredentialColumns) -> Self {
        DeviceCredentialRow {
            id,
            pk,
            name,
            token_hash,
            revoked,
            token_generation,
        }
    }
}

/// A device's new token after a rotation: the only time it exists outside the device.
///
/// `Debug` shows everything but the token.
#[derive(Clone)]
pub struct RotatedToken {
    /// Database key.
    pub pk: i64,
    /// Public id (unchanged by the rotation).
    pub id: String,
    /// `<id>.<secret>`: the new token; the old one no longer works.
    pub token: String,
    /// The new generation (1 after the first rotation).
    pub token_generation: i64,
    /// When, ms since the epoch.
    pub rotated_at_ms: i64,
}

impl std::fmt::Debug for RotatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedToken")
            .field("pk", &self.pk)
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("token_generation", &self.token_generation)
            .field("rotated_at_ms", &self.rotated_at_ms)
            .finish()
    }
}

/// Why [`Store::rotate_device_token`] rotated nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateRefusal {
    /// No device has this id.
    UnknownDevice,
    /// The device is revoked; a revoked device gets no new token.
    Revoked,
}

/// How many fresh ids to try when one collides with an existing device.
const ID_ATTEMPTS: usize = 3;

impl Store {
    /// Creates a device named `name` with fresh credentials.
    ///
    /// The returned token is the only copy; only its hash is stored.
    pub async fn create_device(&self, name: &str) -> Result<NewDevice, StoreError> {
        validate_name(name).map_err(StoreError::InvalidName)?;
        let created_at_ms = now_ms();
        for _ in 0..ID_ATTEMPTS {
            let cred = Credential::generate();
            let inserted = match &*self.backend {
                Backend::Sqlite(db) => {
                    db.insert_device(&cred.id, name, &cred.hash, created_at_ms)
                        .await?
                }
                Backend::Postgres(db) => {
                    db.insert_device(&cred.id, name, &cred.hash, created_at_ms)
                        .await?
                }
            };
            if inserted {
                return Ok(NewDevice {
                    id: cred.id,
                    name: name.to_owned(),
                    token: cred.token,
                    created_at_ms,
                });
            }
        }
        // 64 random bits colliding three times means the generator is broken.
        Err(StoreError::Corrupt(
            "could not generate an unused device id".into(),
        ))
    }

    /// Checks a `<device-id>.<secret>` token; None when malformed, unknown, wrong or revoked.
    pub async fn authenticate_device(
        &self,
        token: &str,
    ) -> Result<Option<DeviceIdentity>, StoreError> {
        Ok(self.authenticate_devices(&[token]).await?.pop().flatten())
    }

    /// [`Store::authenticate_device`] for many tokens with one lookup (per
    /// backend chunk); answers in the order of `tokens`.
    pub async fn authenticate_devices(
        &self,
        tokens: &[&str],
    ) -> Result<Vec<Option<DeviceIdentity>>, StoreError> {
        let presented: Vec<Option<secret::Presented<'_>>> =
            tokens.iter().map(|token| secret::parse(token)).collect();
        let mut ids: Vec<&str> = presented.iter().flatten().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let rows = if ids.is_empty() {
            Vec::new()
        } else {
            match &*self.backend {
                Backend::Sqlite(db) => db.device_credentials(&ids).await?,
                Backend::Postgres(db) => db.device_credentials(&ids).await?,
            }
        };
        let rows: HashMap<String, DeviceCredentialRow> =
            rows.into_iter().map(|row| (row.id.clone(), row)).collect();
        Ok(presented
            .into_iter()
            .map(|presented| {
                let presented = presented?;
                let row = rows.get(presented.id)?;
                let ok = secret::matches(&presented.hash, &row.token_hash) && !row.revoked;
                ok.then(|| DeviceIdentity {
                    pk: row.pk,
                    id: presented.id.to_owned(),
                    name: row.name.clone(),
                    token_generation: row.token_generation,
                })
            })
            .collect())
    }

    /// The device with public id `id`, revoked or not.
    pub async fn get_device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        if !secret::is_valid_id(id) {
            return Ok(None);
        }
        match &*self.backend {
            Backend::Sqlite(db) => db.get_device(id).await,
            Backend::Postgres(db) => db.get_device(id).await,
        }
    }

    /// One page of devices in creation order, filtered by `query`.
    ///
    /// A cursor that names no device is [`StoreError::InvalidCursor`].
    pub async fn list_devices(&self, query: &DeviceQuery) -> Result<DevicePage, StoreError> {
        if let Some(after) = &query.after
            && !secret::is_valid_id(after)
        {
            return Err(StoreError::InvalidCursor);
        }
        let limit = query.limit.max(1);
        let mut devices = match &*self.backend {
            Backend::Sqlite(db) => db.list_devices(query, limit + 1).await?,
            Backend::Postgres(db) => db.list_devices(query, limit + 1).await?,
        };
        let more = devices.len() > limit as usize;
        devices.truncate(limit as usize);
        let next = if more {
            devices.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DevicePage { devices, next })
    }

    /// Revokes the device's credentials (its token stops working at once and
    /// hubs close its session on their next poll). Returns its key, or None
    /// if no device has this id. Revoking twice keeps the first time.
    pub async fn revoke_device(&self, id: &str) -> Result<Option<i64>, StoreError> {
        if !secret::is_valid_id(id) {
            return Ok(None);
        }
        match &*self.backend {
            Backend::Sqlite(db) => db.revoke_device(id, now_ms()).await,
            Backend::Postgres(db) => db.revoke_device(id, now_ms()).await,
        }
    }

    /// Gives the device a new token (same id, new secret) and bumps its token
    /// generation: the old token stops working at once, and hubs close
    /// sessions that authenticated with it on their next poll. A revoked
    /// device is refused (revocation is final).
    pub async fn rotate_device_token(
        &self,
        id: &str,
    ) -> Result<Result<RotatedToken, RotateRefusal>, StoreError> {
        if !secret::is_valid_id(id) {
            return Ok(Err(RotateRefusal::UnknownDevice));
        }
        // A fresh secret under the existing id: the hash covers the secret only.
        let cred = Credential::generate();
        let Some((_, secret_part)) = cred.token.split_once('.') else {
            return Err(StoreError::Corrupt("generated token has no secret".into()));
        };
        let token = format!("{id}.{secret_part}");
        let now = now_ms();
        let rotated = match &*self.backend {
            Backend::Sqlite(db) => db.rotate_device_token(id, &cred.hash, now).await?,
            Backend::Postgres(db) => db.rotate_device_token(id, &cred.hash, now).await?,
        };
        Ok(match rotated {
            Some((pk, generation)) => Ok(RotatedToken {
                pk,
                id: id.to_owned(),
                token,
                token_generation: generation,
                rotated_at_ms: now,
            }),
            None => match self.get_device(id).await? {
                Some(_) => Err(RotateRefusal::Revoked),
                None => Err(RotateRefusal::UnknownDevice),
            },
        })
    }

    /// Devices whose token was rotated at or after `since_ms`:
    /// (pk, current token generation), oldest rotation first.
    pub async fn devices_rotated_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.devices_rotated_since(since_ms).await,
            Backend::Postgres(db) => db.devices_rotated_since(since_ms).await,
        }
    }

    /// Sensors the device declared in its latest Hello, by id.
    pub async fn sensors(&self, pk: i64) -> Result<Vec<SensorInfo>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.sensors(pk).await,
            Backend::Postgres(db) => db.sensors(pk).await,
        }
    }

    /// Actuators the device declared in its latest Hello, by id.
    pub async fn actuators(&self, pk: i64) -> Result<Vec<ActuatorInfo>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.actuators(pk).await,
            Backend::Postgres(db) => db.actuators(pk).await,
        }
    }

    /// Replaces the device's declared sensors/actuators and firmware string,
    /// in one transaction (only what changed), then stores the Hello's
    /// digest, which lets the next session with the same Hello skip this
    /// call (see [`Store::session_opened`]).
    pub async fn record_hello(
        &self,
        pk: i64,
        firmware: &str,
        sensors: &[SensorInfo],
        actuators: &[ActuatorInfo],
    ) -> Result<(), StoreError> {
        let hello = HelloRecord {
            pk,
            firmware: firmware.to_owned(),
            sensors: sensors.to_vec(),
            actuators: actuators.to_vec(),
        };
        match self.record_hellos(std::slice::from_ref(&hello)).await?[..] {
            [true] => Ok(()),
            _ => Err(StoreError::UnknownDevice(pk)),
        }
    }

    /// [`Store::record_hello`] for many devices; answers in the order of
    /// `hellos`, false where the device does not exist. On SQLite the lot is
    /// one transaction (one fsync for a batch of first connects); on
    /// Postgres each device is its own, run concurrently.
    pub async fn record_hellos(&self, hellos: &[HelloRecord]) -> Result<Vec<bool>, StoreError> {
        let sorted: Vec<(HelloRecord, [u8; 32])> = hellos
            .iter()
            .map(|hello| {
                let digest = super::presence::hello_digest(
                    &hello.firmware,
                    &hello.sensors,
                    &hello.actuators,
                );
                let mut hello = hello.clone();
                hello.sensors.sort_by_key(|s| s.id);
                hello.actuators.sort_by_key(|a| a.id);
                (hello, digest)
            })
            .collect();
        match &*self.backend {
            Backend::Sqlite(db) => db.record_hellos(&sorted).await,
            Backend::Postgres(db) => {
                // Concurrently (the pool bounds it), each device its own
                // transaction; a device's repeats wait for a later round.
                let mut recorded = vec![false; sorted.len()];
                for round in super::presence::rounds_by_key(&sorted, |(hello, _)| hello.pk) {
                    let writes = round.iter().map(|&i| {
                        let (hello, digest) = &sorted[i];
                        async move {
                            match db
                                .record_hello(
                                    hello.pk,
                                    &hello.firmware,
                                    &hello.sensors,
                                    &hello.actuators,
                                )
                                .await
                            {
                                Ok(()) => {
                                    db.set_hello_digest(hello.pk, digest).await.map(|()| true)
                                }
                                Err(StoreError::UnknownDevice(_)) => Ok(false),
                                Err(err) => Err(err),
                            }
                        }
                    });
                    let results = futures_util::future::join_all(writes).await;
                    for (i, result) in round.into_iter().zip(results) {
                        recorded[i] = result?;
                    }
                }
                Ok(recorded)
            }
        }
    }
}
