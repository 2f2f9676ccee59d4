//! rustls client configuration for `wss://`.
//!
//! Trust = the webpki (Mozilla) roots plus any CA certificates the
//! configuration adds, so a hub with a private CA works without touching the
//! system store. The crypto provider is aws-lc-rs, installed as the process
//! default if none is (with ring also compiled in, rustls cannot pick one).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_tungstenite::Connector;

use super::error::ConfigError;

/// The connector for a `ws://` (`tls == false`) or `wss://` hub URL.
pub(crate) fn connector(
    tls: bool,
    extra_roots_pem: Option<&[u8]>,
) -> Result<Connector, ConfigError> {
    if !tls {
        return Ok(Connector::Plain);
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|err| ConfigError::Tls(format!("extra root PEM: {err}")))?;
            roots
                .add(cert)
                .map_err(|err| ConfigError::Tls(format!("extra root certificate: {err}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(ConfigError::Tls(
                "extra root PEM holds no CERTIFICATE block".to_owned(),
            ));
        }
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ConfigError::Tls(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}
