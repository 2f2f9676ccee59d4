//! `device-sim watch`: many browser-stream clients on the hub's
//! `GET /api/v1/stream`, the load the operator console puts on a hub.
//!
//! Each client authenticates with an API key in its first message,
//! subscribes to its own slice of the hub's devices (listed through
//! `GET /api/v1/devices`), and parses every message it receives, as a
//! browser tab does. The run ends after `--duration` or on Ctrl-C/SIGTERM,
//! and prints what the clients saw: messages by type, readings received per
//! second, resyncs (`snapshot` with reason `lagged`) and disconnects.
//! bench/console_stream.sh runs it beside the telemetry load.
//!
//! - [`message`]: the stream's JSON messages.
//! - [`discover`]: the device list and each client's slice of it.
//! - [`client`]: one client's connection, reconnects and counters.
//! - [`summary`]: the sums and their report.

pub mod client;
pub mod discover;
pub mod message;
pub mod summary;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;

use self::client::{ClientPlan, ClientStats};
use self::summary::WatchSummary;

/// The stream endpoint, relative to the hub's base URL.
pub const STREAM_PATH: &str = "/api/v1/stream";

/// Open browser-stream clients on the hub, each subscribed to its own slice
/// of the devices, and report what they receive.
#[derive(Debug, Clone, Parser)]
#[command(after_help = "\
Example, beside a running `device-sim --devices 1000` load:
  device-sim watch --hub http://127.0.0.1:8080 --key KEY --clients 100 \\
      --subscribe-per-client 10 --wait-devices 1000 --duration 30")]
pub struct WatchArgs {
    /// The hub's base URL (http://host:port, https://...) or any ws:// or
    /// wss:// URL of it; the stream endpoint is /api/v1/stream there.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub hub: String,

    /// API key (any role) for the stream's auth message and the device list.
    #[arg(long, visible_alias = "api-key", env = "SIM_WATCH_KEY")]
    pub key: String,

    /// Stream clients to open.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,

    /// Devices each client subscribes to: client i takes the
    /// `i × N`-th to `(i + 1) × N - 1`-th device of the hub's list, sorted by
    /// id (wrapping around when the list is shorter).
    #[arg(long, default_value_t = 10)]
    pub subscribe_per_client: usize,

    /// Seconds to watch after the clients start; 0 watches until Ctrl-C
    /// or SIGTERM (either also ends a timed run early, with a summary).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,

    /// Wait until the hub lists at least this many devices before
    /// subscribing (for a load generator started at the same time that is
    /// still creating them).
    #[arg(long, default_value_t = 0)]
    pub wait_devices: usize,

    /// Seconds `--wait-devices` may take.
    #[arg(long, default_value_t = 120.0)]
    pub wait_timeout: f64,

    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// PEM file of the CA certificates to trust for wss:// and https://
    /// (e.g. `ca.pem` of `hub dev-certs`); then only these.
    #[arg(long = "ca", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

impl WatchArgs {
    /// Check the numbers make sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.subscribe_per_client > 1000 {
            bail!("--subscribe-per-client: the hub takes at most 1000 ids per subscribe");
        }
        for (name, value) in [
            ("--duration", self.duration),
            ("--wait-timeout", self.wait_timeout),
        ] {
            if !value.is_finite() || value < 0.0 {
                bail!("{name} must be a non-negative number of seconds");
            }
        }
        if self.key.is_empty() {
            bail!("--key must not be empty");
        }
        stream_url(&self.hub)?;
        Ok(())
    }
}

/// The stream URL and the API base for `--hub`.
pub fn stream_url(hub: &str) -> anyhow::Result<(String, String)> {
    let endpoints = crate::args::endpoints(hub)?;
    let ws = endpoints
        .device_url
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .unwrap_or("ws");
    let authority = endpoints
        .api_base
        .split_once("://")
        .map(|(_, authority)| authority)
        .unwrap_or_default();
    Ok((
        format!("{ws}://{authority}{STREAM_PATH}"),
        endpoints.api_base,
    ))
}

