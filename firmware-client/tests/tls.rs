//! `wss://` through rustls, trusting a private CA given as PEM.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Behaviour, COUNTER, MockHub, config};
use firmware_client::schema::{self, Value};
use firmware_client::{ConnectionState, Device};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A CA (PEM) and a server configuration with a `localhost` leaf it signed.
fn pki() -> (String, rustls::ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");

    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .expect("server config");
    (ca_cert.pem(), server)
}

async fn tls_hub(server: rustls::ServerConfig) -> MockHub {
    let acceptor = TlsAcceptor::from(Arc::new(server));
    MockHub::start_with(Behaviour::default(), move |tcp| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(tcp).await.ok() }
    })
    .await
}

#[tokio::test]
async fn wss_with_an_extra_root_ca_delivers_readings() {
    let (ca_pem, server) = pki();
    let hub = tls_hub(server).await;
    let url = format!("wss://localhost:{}{}", hub.addr.port(), schema::DEVICE_PATH);
    let mut config = config(&url);
    config.extra_root_certs_pem = Some(ca_pem.into_bytes());
    let device = Device::start(config).expect("valid config");
    for i in 0..25 {
        device
            .push(COUNTER, 1_700_000_000_000 + i, Value::Int(i as i64))
            .await
            .expect("pushed");
    }
    assert!(
        device.flush(Duration::from_secs(10)).await,
        "{:?}",
        device.stats()
    );
    assert_eq!(hub.state().stored.len(), 25);
    assert_eq!(device.shutdown().await, 0);
}

#[tokio::test]
async fn wss_without_trusting_the_ca_never_connects() {
    let (_ca_pem, server) = pki();
    let hub = tls_hub(server).await;
    let url = format!("wss://localhost:{}{}", hub.addr.port(), schema::DEVICE_PATH);
    let device = Device::start(config(&url)).expect("valid config");
    let mut state = device.state();
    let backoff = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s, ConnectionState::Backoff { attempt: 2.., .. })),
    )
    .await;
    assert!(matches!(backoff, Ok(Ok(_))), "keeps retrying with backoff");
    assert_eq!(
        hub.state().sessions,
        0,
        "no session over an untrusted certificate"
    );
}
