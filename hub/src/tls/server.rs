//! The listener's rustls configuration, built from the PEM files of
//! `--tls-cert`, `--tls-key` and `--client-ca`.
//!
//! It exists so that every problem with those files stops `hub serve` at
//! start-up with a message naming the file and what is wrong with it,
//! instead of surfacing later as failed handshakes.
//!
//! Choices:
//! - The crypto provider is aws-lc-rs, passed explicitly: both aws-lc-rs and
//!   ring can be compiled into one build (dev-dependencies pull ring), and
//!   then rustls has no process default to fall back on.
//! - ALPN offers only `http/1.1`: the device WebSocket is an HTTP/1.1
//!   upgrade and the listener serves HTTP/1.1.
//! - With `--client-ca`, a client certificate is verified when presented
//!   but not required ([`WebPkiClientVerifier`] with
//!   `allow_unauthenticated`): devices with tokens and API clients connect
//!   without one. A presented certificate that is untrusted, expired or not
//!   for client authentication fails the TLS handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why the TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {what} {}", path.display())]
    Read {
        /// Which setting the file belongs to.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid PEM, or holds no item of the needed kind.
    #[error("{what} {}: {reason}", path.display())]
    Invalid {
        /// Which setting the file belongs to.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the key of the certificate.
    #[error(
        "TLS key {} does not match the certificate {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration for another reason.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The provider the hub's TLS uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the acceptor for `files`.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(files)?)))
}

/// Builds the rustls server configuration for `files`.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    const CERT: &str = "TLS certificate (--tls-cert)";
    const KEY: &str = "TLS key (--tls-key)";
    let provider = provider();
    let chain = load_certs(CERT, &files.cert)?;
    let key_pem = read(KEY, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::Invalid {
        what: KEY,
        path: files.key.clone(),
        reason: match err {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected PKCS#8, PKCS#1 or SEC1 PEM)".to_owned()
            }
            other => format!("not a valid PEM private key: {other}"),
        },
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            const CA: &str = "client CA (--client-ca)";
            let mut roots = RootCertStore::empty();
            for cert in load_certs(CA, ca)? {
                roots.add(cert).map_err(|err| TlsError::Invalid {
                    what: CA,
                    path: ca.clone(),
                    reason: format!("not a usable CA certificate: {err}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|err| TlsError::Invalid {
                    what: CA,
                    path: ca.clone(),
                    reason: err.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            other => TlsError::Invalid {
                what: KEY,
                path: files.key.clone(),
                reason: other.to_string(),
            },
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in the PEM file `path`; at least one.
fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Invalid {
            what,
            path: path.to_owned(),
            reason: format!("not valid PEM: {err}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            what,
            path: path.to_owned(),
            reason: "no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)".to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }
    }

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn load(cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>) -> Result<(), TlsError> {
        server_config(&TlsFiles {
            cert,
            key,
            client_ca,
        })
        .map(|_| ())
    }

    #[test]
    fn a_matching_pair_loads_with_and_without_client_ca() {
        let files = Files::new();
        let (cert, key) = self_signed();
        let cert = files.write("cert.pem", &cert);
        let key = files.write("key.pem", &key);
        load(cert.clone(), key.clone(), None).expect("loads");
        load(cert.clone(), key, Some(cert)).expect("loads with a client CA");
    }

    #[test]
    fn each_bad_file_is_named_with_its_problem() {
        let files = Files::new();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert = files.write("cert.pem", &cert);
        let key = files.write("key.pem", &key);
        let other_key = files.write("other.pem", &other_key);
        let empty = files.write("empty.pem", "nothing here\n");
        let missing = files.dir.path().join("missing.pem");

        let err = load(missing.clone(), key.clone(), None).expect_err("missing");
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = load(empty.clone(), key.clone(), None).expect_err("no cert");
        assert!(err.to_string().contains("no certificate"), "{err}");

        let err = load(cert.clone(), empty.clone(), None).expect_err("no key");
        assert!(err.to_string().contains("no private key"), "{err}");

        let err = load(cert.clone(), other_key, None).expect_err("mismatch");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

        let err = load(cert, key, Some(empty)).expect_err("empty CA");
        assert!(err.to_string().contains("client CA"), "{err}");
    }
}
