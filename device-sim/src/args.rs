//! The command line, and the hub endpoints derived from `--hub`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgGroup, Parser, Subcommand};
use url::Url;

/// Simulate devices streaming telemetry to a hub.
#[derive(Debug, Clone, Parser)]
#[command(name = "device-sim", version, about)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(group(ArgGroup::new("credentials").required(true).multiple(true).args(["api_key", "tokens", "cert_dir"])))]
#[command(after_help = "\
Credentials, one of:
  --api-key KEY      create the devices through the API and use their tokens
  --tokens FILE      one device token per line
  --cert-dir DIR     device certificates as `hub dev-certs DIR --device ID` writes
                     them (DIR/devices/ID.pem, ID-key.pem): each device
                     authenticates with its certificate over wss://, no token.
                     The devices must exist in the hub under those ids; with
                     --api-key too, that is checked before the run.

TLS quickstart:
  hub dev-certs certs
  hub device add sensor-1            # prints the device id
  hub dev-certs certs --reuse-ca --device ID
  hub serve --tls-cert certs/server.pem --tls-key certs/server-key.pem --client-ca certs/ca.pem
  device-sim --hub wss://localhost:8080 --ca certs/ca.pem --cert-dir certs --devices 1")]
pub struct Args {
    /// Hub address: the device endpoint (ws://host:port/ws/device, wss://...)
    /// or the hub's base URL (http://host:port, https://...); the other is
    /// derived.
    #[arg(long, env = "SIM_HUB", default_value = "ws://127.0.0.1:8080/ws/device")]
    pub hub: String,

    /// Number of simulated devices.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,

    /// Readings per second per device (fractions allowed), spread round-robin
    /// over eight sensors (five measured, three reporting the actuators'
    /// state); 0 pushes as fast as acks make room (timestamps then
    /// advance by at least 1 ms per reading per sensor and can run ahead of
    /// the clock).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,

    /// Most readings per telemetry frame.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,

    /// Seconds of generation (after ramp-up, before the drain).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Provision the devices through POST /api/v1/devices with this API key.
    #[arg(long, env = "SIM_API_KEY")]
    pub api_key: Option<String>,

    /// File of device tokens, one per line (blank lines and # comments skipped).
    #[arg(long, conflicts_with_all = ["cert_dir", "api_key"])]
    pub tokens: Option<PathBuf>,

    /// Authenticate each device with its client certificate from
    /// DIR/devices/ID.pem and ID-key.pem (as `hub dev-certs` writes them)
    /// instead of a token; the first --devices ids in order. Needs wss://.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// PEM file of CA certificates to trust for wss:// and https://
    /// (e.g. `ca.pem` of `hub dev-certs`), besides the usual web roots.
    #[arg(long = "ca", visible_alias = "ca-cert", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Most WebSocket handshakes in flight during ramp-up.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Seconds to wait for outstanding acks after generation stops.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,

    /// Every SECS seconds, cut a random device's connection (it reconnects
    /// and resends what was not acknowledged).
    #[arg(long, value_name = "SECS")]
    pub chaos_disconnect_every: Option<f64>,

    /// Outbox capacity per device, in readings (about 32 bytes each).
    #[arg(long, default_value_t = 2048)]
    pub outbox: usize,

    /// Most unacknowledged frames on the wire per device.
    #[arg(long, default_value_t = 8)]
    pub window: usize,

    /// Milliseconds a partial frame waits for more readings.
    #[arg(long, default_value_t = 250)]
    pub linger_ms: u64,

    /// Seconds each device may take to connect during ramp-up before the
    /// ramp moves on (it keeps trying in the background).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Name prefix of provisioned devices (names are PREFIX-0001, ...).
    #[arg(long, default_value = "sim")]
    pub name_prefix: String,

    /// Something other than simulating devices; without one, the flags
    /// above run the simulation.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The other tools of the simulator.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Open browser-stream clients (`/api/v1/stream`, the console's live
    /// feed), each subscribed to its own slice of the devices, and report
    /// the messages and readings they receive.
    Watch(crate::watch::WatchArgs),
    /// Hold many idle authenticated device connections (from several
    /// loopback source addresses), optionally cut and reconnect them all
    /// (`--storm`), and report connect rate, latency, pings and every
    /// refusal or drop by reason.
    Connections(crate::connections::ConnectionsArgs),
}

/// Where the hub is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The device WebSocket endpoint.
    pub device_url: String,
    /// Base of the HTTP API (scheme, host, port), without a trailing slash.
    pub api_base: String,
}

impl Args {
    /// Check the numbers make sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.devices == 0 {
            bail!("--devices must be at least 1");
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            bail!("--rate must be 0 or a positive number");
        }
        if self.batch == 0 || self.batch > usize::from(u16::MAX) {
            bail!("--batch must be between 1 and 65535");
        }
        for (name, value) in [
            ("--duration", self.duration),
            ("--drain-timeout", self.drain_timeout),
            ("--connect-timeout", self.connect_timeout),
        ] {
            if !value.is_finite() || value < 0.0 {
                bail!("{name} must be a non-negative number of seconds");
            }
        }
        if let Some(every) = self.chaos_disconnect_every
            && (!every.is_finite() || every <= 0.0)
        {
            bail!("--chaos-disconnect-every must be a positive number of seconds");
        }
        if self.connect_concurrency == 0 {
            bail!("--connect-concurrency must be at least 1");
        }
        if self.outbox == 0 || self.window == 0 {
            bail!("--outbox and --window must be at least 1");
        }
        let endpoints = self.endpoints()?;
        if self.cert_dir.is_some() && !endpoints.device_url.starts_with("wss://") {
            bail!("--cert-dir needs TLS: give --hub as wss://... or https://...");
        }
        Ok(())
    }

    /// The device endpoint and the API base, derived from `--hub`.
    pub fn endpoints(&self) -> anyhow::Result<Endpoints> {
        endpoints(&self.hub)
    }

    /// Generation time.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    /// Drain deadline.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout)
    }
}

