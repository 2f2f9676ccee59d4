//! Who is opening the device socket: a bearer token, a verified client
//! certificate, or both.
//!
//! This exists to keep the two credentials to one rule set, apart from the
//! HTTP plumbing of the handshake:
//!
//! - Token only: the token's device (revoked or wrong tokens refused).
//! - Certificate only (`--client-ca` set, certificate verified by rustls
//!   during the TLS handshake): the device the certificate names (see
//!   [`crate::tls::identity`] for how the name is read); an unknown or
//!   revoked device is refused.
//! - Both: the token decides, and the certificate must name the same
//!   device; a certificate naming another device is refused, so a stolen
//!   token cannot be used from another device's certificate and vice versa.
//! - A certificate that names no device (or is ambiguous) is refused, with
//!   or without a token: the CA that signed it is trusted for devices, so
//!   such a certificate is a mistake worth seeing.

use super::connect_batch::ConnectBatcher;
use crate::store::{DeviceIdentity, Store, StoreError};
use crate::tls::{IdentityError, PeerCertificate};

/// Why the device could not be authenticated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthRefusal {
    /// No token and no client certificate.
    #[error("missing bearer token")]
    MissingCredentials,
    /// The token is malformed, unknown, wrong or revoked.
    #[error("invalid or revoked device token")]
    InvalidToken,
    /// The client certificate names no device.
    #[error("{0}")]
    CertificateWithoutDevice(IdentityError),
    /// The certificate names a device the hub does not know.
    #[error("client certificate names unknown device {0}")]
    UnknownDevice(String),
    /// The certificate names a revoked device.
    #[error("device {0} named by the client certificate is revoked")]
    RevokedDevice(String),
    /// Token and certificate disagree.
    #[error("certificate names another device ({certificate}) than the token")]
    CertificateNamesAnotherDevice {
        /// The device the certificate names.
        certificate: String,
    },
    /// The database could not answer.
    #[error("database unavailable")]
    Unavailable(#[source] StoreError),
}

impl AuthRefusal {
    /// Whether this counts as a failed authentication for the per-address
    /// throttle: presented credentials that did not hold. A request that
    /// brought none is not an attempt; the database being down is not the
    /// peer's fault.
    pub fn is_failed_attempt(&self) -> bool {
        !matches!(
            self,
            AuthRefusal::MissingCredentials | AuthRefusal::Unavailable(_)
        )
    }
}

/// Authenticates a device from its `token` (checked through `connects`,
/// batched with other devices') and/or verified `certificate`.
pub async fn authenticate(
    connects: &ConnectBatcher,
    store: &Store,
    token: Option<&str>,
    certificate: Option<&PeerCertificate>,
) -> Result<DeviceIdentity, AuthRefusal> {
    let named = match certificate {
        Some(certificate) => Some(
            certificate
                .device
                .as_deref()
                .map_err(|err| AuthRefusal::CertificateWithoutDevice(err.clone()))?,
        ),
        None => None,
    };
    match (token, named) {
        (Some(token), named) => {
            let device = connects
                .authenticate(token)
                .await
                .map_err(AuthRefusal::Unavailable)?
                .ok_or(AuthRefusal::InvalidToken)?;
            match named {
                Some(named) if named != device.id => {
                    Err(AuthRefusal::CertificateNamesAnotherDevice {
                        certificate: named.to_owned(),
                    })
                }
                _ => Ok(device),
            }
        }
        (None, Some(named)) => {
            let record = store
                .get_device(named)
                .await
                .map_err(AuthRefusal::Unavailable)?
                .ok_or_else(|| AuthRefusal::UnknownDevice(named.to_owned()))?;
            if record.is_revoked() {
                return Err(AuthRefusal::RevokedDevice(record.id));
            }
            Ok(DeviceIdentity {
                pk: record.pk,
                id: record.id,
                name: record.name,
                // The credential is the certificate, not the token: rotating
                // the token must not close this session (the registry closes
                // sessions whose generation is older than the stored one).
                token_generation: i64::MAX,
            })
        }
        (None, None) => Err(AuthRefusal::MissingCredentials),
    }
}
