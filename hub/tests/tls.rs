//! The listener under attack and with TLS: wss:// and https:// with real
//! rustls clients, device client certificates (mTLS), the connection cap and
//! the handshake deadline (slowloris), each over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{DownFrame, RawSocket, TestHub, expect_frame, hello_frame, telemetry_frame, wait_ack};
use futures_util::SinkExt;
use hub::config::TlsFiles;
use hub::tls::certs::{CertificateAuthority, IssuedCert};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// A CA, the hub's server certificate for localhost and 127.0.0.1, as files.
struct Pki {
    ca: CertificateAuthority,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let ca = CertificateAuthority::new("hub test CA").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let server = ca
            .server_cert(&["localhost"], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), &server.key_pem).unwrap();
        Pki { ca, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The hub's TLS settings, with or without device client certificates.
    fn files(&self, client_ca: bool) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server-key.pem"),
            client_ca: client_ca.then(|| self.path("ca.pem")),
        }
    }

    /// A rustls client trusting the test CA, presenting `identity` if given.
    fn client(&self, identity: Option<&IssuedCert>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(hub::tls::server::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(issued) => {
                let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
                let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(vec![cert], key).unwrap()
            }
        };
        Arc::new(config)
    }

    /// An HTTPS client trusting the test CA, reaching `localhost` at the hub.
    fn https(&self, hub: &TestHub) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls((*self.client(None)).clone())
            .resolve("localhost", hub.addr)
            .build()
            .unwrap()
    }
}

async fn start_tls_hub(
    pki: &Pki,
    client_ca: bool,
    adjust: impl FnOnce(&mut hub::config::ServeConfig),
) -> TestHub {
    let files = pki.files(client_ca);
    TestHub::start_with(move |config| {
        config.tls = Some(files);
        adjust(config);
    })
    .await
}

/// Opens `wss://localhost/ws/device` over TLS with `tls`, a token if given.
async fn connect_wss(
    hub: &TestHub,
    tls: Arc<rustls::ClientConfig>,
    token: Option<&str>,
) -> Result<RawSocket, tungstenite::Error> {
    let mut request = hub.wss_url().into_client_request()?;
    let headers = request.headers_mut();
    if let Some(token) = token {
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    headers.insert(
        "sec-websocket-protocol",
        schema::SUBPROTOCOL.parse().unwrap(),
    );
    let tcp = TcpStream::connect(hub.addr).await?;
    let (socket, _) = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        None,
        Some(Connector::Rustls(tls)),
    )
    .await?;
    Ok(socket)
}