/// The device endpoint and the API base for a `--hub` value.
pub fn endpoints(hub: &str) -> anyhow::Result<Endpoints> {
    let url = Url::parse(hub).with_context(|| format!("--hub {hub:?} is not a URL"))?;
    let (ws, http) = match url.scheme() {
        "ws" | "http" => ("ws", "http"),
        "wss" | "https" => ("wss", "https"),
        other => bail!("--hub scheme {other:?}: use ws, wss, http or https"),
    };
    let host = url
        .host_str()
        .with_context(|| format!("--hub {hub:?} has no host"))?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let device_path = match (url.scheme(), url.path()) {
        ("ws" | "wss", path) if path != "/" && !path.is_empty() => path.to_owned(),
        _ => schema::DEVICE_PATH.to_owned(),
    };
    Ok(Endpoints {
        device_url: format!("{ws}://{authority}{device_path}"),
        api_base: format!("{http}://{authority}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(hub: &str) -> (String, String) {
        let e = endpoints(hub).expect("valid");
        (e.device_url, e.api_base)
    }

    #[test]
    fn hub_urls_give_both_endpoints() {
        assert_eq!(
            ends("ws://127.0.0.1:8080/ws/device"),
            (
                "ws://127.0.0.1:8080/ws/device".into(),
                "http://127.0.0.1:8080".into()
            )
        );
        assert_eq!(
            ends("http://127.0.0.1:8080"),
            (
                "ws://127.0.0.1:8080/ws/device".into(),
                "http://127.0.0.1:8080".into()
            )
        );
        assert_eq!(
            ends("https://hub.example:8443/"),
            (
                "wss://hub.example:8443/ws/device".into(),
                "https://hub.example:8443".into()
            )
        );
        assert_eq!(
            ends("wss://hub.example"),
            (
                "wss://hub.example/ws/device".into(),
                "https://hub.example".into()
            )
        );
        assert_eq!(ends("ws://[::1]:9000/custom").0, "ws://[::1]:9000/custom");
        assert!(endpoints("ftp://x").is_err());
        assert!(endpoints("nonsense").is_err());
    }

    #[test]
    fn flags_parse_and_validate() {
        let args = Args::try_parse_from([
            "device-sim",
            "--hub",
            "http://127.0.0.1:1",
            "--tokens",
            "t.txt",
            "--devices",
            "1000",
            "--rate",
            "300",
            "--chaos-disconnect-every",
            "0.5",
        ])
        .expect("parses");
        args.validate().expect("valid");
        assert!(
            Args::try_parse_from(["device-sim"]).is_err(),
            "credentials required"
        );
        let args =
            Args::try_parse_from(["device-sim", "--api-key", "k", "--rate=-1"]).expect("parses");
        assert!(args.validate().is_err());
    }

    #[test]
    fn watch_is_a_subcommand_that_needs_no_device_credentials() {
        let args = Args::try_parse_from([
            "device-sim",
            "watch",
            "--hub",
            "http://127.0.0.1:1",
            "--key",
            "k",
            "--clients",
            "3",
        ])
        .expect("parses without --api-key, --tokens or --cert-dir");
        match args.command {
            Some(Command::Watch(watch)) => {
                assert_eq!(watch.clients, 3);
                assert_eq!(watch.key, "k");
            }
            _ => panic!("not watch"),
        }
        assert!(
            Args::try_parse_from(["device-sim", "--api-key", "k", "watch", "--key", "k"]).is_err(),
            "simulation flags do not mix with watch"
        );
        let plain = Args::try_parse_from(["device-sim", "--api-key", "k"]).expect("parses");
        assert!(plain.command.is_none());
    }

    #[test]
    fn connections_is_a_subcommand_with_its_own_credentials() {
        let args = Args::try_parse_from([
            "device-sim",
            "connections",
            "--tokens",
            "t.txt",
            "--devices",
            "19000",
            "--storm",
        ])
        .expect("parses without the simulation's credentials");
        match args.command {
            Some(Command::Connections(connections)) => {
                assert_eq!(connections.devices, 19_000);
                assert!(connections.storm);
            }
            _ => panic!("not connections"),
        }
    }

    #[test]
    fn certificate_mode_needs_tls_and_excludes_tokens() {
        let args = Args::try_parse_from([
            "device-sim",
            "--hub",
            "wss://localhost:8443",
            "--ca",
            "certs/ca.pem",
            "--cert-dir",
            "certs",
        ])
        .expect("parses without --api-key or --tokens");
        args.validate().expect("valid");
        assert_eq!(args.ca_cert, Some(PathBuf::from("certs/ca.pem")));
        let old_name = Args::try_parse_from(["device-sim", "--tokens", "t", "--ca-cert", "ca.pem"])
            .expect("--ca-cert still works");
        assert_eq!(old_name.ca_cert, Some(PathBuf::from("ca.pem")));
        let args = Args::try_parse_from([
            "device-sim",
            "--hub",
            "wss://localhost:8443",
            "--api-key",
            "k",
            "--cert-dir",
            "certs",
        ])
        .expect("an API key checks the devices exist");
        args.validate().expect("valid");
        let plain = Args::try_parse_from([
            "device-sim",
            "--hub",
            "ws://127.0.0.1:8080",
            "--cert-dir",
            "certs",
        ])
        .expect("parses");
        assert!(plain.validate().is_err(), "client certificates need wss://");
        assert!(
            Args::try_parse_from(["device-sim", "--tokens", "t", "--cert-dir", "certs"]).is_err()
        );
    }
}
