//! `device-sim connections` end to end against a real hub started in this
//! process: every device connects from the source addresses given, the
//! hub's pings are answered and counted while the connections are held,
//! a storm cuts and reconnects them all; refused tokens and a refusing
//! server are reported by reason and fail the run; provisioning writes a
//! tokens file that other runs slice with `--offset`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use device_sim::connections::summary::Summary;
use device_sim::connections::{self, ConnectionsArgs, Outcome};
use hub::config::ServeConfig;
use hub::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A hub on 127.0.0.1 port 0 with a fresh SQLite database, stopped on drop.
struct Hub {
    addr: SocketAddr,
    store: Store,
    dir: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Hub {
    /// Pinging every second, so a hold of a few seconds sees pings.
    async fn start() -> Hub {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "device-sim-connections-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = format!("sqlite://{}", dir.join("hub.db").display());
        let mut config = ServeConfig::new(([127, 0, 0, 1], 0).into(), url.as_str());
        config.ping_interval = Duration::from_secs(1);
        config.shutdown_grace = Duration::from_secs(5);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let store = Store::open(&url).await.expect("database");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            hub::server::run(config, listener, stop)
                .await
                .expect("hub runs");
        });
        Hub {
            addr,
            store,
            dir,
            shutdown,
            task,
        }
    }

    /// `n` devices created in the database, their tokens in a file.
    async fn tokens_file(&self, n: usize) -> PathBuf {
        let mut text = String::new();
        for i in 0..n {
            let device = self
                .store
                .create_device(&format!("conn-{i}"))
                .await
                .expect("device");
            text.push_str(&device.token);
            text.push('\n');
        }
        let path = self.dir.join("tokens.txt");
        std::fs::write(&path, text).expect("tokens file");
        path
    }

    fn url(&self) -> String {
        format!("ws://{}/ws/device", self.addr)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn args(list: &[&str]) -> ConnectionsArgs {
    let mut argv = vec!["connections"];
    argv.extend_from_slice(list);
    ConnectionsArgs::try_parse_from(argv).expect("flags parse")
}

async fn ran(args: &ConnectionsArgs) -> Summary {
    match connections::run(args).await.expect("the run completes") {
        Outcome::Ran(summary) => *summary,
        Outcome::Provisioned { .. } => panic!("provisioned instead of running"),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_connect_hold_with_pings_and_reconnect_after_a_storm() {
    let hub = Hub::start().await;
    let tokens = hub.tokens_file(200).await;
    let url = hub.url();
    let summary = ran(&args(&[
        "--hub",
        &url,
        "--tokens",
        path(&tokens),
        "--devices",
        "200",
        "--source-addrs",
        "127.0.0.2-127.0.0.5",
        "--connect-concurrency",
        "64",
        "--hold",
        "2.5",
        "--storm",
    ]))
    .await;
    hub.stop().await;

    assert_eq!(summary.connected, 200, "{summary:#?}");
    assert_eq!(summary.failed, 0, "{:?}", summary.failures);
    assert_eq!(summary.source_addrs, 4);
    assert!(summary.connect_rate_per_s > 0.0);
    assert!(summary.ramp.latency_ms.p99 >= summary.ramp.latency_ms.p50);
    assert_eq!(summary.dropped_during_hold, 0, "{:?}", summary.drops);
    // One ping a second per connection: two each at least in 2.5 s.
    assert!(
        summary.pings_during_hold >= 2 * 200,
        "only {} pings while holding",
        summary.pings_during_hold
    );
    let storm = summary.storm.as_ref().expect("the storm ran");
    assert_eq!(storm.cut, 200);
    assert_eq!(storm.reconnected, 200, "{:?}", storm.phase.failures);
    assert_eq!(storm.failed, 0);
    assert!(storm.rate_per_s > 0.0 && storm.seconds > 0.0);
    assert_eq!(storm.dropped_after, 0, "{:?}", storm.drops);
    assert!(summary.problems().is_empty(), "{:?}", summary.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_counted_by_status_and_fail_the_run() {
    let hub = Hub::start().await;
    let good = hub.tokens_file(3).await;
    // Two known devices and three with well-formed but wrong tokens.
    let mut text = std::fs::read_to_string(&good).expect("tokens");
    text.truncate(text.lines().take(2).map(|l| l.len() + 1).sum());
    for i in 0..3 {
        text.push_str(&format!("{i:016x}.not-the-secret\n"));
    }
    let mixed = hub.dir.join("mixed.txt");
    std::fs::write(&mixed, text).expect("tokens file");
    let url = hub.url();
    let summary = ran(&args(&[
        "--hub",
        &url,
        "--tokens",
        path(&mixed),
        "--devices",
        "5",
        "--source-addrs",
        "127.0.0.6",
        "--hold",
        "0",
    ]))
    .await;
    hub.stop().await;

    assert_eq!(summary.connected, 2, "{summary:#?}");
    assert_eq!(summary.failed, 3);
    assert_eq!(
        summary.failures.get("http 401 Unauthorized"),
        Some(&3),
        "{:?}",
        summary.failures
    );
    let problems = summary.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("3 of 5 devices did not connect (http 401 Unauthorized ×3)"));
    assert_ne!(summary.exit_code(), std::process::ExitCode::SUCCESS);
}

/// A plain TCP server that records each peer's address and refuses the
/// upgrade with 503.
async fn refusing_server() -> (SocketAddr, Arc<Mutex<Vec<IpAddr>>>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&peers);
    tokio::spawn(async move {
        while let Ok((mut tcp, peer)) = listener.accept().await {
            seen.lock().expect("peers").push(peer.ip());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_come_from_the_source_addresses_round_robin() {
    let (addr, peers) = refusing_server().await;
    let dir = std::env::temp_dir().join(format!("device-sim-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tokens = dir.join("tokens.txt");
    std::fs::write(&tokens, "a.1\nb.2\nc.3\nd.4\ne.5\nf.6\n").expect("tokens");
    let url = format!("ws://{addr}/ws/device");
    let summary = ran(&args(&[
        "--hub",
        &url,
        "--tokens",
        path(&tokens),
        "--devices",
        "6",
        "--source-addrs",
        "127.0.0.7,127.0.0.9-127.0.0.10",
        "--hold",
        "0",
        "--storm",
    ]))
    .await;
    let _ = std::fs::remove_dir_all(&dir);

    let mut seen = peers.lock().expect("peers").clone();
    seen.sort();
    let expected: Vec<IpAddr> = ["127.0.0.7", "127.0.0.7", "127.0.0.9", "127.0.0.9"]
        .iter()
        .chain(&["127.0.0.10", "127.0.0.10"])
        .map(|a| a.parse().expect("address"))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(summary.connected, 0);
    assert_eq!(
        summary.failures.get("http 503 Service Unavailable"),
        Some(&6),
        "{:?}",
        summary.failures
    );
    // Nothing held, so the storm has nothing to cut.
    let storm = summary.storm.as_ref().expect("the storm ran");
    assert_eq!((storm.cut, storm.reconnected), (0, 0));
    let distinct: BTreeSet<_> = seen.into_iter().collect();
    assert_eq!(distinct.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_tokens_are_written_and_sliced_with_offset() {
    let hub = Hub::start().await;
    let key = hub.store.create_api_key("bench").await.expect("api key");
    let tokens = hub.dir.join("provisioned.txt");
    let api = format!("http://{}", hub.addr);
    let outcome = connections::run(&args(&[
        "--hub",
        &api,
        "--api-key",
        &key.key,
        "--devices",
        "12",
        "--tokens-out",
        path(&tokens),
        "--provision-only",
    ]))
    .await
    .expect("provisioning");
    assert!(
        matches!(outcome, Outcome::Provisioned { devices: 12, .. }),
        "{outcome:?}"
    );
    let written = std::fs::read_to_string(&tokens).expect("tokens written");
    assert_eq!(written.lines().count(), 12);

    let summary = ran(&args(&[
        "--hub",
        &api,
        "--tokens",
        path(&tokens),
        "--offset",
        "8",
        "--devices",
        "4",
        "--source-addrs",
        "127.0.0.11",
        "--hold",
        "0",
    ]))
    .await;
    let too_far = connections::run(&args(&[
        "--hub",
        &api,
        "--tokens",
        path(&tokens),
        "--offset",
        "9",
        "--devices",
        "4",
    ]))
    .await;
    hub.stop().await;
    assert_eq!(summary.connected, 4, "{summary:#?}");
    assert!(summary.problems().is_empty(), "{:?}", summary.problems());
    let err = too_far.expect_err("only 3 tokens after the first 9");
    assert!(
        format!("{err:#}").contains("3 tokens after the first 9"),
        "{err:#}"
    );
}