/// Hello, then the Welcome's device id.
async fn hello(socket: &mut RawSocket) -> String {
    socket
        .send(Message::Binary(hello_frame(1).into()))
        .await
        .unwrap();
    match expect_frame(socket).await {
        DownFrame::Welcome { device_id, .. } => device_id,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Sends telemetry `seq` and waits for its ack.
async fn stream_one(socket: &mut RawSocket, seq: u64) {
    socket
        .send(Message::Binary(
            telemetry_frame(seq, common::now_ms(), 3).into(),
        ))
        .await
        .unwrap();
    wait_ack(socket, seq).await;
}

/// The status and body of a refused WebSocket handshake.
fn refused_with(result: Result<RawSocket, tungstenite::Error>) -> (u16, String) {
    match result {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, the handshake succeeded"),
    }
}

/// `hub_limit_rejections_total{limit="<limit>"}` as scraped over `client`.
async fn limit_count(client: &reqwest::Client, base: &str, limit: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("hub_limit_rejections_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Waits until the limit counter reaches `want`.
async fn eventually_count(client: &reqwest::Client, base: &str, limit: &str, want: f64) {
    for _ in 0..100 {
        if limit_count(client, base, limit).await >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = limit_count(client, base, limit).await;
    panic!("limit {limit}: want at least {want}, got {got}");
}

#[tokio::test]
async fn wss_devices_stream_and_https_api_answers() {
    let pki = Pki::new();
    let mut hub = start_tls_hub(&pki, false, |_| {}).await;
    let (id, token) = hub.add_device("tls-device").await;

    let mut socket = connect_wss(&hub, pki.client(None), Some(&token))
        .await
        .expect("wss handshake");
    assert_eq!(hello(&mut socket).await, id);
    for seq in 1..=3 {
        stream_one(&mut socket, seq).await;
    }
    assert_eq!(hub.stored_readings().await, 9);

    let https = pki.https(&hub);
    let health = https
        .get(format!("{}/healthz", hub.https_url()))
        .send()
        .await
        .expect("https request");
    assert!(health.status().is_success(), "{}", health.status());

    // Plain ws:// and http:// to the TLS listener get nowhere.
    let plain = common::connect_raw(&hub, Some(&token), true).await;
    assert!(plain.is_err(), "plain ws:// to a TLS listener must fail");
    let plain_http = reqwest::get(format!("{}/healthz", hub.http_url())).await;
    assert!(
        plain_http.is_err(),
        "plain http:// to a TLS listener must fail"
    );
    eventually_count(&https, &hub.https_url(), "tls_handshake", 2.0).await;

    // Shutdown still drains a wss device with 1001.
    hub.stop().await;
    common::expect_close(&mut socket, 1001).await;
}

#[tokio::test]
async fn a_device_certificate_authenticates_without_a_token() {
    let pki = Pki::new();
    let hub = start_tls_hub(&pki, true, |_| {}).await;
    let (id, token) = hub.add_device("cert-device").await;
    let cert = pki.ca.device_cert(&id).unwrap();

    let mut socket = connect_wss(&hub, pki.client(Some(&cert)), None)
        .await
        .expect("handshake with a device certificate");
    assert_eq!(hello(&mut socket).await, id);
    stream_one(&mut socket, 1).await;
    stream_one(&mut socket, 2).await;
    let stored = hub.store.get_device(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.last_seq, 2,
        "telemetry stored under the certificate's device"
    );
    assert_eq!(hub.stored_readings().await, 6);

    // The same certificate with the same device's token is fine too.
    drop(socket);
    let mut both = connect_wss(&hub, pki.client(Some(&cert)), Some(&token))
        .await
        .expect("certificate and token of one device");
    assert_eq!(hello(&mut both).await, id);

    // Revoking the device closes its certificate session too.
    hub.store.revoke_device(&id).await.unwrap();
    common::expect_close(&mut both, schema::close::CREDENTIALS_REVOKED).await;

    // A token device without a certificate still connects when --client-ca is set.
    let (other_id, other_token) = hub.add_device("token-device").await;
    let mut token_only = connect_wss(&hub, pki.client(None), Some(&other_token))
        .await
        .expect("token without a certificate");
    assert_eq!(hello(&mut token_only).await, other_id);
    stream_one(&mut token_only, 1).await;
}

#[tokio::test]
async fn bad_device_certificates_are_refused() {
    let pki = Pki::new();
    let hub = start_tls_hub(&pki, true, |_| {}).await;
    let (id, token) = hub.add_device("victim").await;
    let (other_id, _) = hub.add_device("other").await;
    let https = pki.https(&hub);

    // Signed by a CA the hub does not trust: the TLS handshake fails.
    let rogue_ca = CertificateAuthority::new("rogue CA").unwrap();
    let untrusted = rogue_ca.device_cert(&id).unwrap();
    let result = connect_wss(&hub, pki.client(Some(&untrusted)), None).await;
    assert!(
        !matches!(result, Ok(_) | Err(tungstenite::Error::Http(_))),
        "an untrusted certificate must fail in TLS"
    );

    // Expired: the TLS handshake fails.
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let expired = pki
        .ca
        .device_cert_valid(&id, now - 2 * day, now - day)
        .unwrap();
    let result = connect_wss(&hub, pki.client(Some(&expired)), None).await;
    assert!(
        !matches!(result, Ok(_) | Err(tungstenite::Error::Http(_))),
        "an expired certificate must fail in TLS"
    );
    eventually_count(&https, &hub.https_url(), "tls_handshake", 2.0).await;

    // A valid certificate naming another device, with this device's token: 401.
    let others = pki.ca.device_cert(&other_id).unwrap();
    let (status, body) =
        refused_with(connect_wss(&hub, pki.client(Some(&others)), Some(&token)).await);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("another device"), "{body}");

    // A valid certificate for a device the hub does not know: 401.
    let unknown = pki.ca.device_cert("0123456789abcdef").unwrap();
    let (status, body) = refused_with(connect_wss(&hub, pki.client(Some(&unknown)), None).await);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unknown device"), "{body}");

    // A valid certificate for a revoked device: 401.
    let revoked = pki.ca.device_cert(&other_id).unwrap();
    hub.store.revoke_device(&other_id).await.unwrap();
    let (status, body) = refused_with(connect_wss(&hub, pki.client(Some(&revoked)), None).await);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");

    // Neither certificate nor token: 401 as before.
    let (status, _) = refused_with(connect_wss(&hub, pki.client(None), None).await);
    assert_eq!(status, 401);
}

/// Reads until the peer closes; Err when it does not within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, &'static str> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err("still open"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn the_connection_cap_refuses_the_next_connection_and_frees_on_close() {
    let hub = TestHub::start_with(|config| config.limits.max_connections = 5).await;
    let mut devices = Vec::new();
    for i in 0..5 {
        let (_, token) = hub.add_device(&format!("capped-{i}")).await;
        devices.push(common::open_session(&hub, &token).await.0);
    }

    // The sixth gets a 503 and is closed at once.
    let mut sixth = TcpStream::connect(hub.addr).await.unwrap();
    let answer = closed_within(&mut sixth, Duration::from_secs(5))
        .await
        .expect("the sixth connection is closed at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("Retry-After:"), "{answer}");
    let (_, token) = hub.add_device("sixth").await;
    assert!(common::connect_raw(&hub, Some(&token), true).await.is_err());

    // The open devices are unaffected.
    for (seq, socket) in devices.iter_mut().enumerate() {
        let seq = seq as u64 + 1;
        common::send_binary(socket, telemetry_frame(seq, common::now_ms(), 1)).await;
        wait_ack(socket, seq).await;
    }

    // Closing one frees its slot for a new connection.
    let mut closing = devices.pop().unwrap();
    closing.close(None).await.unwrap();
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(socket) = common::connect_raw(&hub, Some(&token), true).await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reopened = reopened.expect("a slot frees when a connection closes");

    // Free one more for the scrape; both refusals were counted.
    drop(reopened);
    let http = reqwest::Client::new();
    let mut counted = 0.0;
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("{}/metrics", hub.http_url())).send().await
            && let Ok(text) = response.text().await
            && text.contains("hub_limit_rejections_total")
        {
            counted = limit_count(&http, &hub.http_url(), "connections").await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted >= 2.0, "connections refused: {counted}");
}

/// A device that streams one frame every 100 ms for `duration`, checking
/// every ack.
async fn stream_for(mut socket: RawSocket, duration: Duration) -> u64 {
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < duration {
        seq += 1;
        stream_one(&mut socket, seq).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seq
}

/// Opens TCP and sends a request head one byte at a time, never finishing it.
async fn dribble(hub: &TestHub) -> Duration {
    let mut stream = TcpStream::connect(hub.addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /ws/device HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            return started.elapsed();
        }
        let mut probe = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return started.elapsed();
        }
    }
    panic!(
        "the hub let a request head dribble for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_handshakes_are_dropped_while_devices_keep_streaming() {
    let handshake_timeout = Duration::from_secs(1);
    let hub =
        TestHub::start_with(|config| config.limits.handshake_timeout = handshake_timeout).await;
    let (_, token) = hub.add_device("steady").await;
    let (socket, _) = common::open_session(&hub, &token).await;
    let steady = tokio::spawn(stream_for(socket, Duration::from_secs(3)));

    // A dribbled request head and a silent connection are both dropped.
    let dribbled = dribble(&hub).await;
    let mut silent = TcpStream::connect(hub.addr).await.unwrap();
    let silent_started = Instant::now();
    closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent connection is dropped");
    for elapsed in [dribbled, silent_started.elapsed()] {
        assert!(
            elapsed >= handshake_timeout - Duration::from_millis(200)
                && elapsed < handshake_timeout * 3,
            "dropped after {elapsed:?}"
        );
    }

    let frames = steady.await.unwrap();
    assert!(
        frames >= 5,
        "the steady device kept streaming: {frames} frames"
    );
    assert_eq!(hub.stored_readings().await, frames as i64 * 3);
    let http = reqwest::Client::new();
    eventually_count(&http, &hub.http_url(), "handshake_timeout", 2.0).await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped() {
    let pki = Pki::new();
    let handshake_timeout = Duration::from_secs(1);
    let hub = start_tls_hub(&pki, true, |config| {
        config.limits.handshake_timeout = handshake_timeout;
    })
    .await;
    let (id, _) = hub.add_device("steady-cert").await;
    let cert = pki.ca.device_cert(&id).unwrap();
    let mut socket = connect_wss(&hub, pki.client(Some(&cert)), None)
        .await
        .unwrap();
    hello(&mut socket).await;
    let steady = tokio::spawn(stream_for(socket, Duration::from_secs(2)));

    // Half a ClientHello (a TLS record header promising more), then nothing.
    let mut stalled = TcpStream::connect(hub.addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let started = Instant::now();
    closed_within(&mut stalled, Duration::from_secs(5))
        .await
        .expect("a stalled TLS handshake is dropped");
    let elapsed = started.elapsed();
    assert!(elapsed < handshake_timeout * 3, "dropped after {elapsed:?}");

    assert!(steady.await.unwrap() >= 5);
    eventually_count(&pki.https(&hub), &hub.https_url(), "handshake_timeout", 1.0).await;
}

#[tokio::test]
async fn unusable_tls_files_stop_start_up_with_a_clear_message() {
    let pki = Pki::new();
    let database = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", database.path().join("hub.db").display());
    let other = pki.ca.server_cert(&["localhost"], &[]).unwrap();
    std::fs::write(pki.path("other-key.pem"), &other.key_pem).unwrap();
    let cases = [
        (
            TlsFiles {
                cert: pki.path("missing.pem"),
                ..pki.files(false)
            },
            "missing.pem",
        ),
        (
            TlsFiles {
                key: pki.path("ca.pem"),
                ..pki.files(false)
            },
            "no private key",
        ),
        (
            TlsFiles {
                key: pki.path("other-key.pem"),
                ..pki.files(false)
            },
            "does not match",
        ),
    ];
    for (files, expected) in cases {
        let mut config = common::test_config(&url);
        config.tls = Some(files);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            hub::server::run(config, listener, token),
        )
        .await
        .expect("start-up fails at once");
        let err = result.expect_err("bad TLS files must stop start-up");
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
}
