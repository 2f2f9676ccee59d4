//! `wss://` through rustls: trusting a private CA given as PEM, and mutual
//! TLS with a device client certificate instead of a token.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Behaviour, COUNTER, MockHub, config};
use firmware_client::schema::{self, Value};
use firmware_client::{ConfigError, ConnectionState, Device};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

/// A private CA with a `localhost` server leaf and a device client leaf.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    /// The device's certificate (PEM) and its DER, to compare with what the
    /// server saw.
    device_pem: String,
    device_der: CertificateDer<'static>,
    device_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");

    // The hub's convention: the device id as CN and as a URI SAN.
    let mut device_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    device_params
        .distinguished_name
        .push(DnType::CommonName, "dev-1");
    device_params.subject_alt_names = vec![SanType::URI(
        "urn:device:dev-1".try_into().expect("ia5 string"),
    )];
    device_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let device_key = KeyPair::generate().expect("device key");
    let device = device_params
        .signed_by(&device_key, &issuer)
        .expect("device cert");

    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: server_key.serialize_der(),
        device_pem: device.pem(),
        device_der: device.der().clone(),
        device_key_pem: device_key.serialize_pem(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server that does not ask for client certificates.
fn server_config(pki: &Pki) -> rustls::ServerConfig {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .expect("server config")
}

/// A server that requires a client certificate signed by the CA.
fn mtls_server_config(pki: &Pki) -> rustls::ServerConfig {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).expect("CA root");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .expect("client verifier");
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .expect("server config")
}

/// Client certificates (leaf DER) the server saw, one entry per completed
/// TLS handshake.
type Seen = Arc<Mutex<Vec<Option<CertificateDer<'static>>>>>;

async fn tls_hub(server: rustls::ServerConfig, behaviour: Behaviour) -> (MockHub, Seen) {
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let hub = MockHub::start_with(behaviour, move |tcp| {
        let acceptor = acceptor.clone();
        let record = Arc::clone(&record);
        async move {
            let stream = acceptor.accept(tcp).await.ok()?;
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.clone().into_owned());
            record.lock().expect("seen").push(leaf);
            Some(stream)
        }
    })
    .await;
    (hub, seen)
}

fn wss_url(hub: &MockHub) -> String {
    format!("wss://localhost:{}{}", hub.addr.port(), schema::DEVICE_PATH)
}

async fn stream_and_flush(device: &Device, n: u64) {
    for i in 0..n {
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
}

/// Waits until the device has backed off at least twice: it keeps retrying.
async fn assert_keeps_retrying(device: &Device) {
    let mut state = device.state();
    let backoff = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s, ConnectionState::Backoff { attempt: 2.., .. })),
    )
    .await;
    assert!(matches!(backoff, Ok(Ok(_))), "keeps retrying with backoff");
}

#[tokio::test]
async fn wss_with_an_extra_root_ca_delivers_readings() {
    let pki = pki();
    let (hub, seen) = tls_hub(server_config(&pki), Behaviour::default()).await;
    let config = config(&wss_url(&hub)).trust_roots(pki.ca_pem.clone());
    let device = Device::start(config).expect("valid config");
    stream_and_flush(&device, 25).await;
    assert_eq!(hub.state().stored.len(), 25);
    assert!(
        seen.lock().expect("seen").iter().all(Option::is_none),
        "no client certificate was configured"
    );
    assert_eq!(device.shutdown().await, 0);
}

#[tokio::test]
async fn wss_with_only_the_private_ca_trusted_delivers_readings() {
    let pki = pki();
    let (hub, _seen) = tls_hub(server_config(&pki), Behaviour::default()).await;
    let mut config = config(&wss_url(&hub)).trust_roots(pki.ca_pem.clone());
    config.webpki_roots = false;
    let device = Device::start(config).expect("valid config");
    stream_and_flush(&device, 5).await;
    assert_eq!(hub.state().stored.len(), 5);
    assert_eq!(device.shutdown().await, 0);
}

