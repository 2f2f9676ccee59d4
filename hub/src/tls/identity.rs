//! Which device a verified client certificate names.
//!
//! This exists so that the listener (which sees the TLS session) and the
//! device handshake (which decides who is connecting) agree on one rule,
//! written down once:
//!
//! - rustls has already checked the chain against `--client-ca`, the
//!   validity period and the key usage; this module only reads names.
//! - The device id is the subject alternative name URI `urn:device:<id>`
//!   (what `hub dev-certs` / [`crate::tls::certs`] write). Several such URIs
//!   must all name the same device.
//! - Without such a URI, the subject Common Name is the device id.
//! - With both, they must agree; a certificate whose CN names one device
//!   and whose URI names another names no device at all (refused), so a
//!   CA mistake cannot be read two ways.
//! - `dNSName` entries are ignored: a device id is not a host name, and
//!   accepting them would let a server certificate from the same CA pass
//!   as a device certificate.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

// The URI prefix of a device SAN: one constant for the writer (`certs`)
// and this reader.
use super::certs::DEVICE_URI_PREFIX;

/// The verified client certificate of a connection, put into every request's
/// extensions by the listener when the peer presented one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject distinguished name, for logs.
    pub subject: String,
    /// The device the certificate names, or why it names none.
    pub device: Result<String, IdentityError>,
}

/// Why a verified client certificate names no device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The certificate is not DER X.509 that x509-parser can read.
    #[error("client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// Neither a `urn:device:` URI nor a Common Name.
    #[error("client certificate names no device (no urn:device: URI, no Common Name)")]
    NoDeviceName,
    /// Several different names where one is needed.
    #[error("client certificate names more than one device ({0} and {1})")]
    Ambiguous(String, String),
}

impl PeerCertificate {
    /// Reads the names of the end-entity certificate `der`.
    pub fn from_der(der: &[u8]) -> PeerCertificate {
        match X509Certificate::from_der(der) {
            Ok((_, cert)) => PeerCertificate {
                subject: cert.subject().to_string(),
                device: device_id(&cert),
            },
            Err(err) => PeerCertificate {
                subject: String::new(),
                device: Err(IdentityError::Unparsable(err.to_string())),
            },
        }
    }

    /// The device id, if the certificate names exactly one device.
    pub fn device_id(&self) -> Option<&str> {
        self.device.as_deref().ok()
    }
}

/// Applies the rule of the module documentation.
fn device_id(cert: &X509Certificate<'_>) -> Result<String, IdentityError> {
    let mut uri_id: Option<&str> = None;
    let san = cert
        .subject_alternative_name()
        .map_err(|err| IdentityError::Unparsable(err.to_string()))?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        let Some(id) = uri.strip_prefix(DEVICE_URI_PREFIX) else {
            continue;
        };
        match uri_id {
            Some(seen) if seen != id => {
                return Err(IdentityError::Ambiguous(seen.to_owned(), id.to_owned()));
            }
            _ => uri_id = Some(id),
        }
    }
    let mut common_names = cert.subject().iter_common_name();
    let cn = match common_names.next() {
        Some(attr) => Some(
            attr.as_str()
                .map_err(|err| IdentityError::Unparsable(err.to_string()))?,
        ),
        None => None,
    };
    if let (Some(first), Some(second)) = (cn, common_names.next())
        && uri_id.is_none()
    {
        let second = second.as_str().unwrap_or("?");
        return Err(IdentityError::Ambiguous(
            first.to_owned(),
            second.to_owned(),
        ));
    }
    match (uri_id, cn) {
        (Some(uri), Some(cn)) if uri != cn => {
            Err(IdentityError::Ambiguous(uri.to_owned(), cn.to_owned()))
        }
        (Some(id), _) | (None, Some(id)) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(IdentityError::NoDeviceName),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: &[SanType]) -> PeerCertificate {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans.to_vec();
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        PeerCertificate::from_der(cert.der())
    }

    fn uri(id: &str) -> SanType {
        SanType::URI(format!("{DEVICE_URI_PREFIX}{id}").try_into().expect("ia5"))
    }

    #[test]
    fn uri_and_common_name_agreeing_name_the_device() {
        let peer = cert(Some("dev-1"), &[uri("dev-1")]);
        assert_eq!(peer.device_id(), Some("dev-1"));
    }

    #[test]
    fn common_name_alone_names_the_device() {
        assert_eq!(cert(Some("dev-2"), &[]).device_id(), Some("dev-2"));
    }

    #[test]
    fn uri_alone_names_the_device() {
        assert_eq!(cert(None, &[uri("dev-3")]).device_id(), Some("dev-3"));
    }

    #[test]
    fn conflicting_names_name_no_device() {
        let peer = cert(Some("dev-1"), &[uri("dev-2")]);
        assert!(matches!(peer.device, Err(IdentityError::Ambiguous(..))));
        let peer = cert(None, &[uri("dev-1"), uri("dev-2")]);
        assert!(matches!(peer.device, Err(IdentityError::Ambiguous(..))));
    }

    #[test]
    fn dns_names_and_other_uris_are_ignored() {
        let dns = SanType::DnsName("dev-9".try_into().expect("ia5"));
        let other = SanType::URI("https://example.com/dev-9".try_into().expect("ia5"));
        let peer = cert(None, &[dns, other]);
        assert_eq!(peer.device, Err(IdentityError::NoDeviceName));
    }

    #[test]
    fn garbage_is_unparsable() {
        let peer = PeerCertificate::from_der(b"not a certificate");
        assert!(matches!(peer.device, Err(IdentityError::Unparsable(_))));
    }
}
