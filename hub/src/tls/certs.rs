//! Certificate generation for development, tests and the quickstart.
//!
//! A hub serving `wss://` needs a server certificate, and a hub that accepts
//! device certificates (`--client-ca`) needs a CA that issued them. Buying or
//! running a real PKI is out of scope for trying the hub out, so this module
//! makes a small local one with rcgen: a [`CertificateAuthority`] that signs a
//! server certificate and one client certificate per device. `hub dev-certs`
//! writes them to files; tests call it directly (for example to make an
//! expired device certificate).
//!
//! Device certificates follow the convention the hub's client-certificate
//! verifier reads: the device id is the subject Common Name **and** a URI
//! SAN `urn:device:<id>`, with the clientAuth extended key usage.
//!
//! Everything is returned as PEM strings; keys are ECDSA P-256 in PKCS#8.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

/// Prefix of the URI SAN that names a device: `urn:device:<id>`.
pub const DEVICE_URI_PREFIX: &str = "urn:device:";

/// Default lifetime of a new CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Default lifetime of server and device certificates.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far back the default `not_before` is set, so a peer whose clock is a
/// little behind still accepts a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// Longest device id accepted in a certificate.
const MAX_DEVICE_ID_LEN: usize = 64;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The device id cannot go into a certificate name and a file name.
    #[error(
        "invalid device id {0:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-', \
         not starting with '.'"
    )]
    InvalidDeviceId(String),
    /// A server DNS name is not printable ASCII.
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),
    /// A server certificate was asked for without any name or address.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,
    /// `not_after` is not later than `not_before`, or out of range.
    #[error("invalid validity period: {0}")]
    InvalidValidity(&'static str),
    /// The CA certificate or key given to [`CertificateAuthority::from_pem`]
    /// is unusable.
    #[error("cannot load the CA: {0}")]
    LoadCa(String),
    /// rcgen failed to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// Its private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`). Keep secret.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A local certificate authority: signs server and device certificates.
///
/// ```
/// use hub::tls::certs::CertificateAuthority;
///
/// let ca = CertificateAuthority::new("example CA")?;
/// let server = ca.server_cert(&["localhost"], &["127.0.0.1".parse()?])?;
/// let device = ca.device_cert("0123456789abcdef")?;
/// assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// assert!(server.key_pem.contains("PRIVATE KEY"));
/// assert!(device.cert_pem.contains("CERTIFICATE"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CertificateAuthority {
    /// Signs the certificates; holds the CA's name and key.
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertificateAuthority {
    /// A new CA with a fresh key, named `name` (the subject Common Name),
    /// valid for [`CA_VALIDITY`] from now. It may sign end-entity
    /// certificates only (path length 0).
    pub fn new(name: &str) -> Result<Self, CertError> {
        let now = SystemTime::now();
        Self::new_valid(name, now - BACKDATE, now + CA_VALIDITY)
    }

    /// A new CA valid from `not_before` to `not_after`.
    pub fn new_valid(
        name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        set_validity(&mut params, not_before, not_after)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Load a CA written earlier (`ca.pem` and `ca-key.pem` of
    /// `hub dev-certs`), to issue more certificates with it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|err| CertError::LoadCa(format!("private key: {err}")))?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|err| CertError::LoadCa(format!("certificate PEM: {err}")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|err| CertError::LoadCa(format!("certificate: {err}")))?;
        if !parsed.is_ca() {
            return Err(CertError::LoadCa(
                "the certificate is not a CA (no basicConstraints cA=true)".to_owned(),
            ));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(CertError::LoadCa(
                "the private key does not belong to the certificate".to_owned(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|err| CertError::LoadCa(format!("certificate: {err}")))?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The CA certificate: what `--client-ca` and the devices' trust store take.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key. Whoever holds it can mint device identities.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate for `dns_names` and `ips` (the subject
    /// alternative names a client checks), valid for [`LEAF_VALIDITY`], with
    /// the serverAuth extended key usage.
    pub fn server_cert(&self, dns_names: &[&str], ips: &[IpAddr]) -> Result<IssuedCert, CertError> {
        let now = SystemTime::now();
        self.server_cert_valid(dns_names, ips, now - BACKDATE, now + LEAF_VALIDITY)
    }

    /// A server certificate like [`CertificateAuthority::server_cert`],
    /// valid from `not_before` to `not_after`.
    pub fn server_cert_valid(
        &self,
        dns_names: &[&str],
        ips: &[IpAddr],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, CertError> {
        if dns_names.is_empty() && ips.is_empty() {
            return Err(CertError::NoServerNames);
        }
        let mut params = CertificateParams::default();
        let cn = dns_names.first().copied().unwrap_or("hub");
        params.distinguished_name = common_name(cn);
        for name in dns_names {
            let ia5 = (*name)
                .try_into()
                .map_err(|_| CertError::InvalidDnsName((*name).to_owned()))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, not_before, not_after)
    }

    /// A client certificate for device `device_id`, valid for
    /// [`LEAF_VALIDITY`] from now. See [`CertificateAuthority::device_cert_valid`].
    pub fn device_cert(&self, device_id: &str) -> Result<IssuedCert, CertError> {
        let now = SystemTime::now();
        self.device_cert_valid(device_id, now - BACKDATE, now + LEAF_VALIDITY)
    }

    /// A client certificate for device `device_id`, valid from `not_before`
    /// to `not_after` (a period in the past makes an expired certificate).
    ///
    /// The id is the subject Common Name and the URI SAN
    /// `urn:device:<id>`; the extended key usage is clientAuth.
    pub fn device_cert_valid(
        &self,
        device_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, CertError> {
        check_device_id(device_id)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(device_id);
        let uri = format!("{DEVICE_URI_PREFIX}{device_id}");
        let uri = uri
            .try_into()
            .map_err(|_| CertError::InvalidDeviceId(device_id.to_owned()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, not_before, not_after)
    }

    /// Sign an end-entity certificate with a fresh key.
    fn issue(
        &self,
        mut params: CertificateParams,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, CertError> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        set_validity(&mut params, not_before, not_after)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Checks that `id` can name a device in a certificate and in a file name
/// (`devices/<id>.pem`): 1 to 64 ASCII letters, digits, `.`, `_` or `-`, not
/// starting with `.`. The hub's own ids (16 hex digits) always pass.
pub fn check_device_id(id: &str) -> Result<(), CertError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidDeviceId(id.to_owned()))
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), CertError> {
    if not_after <= not_before {
        return Err(CertError::InvalidValidity(
            "not_after must be later than not_before",
        ));
    }
    params.not_before = to_datetime(not_before)?;
    params.not_after = to_datetime(not_after)?;
    Ok(())
}

/// `OffsetDateTime::from(SystemTime)` panics outside years -9999..=9999;
/// this refuses instead.
fn to_datetime(t: SystemTime) -> Result<OffsetDateTime, CertError> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs()).ok().map(|s| -s),
    };
    secs.and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or(CertError::InvalidValidity(
            "a date outside the years a certificate can hold",
        ))
}

/// 16 random bytes, positive as DER requires (top bit clear) and not zero,
/// so re-issued certificates never share a serial.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_checked() {
        for ok in ["0123456789abcdef", "dev-1", "a.b_c"] {
            assert!(check_device_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", "é", &"x".repeat(65)] {
            assert!(check_device_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_loaded_ca_signs_like_the_original() -> Result<(), CertError> {
        let ca = CertificateAuthority::new("test CA")?;
        let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem())?;
        assert_eq!(again.cert_pem(), ca.cert_pem());
        again.device_cert("dev-1")?;
        let other = CertificateAuthority::new("other CA")?;
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()),
            Err(CertError::LoadCa(_))
        ));
        let leaf = ca.device_cert("dev-2")?;
        assert!(matches!(
            CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(CertError::LoadCa(_))
        ));
        Ok(())
    }

    #[test]
    fn validity_must_be_a_forward_period() -> Result<(), CertError> {
        let ca = CertificateAuthority::new("test CA")?;
        let now = SystemTime::now();
        assert!(matches!(
            ca.device_cert_valid("dev-1", now, now),
            Err(CertError::InvalidValidity(_))
        ));
        assert!(matches!(
            ca.server_cert(&[], &[]),
            Err(CertError::NoServerNames)
        ));
        let far = now + Duration::from_secs(10_000 * 366 * 24 * 3600);
        assert!(matches!(
            ca.device_cert_valid("dev-1", now, far),
            Err(CertError::InvalidValidity(_))
        ));
        Ok(())
    }
}