#[tokio::test]
async fn wss_without_trusting_the_ca_never_connects() {
    let pki = pki();
    let (hub, seen) = tls_hub(server_config(&pki), Behaviour::default()).await;
    let device = Device::start(config(&wss_url(&hub))).expect("valid config");
    assert_keeps_retrying(&device).await;
    assert_eq!(
        hub.state().sessions,
        0,
        "no session over an untrusted certificate"
    );
    assert!(
        seen.lock().expect("seen").is_empty(),
        "no TLS handshake completed"
    );
    // Still a live device: pushes are kept for when the hub becomes trusted.
    device
        .try_push(COUNTER, 1_700_000_000_000, Value::Int(1))
        .expect("kept in the outbox");
}

#[tokio::test]
async fn mutual_tls_authenticates_with_the_client_certificate_instead_of_a_token() {
    let pki = pki();
    let behaviour = Behaviour {
        allow_missing_token: true,
        ..Behaviour::default()
    };
    let (hub, seen) = tls_hub(mtls_server_config(&pki), behaviour).await;
    let mut config = config(&wss_url(&hub))
        .trust_roots(pki.ca_pem.clone())
        .client_cert(pki.device_pem.clone(), pki.device_key_pem.clone());
    config.token = String::new();
    let device = Device::start(config).expect("a client certificate stands in for the token");
    stream_and_flush(&device, 20).await;
    assert_eq!(hub.state().stored.len(), 20);
    let seen = seen.lock().expect("seen").clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|leaf| leaf.as_ref() == Some(&pki.device_der)),
        "the server saw the device certificate on every connection"
    );
    assert_eq!(device.shutdown().await, 0);
}

#[tokio::test]
async fn mutual_tls_without_a_client_certificate_keeps_retrying() {
    let pki = pki();
    let (hub, seen) = tls_hub(mtls_server_config(&pki), Behaviour::default()).await;
    let device = Device::start(config(&wss_url(&hub)).trust_roots(pki.ca_pem.clone()))
        .expect("valid config");
    assert_keeps_retrying(&device).await;
    assert_eq!(hub.state().sessions, 0);
    assert!(seen.lock().expect("seen").is_empty());
}

#[tokio::test]
async fn tls_settings_are_checked_at_start() {
    let pki = pki();
    let url = "wss://localhost:1/ws/device";

    // Neither a token nor a client certificate.
    let mut no_credentials = config(url);
    no_credentials.token = String::new();
    assert!(matches!(
        Device::start(no_credentials),
        Err(ConfigError::Invalid { field: "token", .. })
    ));

    // A certificate without its key, and the reverse.
    let mut half = config(url);
    half.client_cert_pem = Some(pki.device_pem.clone().into_bytes());
    assert!(matches!(
        Device::start(half),
        Err(ConfigError::Invalid { .. })
    ));
    let mut half = config(url);
    half.client_key_pem = Some(pki.device_key_pem.clone().into_bytes());
    assert!(matches!(
        Device::start(half),
        Err(ConfigError::Invalid { .. })
    ));

    // Client certificates need TLS.
    let plain = config("ws://127.0.0.1:1/ws/device")
        .client_cert(pki.device_pem.clone(), pki.device_key_pem.clone());
    assert!(matches!(
        Device::start(plain),
        Err(ConfigError::Invalid { .. })
    ));

    // Nothing trusted at all.
    let mut untrusting = config(url);
    untrusting.webpki_roots = false;
    assert!(matches!(
        Device::start(untrusting),
        Err(ConfigError::Invalid {
            field: "webpki_roots",
            ..
        })
    ));

    // Unusable PEM: no certificate, a key that does not parse, a key that
    // does not match the certificate.
    let empty_roots = config(url).trust_roots("not a certificate");
    assert!(matches!(
        Device::start(empty_roots),
        Err(ConfigError::Tls(_))
    ));
    let bad_key = config(url).client_cert(pki.device_pem.clone(), "no key here");
    assert!(matches!(Device::start(bad_key), Err(ConfigError::Tls(_))));
    let other = KeyPair::generate().expect("key").serialize_pem();
    let wrong_key = config(url).client_cert(pki.device_pem.clone(), other);
    assert!(matches!(Device::start(wrong_key), Err(ConfigError::Tls(_))));
}