/// Run the clients `args` describes and sum what they saw.
pub async fn run(args: &WatchArgs) -> anyhow::Result<WatchSummary> {
    args.validate()?;
    // reqwest (no provider compiled in) and rustls need a process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (url, api_base) = stream_url(&args.hub)?;
    let ca_pem = match &args.ca_cert {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?)
        }
        None => None,
    };
    let http = http_client(ca_pem.as_deref())?;
    let connector = ca_pem.as_deref().map(tls_connector).transpose()?;

    let ids = discover::wait_for_devices(
        &http,
        &api_base,
        &args.key,
        args.wait_devices,
        Duration::from_secs_f64(args.wait_timeout),
    )
    .await?;
    let key: Arc<str> = Arc::from(args.key.as_str());
    let plans: Vec<ClientPlan> = (0..args.clients)
        .map(|i| ClientPlan {
            url: url.clone(),
            key: Arc::clone(&key),
            devices: discover::slice_for(&ids, i, args.subscribe_per_client),
            connector: connector.clone(),
        })
        .collect();
    let watched: BTreeSet<&String> = plans.iter().flat_map(|p| &p.devices).collect();
    let devices_watched = watched.len();
    eprintln!(
        "watch: {} clients on {url}, {devices_watched} of {} devices subscribed",
        args.clients,
        ids.len()
    );

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for plan in plans {
        clients.spawn(client::run(plan, cancel.clone()));
    }
    let until = if args.duration > 0.0 {
        Some(started + Duration::from_secs_f64(args.duration))
    } else {
        None
    };
    wait_for_end(until).await;
    cancel.cancel();
    let duration = started.elapsed();
    let mut stats: Vec<ClientStats> = Vec::with_capacity(args.clients);
    while let Some(joined) = clients.join_next().await {
        stats.push(joined.context("a stream client panicked")??);
    }
    WatchSummary::new(&stats, ids.len(), devices_watched, duration)
}

/// Returns at `until` (None: never) or on Ctrl-C or SIGTERM.
async fn wait_for_end(until: Option<Instant>) {
    let timer = async {
        match until {
            Some(until) => tokio::time::sleep_until(until).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = timer => {}
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm() => {}
    }
}

#[cfg(unix)]
async fn sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn sigterm() {
    std::future::pending().await
}

/// The HTTP client for the device list.
fn http_client(ca_pem: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).context("--ca")? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("HTTP client")
}

/// A TLS connector trusting only the CA certificates in `pem` (also for
/// `device-sim connections`).
pub(crate) fn tls_connector(pem: &[u8]) -> anyhow::Result<Connector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.context("--ca: bad PEM")?)
            .context("--ca: unusable certificate")?;
    }
    if roots.is_empty() {
        bail!("--ca: no certificate in the file");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_url_follows_the_hub_url() -> anyhow::Result<()> {
        assert_eq!(
            stream_url("http://127.0.0.1:8080")?,
            (
                "ws://127.0.0.1:8080/api/v1/stream".to_owned(),
                "http://127.0.0.1:8080".to_owned()
            )
        );
        assert_eq!(
            stream_url("wss://hub.example:8443/ws/device")?.0,
            "wss://hub.example:8443/api/v1/stream"
        );
        assert_eq!(
            stream_url("https://hub.example")?.0,
            "wss://hub.example/api/v1/stream"
        );
        assert!(stream_url("ftp://x").is_err());
        Ok(())
    }

    #[test]
    fn flags_parse_and_validate() -> anyhow::Result<()> {
        let args = WatchArgs::try_parse_from([
            "watch",
            "--hub",
            "http://127.0.0.1:1",
            "--key",
            "k",
            "--clients",
            "100",
            "--subscribe-per-client",
            "10",
            "--duration",
            "0",
        ])?;
        args.validate()?;
        assert_eq!(args.clients, 100);
        let args = WatchArgs::try_parse_from(["watch", "--api-key", "k", "--clients", "0"])?;
        assert!(args.validate().is_err());
        let args =
            WatchArgs::try_parse_from(["watch", "--key", "k", "--subscribe-per-client", "1001"])?;
        assert!(args.validate().is_err());
        Ok(())
    }
}
