//! `hub dev-certs`: the real binary writes a CA, a server certificate and
//! device certificates that rustls accepts, with private keys kept private
//! and an existing CA never replaced by accident; `hub::tls::certs` makes
//! expired device certificates that verification refuses; and end to end, a
//! hub serving with those files takes telemetry from a firmware-client
//! device that authenticates with its certificate and no token.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::TestHub;
use firmware_client::schema::{Value, ValueKind};
use firmware_client::{ConnectionState, Device, DeviceConfig};
use hub::config::TlsFiles;
use hub::tls::certs::CertificateAuthority;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

fn dev_certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hub"))
        .arg("dev-certs")
        .args(args)
        .output()
        .expect("run hub dev-certs")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn der(pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem).expect("a PEM certificate")
}

fn roots(ca_pem: &[u8]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca_pem)).expect("CA certificate as a root");
    Arc::new(roots)
}

/// Whether a TLS client trusting `ca_pem` accepts `server_pem` for `name`.
fn server_verifies(ca_pem: &[u8], server_pem: &[u8], name: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("server verifier");
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    verifier
        .verify_server_cert(&der(server_pem), &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

/// Whether a TLS server with `--client-ca ca_pem` accepts `device_pem`.
fn client_verifies(ca_pem: &[u8], device_pem: &[u8]) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("client verifier");
    verifier
        .verify_client_cert(&der(device_pem), &[], UnixTime::now())
        .map(|_| ())
}

/// The subject Common Name and the URI SANs of a certificate.
fn names(pem: &[u8]) -> (String, Vec<String>) {
    let der = der(pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("X.509 certificate");
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("a Common Name")
        .to_owned();
    let uris = cert
        .subject_alternative_name()
        .expect("valid SAN extension")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let client_auth = cert
        .extended_key_usage()
        .expect("valid EKU extension")
        .is_some_and(|eku| eku.value.client_auth);
    assert!(client_auth, "device certificates carry clientAuth");
    (cn, uris)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn writes_a_ca_a_server_and_device_certificates_rustls_accepts() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("certs");
    let out = dev_certs(&[
        path_str(&dir),
        "--device",
        "dev-1",
        "--device",
        "0123456789abcdef",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hub serve --tls-cert") && stdout.contains("--client-ca"),
        "prints how to serve: {stdout}"
    );

    let files = [
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "devices/dev-1.pem",
        "devices/dev-1-key.pem",
        "devices/0123456789abcdef.pem",
        "devices/0123456789abcdef-key.pem",
    ];
    for file in files {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in files.iter().filter(|f| f.ends_with("-key.pem")) {
            let mode = std::fs::metadata(dir.join(file))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file} is readable by its owner only");
        }
    }

    let ca = read(&dir.join("ca.pem"));
    let server = read(&dir.join("server.pem"));
    for name in ["localhost", "127.0.0.1", "::1"] {
        server_verifies(&ca, &server, name)
            .unwrap_or_else(|err| panic!("server certificate for {name}: {err}"));
    }
    assert!(
        server_verifies(&ca, &server, "hub.example").is_err(),
        "only the names asked for"
    );
    let other = CertificateAuthority::new("another CA").expect("CA");
    assert!(
        server_verifies(other.cert_pem().as_bytes(), &server, "localhost").is_err(),
        "chains to its own CA only"
    );

    for id in ["dev-1", "0123456789abcdef"] {
        let device = read(&dir.join(format!("devices/{id}.pem")));
        client_verifies(&ca, &device).unwrap_or_else(|err| panic!("device {id}: {err}"));
        let (cn, uris) = names(&device);
        assert_eq!(cn, id);
        assert_eq!(uris, [format!("urn:device:{id}")]);
    }
}

#[test]
fn refuses_to_replace_a_ca_without_force_and_reuses_it_on_request() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = path_str(tmp.path());
    assert!(dev_certs(&[dir]).status.success());
    let ca = read(&tmp.path().join("ca.pem"));
    let server = read(&tmp.path().join("server.pem"));

    let again = dev_certs(&[dir, "--device", "dev-1"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("--force"), "says how: {stderr}");
    assert_eq!(read(&tmp.path().join("ca.pem")), ca, "CA untouched");
    assert!(!tmp.path().join("devices/dev-1.pem").exists());

    // --reuse-ca: a new device signed by the same CA; the server certificate
    // stays (no --host given).
    let reuse = dev_certs(&[dir, "--reuse-ca", "--device", "dev-2"]);
    assert!(reuse.status.success(), "{reuse:?}");
    assert_eq!(read(&tmp.path().join("ca.pem")), ca);
    assert_eq!(read(&tmp.path().join("server.pem")), server);
    let device = read(&tmp.path().join("devices/dev-2.pem"));
    client_verifies(&ca, &device).expect("signed by the existing CA");

    // --force: a new CA, and the old device certificate is no longer trusted.
    let force = dev_certs(&[dir, "--force"]);
    assert!(force.status.success(), "{force:?}");
    let new_ca = read(&tmp.path().join("ca.pem"));
    assert_ne!(new_ca, ca);
    assert!(client_verifies(&new_ca, &device).is_err());
    server_verifies(&new_ca, &read(&tmp.path().join("server.pem")), "localhost")
        .expect("a new server certificate from the new CA");

    // Ids that cannot name a file or a certificate are refused.
    let bad = dev_certs(&[dir, "--reuse-ca", "--device", "../escape"]);
    assert!(!bad.status.success());
    assert!(!tmp.path().join("escape.pem").exists());
}

#[test]
fn custom_hosts_and_expired_device_certificates() {
    let ca = CertificateAuthority::new("test CA").expect("CA");
    let server = ca
        .server_cert(&["hub.example"], &["10.1.2.3".parse().expect("ip")])
        .expect("server certificate");
    let ca_pem = ca.cert_pem().as_bytes();
    server_verifies(ca_pem, server.cert_pem.as_bytes(), "hub.example").expect("DNS name");
    server_verifies(ca_pem, server.cert_pem.as_bytes(), "10.1.2.3").expect("IP address");
    assert!(server_verifies(ca_pem, server.cert_pem.as_bytes(), "localhost").is_err());

    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let expired = ca
        .device_cert_valid("dev-1", now - 30 * day, now - day)
        .expect("expired certificate");
    let err = client_verifies(ca_pem, expired.cert_pem.as_bytes()).expect_err("expired");
    assert!(
        format!("{err:?}").contains("Expired"),
        "refused as expired: {err:?}"
    );
    let not_yet = ca
        .device_cert_valid("dev-1", now + day, now + 30 * day)
        .expect("future certificate");
    assert!(client_verifies(ca_pem, not_yet.cert_pem.as_bytes()).is_err());
    let valid = ca.device_cert("dev-1").expect("device certificate");
    client_verifies(ca_pem, valid.cert_pem.as_bytes()).expect("valid now");
    assert!(valid.key_pem.contains("PRIVATE KEY"));
}

/// A device for the hub under test: wss with the dev-certs CA as its only
/// trust, its client certificate, and no token.
fn certificate_device(hub: &TestHub, dir: &Path, id: &str) -> DeviceConfig {
    let mut config = DeviceConfig::new(hub.wss_url(), "")
        .sensor(1, "temperature", "°C", ValueKind::Float)
        .trust_roots(read(&dir.join("ca.pem")))
        .client_cert(
            read(&dir.join(format!("devices/{id}.pem"))),
            read(&dir.join(format!("devices/{id}-key.pem"))),
        );
    config.webpki_roots = false;
    config.backoff_base = Duration::from_millis(50);
    config.backoff_cap = Duration::from_millis(200);
    config.connect_timeout = Duration::from_secs(5);
    config
}

#[tokio::test]
async fn a_device_authenticates_with_its_dev_certs_certificate_instead_of_a_token() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_owned();
    let out = dev_certs(&[path_str(&dir)]);
    assert!(out.status.success(), "{out:?}");

    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        client_ca: Some(dir.join("ca.pem")),
    };
    let hub = TestHub::start_with(|config| config.tls = Some(files)).await;
    // The hub names devices; their certificates follow (same CA, reused).
    let (id, _token) = hub.add_device("cert-device").await;
    let out = dev_certs(&[path_str(&dir), "--reuse-ca", "--device", &id]);
    assert!(out.status.success(), "{out:?}");

    let device = Device::start(certificate_device(&hub, &dir, &id)).expect("valid config");
    let mut state = device.state();
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .ok()
    .and_then(|seen| seen.ok().map(|s| s.clone()));
    assert_eq!(
        connected,
        Some(ConnectionState::Connected {
            device_id: id.clone()
        }),
        "connected, under the id the certificate names: {:?}",
        *state.borrow()
    );
    let base = common::now_ms();
    for i in 0..30 {
        device
            .push(1, base + i, Value::Float(20.0 + i as f64 / 10.0))
            .await
            .expect("pushed");
    }
    assert!(
        device.flush(Duration::from_secs(10)).await,
        "acked: {:?}",
        device.stats()
    );
    assert_eq!(device.stats().readings_acked, 30);
    assert_eq!(
        hub.stored_readings().await,
        30,
        "every acked reading stored"
    );
    assert_eq!(device.shutdown().await, 0);

    // A certificate from the same CA for a device the hub does not know
    // opens no session and stores nothing.
    let out = dev_certs(&[path_str(&dir), "--reuse-ca", "--device", "unknown-device"]);
    assert!(out.status.success(), "{out:?}");
    let stranger =
        Device::start(certificate_device(&hub, &dir, "unknown-device")).expect("valid config");
    let mut state = stranger.state();
    let connected = tokio::time::timeout(
        Duration::from_secs(2),
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .ok()
    .and_then(|seen| seen.ok().map(|s| s.clone()));
    assert_eq!(connected, None, "no session: {:?}", *state.borrow());
    drop(stranger);
    assert_eq!(hub.stored_readings().await, 30);
}
