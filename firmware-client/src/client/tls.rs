//! rustls client configuration for `wss://`.
//!
//! Trust = the webpki (Mozilla) roots (unless turned off) plus any CA
//! certificates the configuration adds, so a hub with a private CA works
//! without touching the system store. An optional client certificate makes
//! the connection mutual TLS, so a hub that trusts its CA can authenticate
//! the device without a token. The crypto provider is aws-lc-rs, installed
//! as the process default if none is (with ring also compiled in, rustls
//! cannot pick one).
//!
//! Everything is parsed once, when the device starts: a bad PEM is a
//! [`ConfigError`] at start, not a reconnect loop.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_tungstenite::Connector;

use super::config::DeviceConfig;
use super::error::ConfigError;

/// The connector for a `ws://` (`tls == false`) or `wss://` hub URL.
pub(crate) fn connector(tls: bool, config: &DeviceConfig) -> Result<Connector, ConfigError> {
    if !tls {
        return Ok(Connector::Plain);
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

    let mut roots = RootCertStore::empty();
    if config.webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(pem) = &config.extra_root_certs_pem {
        for cert in certificates(pem, "extra root")? {
            roots
                .add(cert)
                .map_err(|err| ConfigError::Tls(format!("extra root certificate: {err}")))?;
        }
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ConfigError::Tls(err.to_string()))?
        .with_root_certificates(roots);
    let client = match (&config.client_cert_pem, &config.client_key_pem) {
        (Some(cert_pem), Some(key_pem)) => {
            let chain = certificates(cert_pem, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|err| ConfigError::Tls(format!("client key PEM: {err}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| ConfigError::Tls(format!("client certificate and key: {err}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Connector::Rustls(Arc::new(client)))
}

/// Every CERTIFICATE block of `pem`; at least one.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| ConfigError::Tls(format!("{what} PEM: {err}")))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls(format!(
            "{what} PEM holds no CERTIFICATE block"
        )));
    }
    Ok(certs)
}
