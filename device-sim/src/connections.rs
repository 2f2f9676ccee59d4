//! `device-sim connections`: many idle, authenticated device connections
//! held open against one hub, then (with `--storm`) all cut at once and
//! reconnected, the load of a fleet that stays connected and of a network
//! blip that drops it.
//!
//! It measures what the hub's connection handling costs, not its ingest:
//! each device opens TCP from one of several loopback source addresses
//! (round-robin, so a single process can exceed one address's ephemeral
//! ports), upgrades with its token, sends Hello, waits for Welcome, then only
//! answers the hub's pings. No telemetry, no outbox: a held connection costs
//! the simulator a socket, a small WebSocket codec and a task, because the
//! simulator shares the machine with the hub it measures.
//!
//! Phases, each reported: the ramp (first connection of every device, at
//! most `--connect-concurrency` attempts in flight), the hold (`--hold`
//! seconds, or until SIGUSR1 with `--wait-signal`, counting pings and the
//! connections the hub drops), the storm (every held connection's socket
//! closed without a close frame, as a network failure would, then all
//! reconnected as fast as the concurrency allows), and the end (a normal
//! close). One process holds at most its open-file limit of connections;
//! bench/connections.sh runs several, each on its own slice of a tokens
//! file (`--offset`) and its own source addresses, and lines their phases
//! up with `--wait-signal` and the Unix times in the JSON summary.
//!
//! - [`source`]: `--source-addrs`, the round-robin over local addresses.
//! - [`fdlimit`]: the open-file limit, raised and checked up front.
//! - [`link`]: one connection (the only module touching a socket) and the
//!   reason of every failure.
//! - [`stats`]: what the connections record, by phase.
//! - [`summary`]: the report and the exit code.

pub mod fdlimit;
pub mod link;
pub mod source;
pub mod stats;
pub mod summary;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgGroup, Parser};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout};
use tokio_tungstenite::Connector;
use url::{Host, Url};

use self::link::{Failure, Target, WsStream};
use self::source::SourceAddrs;
use self::stats::{PhaseStats, Stats};
use self::summary::{StormReport, Summary};
use crate::provision;

/// Hold many idle authenticated device connections on a hub, optionally
/// cut and reconnect them all (`--storm`), and report connect rate,
/// latency, pings and every refusal or drop by reason.
#[derive(Debug, Clone, Parser)]
#[command(group(ArgGroup::new("credentials").required(true).args(["api_key", "tokens"])))]
#[command(after_help = "\
Examples:
  device-sim connections --api-key KEY --devices 5000 --tokens-out tokens.txt \\
      --provision-only
  device-sim connections --hub ws://127.0.0.1:8080 --tokens tokens.txt \\
      --devices 5000 --hold 30 --storm
  # a second process on the next slice of the file, other source addresses:
  device-sim connections --tokens tokens.txt --offset 5000 --devices 5000 \\
      --source-addrs 127.0.1.2-127.0.1.17

One process holds at most its open-file limit (RLIMIT_NOFILE, raised to
the hard limit at start) of connections, less 100; split larger counts
over processes with --offset.

Exit status: 0 when every device connected, none was dropped while held,
and the storm (if any) reconnected them all; 1 otherwise.")]
pub struct ConnectionsArgs {
    /// Hub address: the device endpoint (ws://host:port/ws/device,
    /// wss://...) or the hub's base URL (http://host:port, https://...).
    #[arg(long, env = "SIM_HUB", default_value = "ws://127.0.0.1:8080/ws/device")]
    pub hub: String,

    /// Connections to open, one device each.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,

    /// Create the devices through POST /api/v1/devices with this API key.
    #[arg(long, env = "SIM_API_KEY")]
    pub api_key: Option<String>,

    /// File of device tokens, one per line (blank lines and # comments
    /// skipped); tokens `--offset` to `--offset + --devices - 1` are used.
    #[arg(long, value_name = "FILE", conflicts_with = "api_key")]
    pub tokens: Option<PathBuf>,

    /// First token of the --tokens file to use (0-based), so several
    /// processes can share one file.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,

    /// Write the tokens of the devices created with --api-key to FILE, one
    /// per line, for later runs and other processes (`--tokens FILE`).
    #[arg(long, value_name = "FILE", requires = "api_key")]
    pub tokens_out: Option<PathBuf>,

    /// Only create the devices and write --tokens-out; connect nothing.
    #[arg(long, requires = "tokens_out")]
    pub provision_only: bool,

    /// Device creation requests in flight at once (with --api-key).
    #[arg(long, default_value_t = 64)]
    pub provision_concurrency: usize,

    /// Name prefix of created devices (names are PREFIX-0001, ...).
    #[arg(long, default_value = "conn")]
    pub name_prefix: String,

    /// Local addresses to connect from, used round-robin: a comma-separated
    /// list of addresses and inclusive IPv4 ranges (`127.0.0.2-127.0.0.33`),
    /// or `any` to let the OS choose. Each address has about 28,000
    /// ephemeral ports, and a storm holds two per device (the cut one in
    /// TIME_WAIT); every 127.0.0.0/8 address is local on Linux.
    #[arg(long, default_value = "127.0.0.2-127.0.0.17", value_name = "LIST")]
    pub source_addrs: SourceAddrs,

    /// Most connection attempts (TCP, upgrade, Hello, Welcome) in flight.
    #[arg(long, default_value_t = 1024)]
    pub connect_concurrency: usize,

    /// Seconds one attempt may take before it counts as failed (timeout).
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,

    /// Seconds to hold the connections after the ramp.
    #[arg(long, default_value_t = 60.0)]
    pub hold: f64,

    /// Hold until SIGUSR1 instead of --hold seconds; with --storm, also
    /// wait for a second SIGUSR1 after the storm before closing. Phase
    /// markers (`connections: ramp done`, `connections: storm done`) on
    /// stderr tell a script when to signal.
    #[arg(long)]
    pub wait_signal: bool,

    /// After the hold, cut every connection at once (its socket closed
    /// without a WebSocket close frame, as a network failure would) and
    /// reconnect them all as fast as --connect-concurrency allows.
    #[arg(long)]
    pub storm: bool,

    /// PEM file of the CA certificates to trust for wss:// and https://
    /// (e.g. `ca.pem` of `hub dev-certs`); wss:// needs it.
    #[arg(long = "ca", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Runtime worker threads: 1 runs everything on one thread, which
    /// spends nothing on waking other threads (scale out with processes);
    /// 0 uses one per core.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Attempts more each device makes in the storm after a failed
    /// reconnect (after 0.2 s, 0.4 s, ...), as real devices retry; every
    /// failed attempt is still counted by reason. The ramp never retries.
    #[arg(long, default_value_t = 5)]
    pub storm_retries: u32,

    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ConnectionsArgs {
    /// The runtime `--threads` asks for.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        match self.threads {
            1 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            0 => tokio::runtime::Runtime::new(),
            n => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build(),
        }
    }

    /// Check the numbers make sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.devices == 0 {
            bail!("--devices must be at least 1");
        }
        if self.connect_concurrency == 0 || self.provision_concurrency == 0 {
            bail!("--connect-concurrency and --provision-concurrency must be at least 1");
        }
        for (name, value) in [
            ("--hold", self.hold),
            ("--connect-timeout", self.connect_timeout),
        ] {
            if !(0.0..=1e9).contains(&value) {
                bail!("{name} must be a number of seconds, 0 to 1e9");
            }
        }
        if self.offset > 0 && self.tokens.is_none() {
            bail!("--offset picks tokens of a --tokens file");
        }
        if self.connect_timeout == 0.0 {
            bail!("--connect-timeout must be above 0");
        }
        let endpoints = crate::args::endpoints(&self.hub)?;
        if endpoints.device_url.starts_with("wss://") && self.ca_cert.is_none() {
            bail!("wss:// needs --ca PEM (the CA that signed the hub's certificate)");
        }
        Ok(())
    }
}

/// What a run did.
#[derive(Debug)]
pub enum Outcome {
    /// `--provision-only`: devices created, tokens written.
    Provisioned {
        /// Devices created.
        devices: usize,
        /// Where their tokens are.
        tokens_out: PathBuf,
    },
    /// The connections ran; their summary.
    Ran(Box<Summary>),
}

/// The phase the controller has reached, as every connection task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connect once, then hold.
    Hold,
    /// Cut the held connection and reconnect, then hold.
    Storm,
    /// Close and end.
    Stop,
}

/// What a connection task tells the controller, once per phase.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// Its first attempt ended (welcomed or failed).
    Ramp,
    /// Its storm ended: `cut` when it held a connection to cut (then it
    /// reconnected or failed), false when it had none.
    Storm { cut: bool },
}

/// What every connection task shares.
struct Shared {
    target: Target,
    stats: Stats,
    /// `--connect-concurrency` slots.
    slots: Semaphore,
    /// `--storm-retries`.
    storm_retries: u32,
}

/// Run the connections `args` describes.
pub async fn run(args: &ConnectionsArgs) -> anyhow::Result<Outcome> {
    args.validate()?;
    let fd = fdlimit::raise();
    if !args.provision_only {
        fd.check(args.devices)?;
    }
    // reqwest (no provider compiled in) and rustls need a process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let endpoints = crate::args::endpoints(&args.hub)?;
    let ca_pem = match &args.ca_cert {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?)
        }
        None => None,
    };
    let tokens = match (&args.tokens, &args.api_key) {
        (Some(path), _) => provision::read_tokens_from(path, args.offset, args.devices)?,
        (None, Some(key)) => {
            eprintln!(
                "connections: creating {} devices at {}",
                args.devices, endpoints.api_base
            );
            let started = Instant::now();
            let tokens = provision::provision_with(
                &endpoints.api_base,
                key,
                &args.name_prefix,
                args.devices,
                ca_pem.as_deref(),
                args.provision_concurrency,
            )
            .await?;
            eprintln!(
                "connections: created {} devices in {:.1} s",
                tokens.len(),
                started.elapsed().as_secs_f64()
            );
            if let Some(path) = &args.tokens_out {
                provision::write_tokens(path, &tokens)?;
            }
            tokens
        }
        (None, None) => bail!("give --api-key or --tokens"),
    };
    if args.provision_only {
        return Ok(Outcome::Provisioned {
            devices: tokens.len(),
            tokens_out: args.tokens_out.clone().unwrap_or_default(),
        });
    }

    let addr = resolve(&endpoints.device_url, &args.source_addrs).await?;
    let connector = match &ca_pem {
        Some(pem) if endpoints.device_url.starts_with("wss://") => {
            crate::watch::tls_connector(pem)?
        }
        _ => Connector::Plain,
    };
    let shared = Arc::new(Shared {
        target: Target {
            url: endpoints.device_url.clone(),
            addr,
            connector,
            hello: link::hello()?,
            timeout: Duration::from_secs_f64(args.connect_timeout),
        },
        stats: Stats::new()?,
        slots: Semaphore::new(args.connect_concurrency),
        storm_retries: args.storm_retries,
    });
    let mut signals = Signals::new()?;
    eprintln!(
        "connections: {} devices to {} ({addr}) from {}, {} attempts in flight",
        args.devices, endpoints.device_url, args.source_addrs, args.connect_concurrency
    );

    let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        tasks.spawn(device(
            Arc::clone(&shared),
            token,
            args.source_addrs.for_connection(i),
            phase_rx.clone(),
            events_tx.clone(),
        ));
    }
    drop((phase_rx, events_tx));
    let stats = &shared.stats;
    let n = args.devices;
    let mut interrupted = false;

    // The ramp: until every device's first attempt has ended.
    let mut ramp_ended = 0;
    let mut ticker = interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    while ramp_ended < n {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Ramp) => ramp_ended += 1,
                Some(Event::Storm { .. }) => {}
                None => break,
            },
            _ = ticker.tick() => progress("ramp", &stats.ramp, n),
            () = signals.stop.recv() => {
                interrupted = true;
                break;
            }
        }
    }
    let ramp = stats.ramp.report(&stats.clock, None);
    eprintln!(
        "connections: ramp done: {}/{n} connected in {:.2} s ({:.0}/s), {} failed",
        ramp.connected, ramp.seconds, ramp.rate_per_s, ramp.failed
    );

    // The hold.
    let hold_started = Instant::now();
    let pings_before = stats.pings();
    if !interrupted {
        tokio::select! {
            () = hold(args, &mut signals.usr1) => {}
            () = signals.stop.recv() => interrupted = true,
        }
    }
    let hold_s = hold_started.elapsed().as_secs_f64();
    let pings_during_hold = stats.pings() - pings_before;

    // The storm.
    let mut storm = None;
    if args.storm && !interrupted {
        let storm_started = stats.clock.now_ns();
        phase_tx.send_replace(Phase::Storm);
        let (mut ended, mut cut) = (0, 0u64);
        while ended < n {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Storm { cut: had }) => {
                        ended += 1;
                        cut += u64::from(had);
                    }
                    Some(Event::Ramp) => {}
                    None => break,
                },
                _ = ticker.tick() => progress("storm", &stats.storm, n),
                () = signals.stop.recv() => {
                    interrupted = true;
                    break;
                }
            }
        }
        let phase = stats.storm.report(&stats.clock, Some(storm_started));
        eprintln!(
            "connections: storm done: {}/{cut} reconnected in {:.2} s ({:.0}/s), {} failed \
             ({} failed attempts)",
            phase.connected, phase.seconds, phase.rate_per_s, phase.gave_up, phase.failed
        );
        if args.wait_signal && !interrupted {
            tokio::select! {
                () = signals.usr1.recv() => {}
                () = signals.stop.recv() => interrupted = true,
            }
        }
        storm = Some((cut, phase));
    }

    // The end: every task closes its connection.
    phase_tx.send_replace(Phase::Stop);
    let closing = async { while tasks.join_next().await.is_some() {} };
    if timeout(Duration::from_secs(10), closing).await.is_err() {
        tasks.abort_all();
    }

    let drops = stats.hold_drops();
    let storm = storm.map(|(cut, phase)| {
        let storm_drops = stats.storm_drops();
        StormReport {
            cut,
            reconnected: phase.connected,
            failed: phase.gave_up,
            failed_attempts: phase.failed,
            seconds: phase.seconds,
            rate_per_s: phase.rate_per_s,
            phase,
            dropped_after: storm_drops.values().sum(),
            drops: storm_drops,
        }
    });
    Ok(Outcome::Ran(Box::new(Summary {
        hub: endpoints.device_url,
        devices: n,
        source_addrs: args.source_addrs.len(),
        fd_limit: fd.soft,
        connected: ramp.connected,
        failed: ramp.failed,
        failures: ramp.failures.clone(),
        ramp_s: ramp.seconds,
        connect_rate_per_s: ramp.rate_per_s,
        ramp,
        hold_s,
        pings_during_hold,
        pings_received: stats.pings(),
        dropped_during_hold: drops.values().sum(),
        drops,
        storm,
        interrupted,
    })))
}

/// `--hold` seconds, or until SIGUSR1 with `--wait-signal`.
async fn hold(args: &ConnectionsArgs, usr1: &mut Usr1Signal) {
    if args.wait_signal {
        usr1.recv().await;
    } else {
        sleep(Duration::from_secs_f64(args.hold)).await;
    }
}

/// One line of progress on stderr.
fn progress(phase: &str, stats: &PhaseStats, n: usize) {
    eprintln!(
        "connections: {phase} {}/{n} connected, {} failed",
        stats.connected_count(),
        stats.failed_count()
    );
}

/// One device: connect, hold, (storm: cut, reconnect, hold), close.
///
/// Its future is what every idle connection costs for the whole run, so
/// every step but the stream itself is boxed: a future awaited inline takes
/// its full size in the task for good (the connect step alone is 11 KB).
async fn device(
    shared: Arc<Shared>,
    token: String,
    source: Option<IpAddr>,
    mut phase: watch::Receiver<Phase>,
    events: mpsc::UnboundedSender<Event>,
) {
    let stats = &shared.stats;
    let mut ws = Box::pin(attempt(&shared, &stats.ramp, &token, source, &phase)).await;
    if ws.is_none() {
        stats.ramp.gave_up();
    }
    let _ = events.send(Event::Ramp);
    Box::pin(hold_until(&mut ws, &mut phase, stats, false, |p| {
        p != Phase::Hold
    }))
    .await;
    let now = phase
        .wait_for(|p| *p != Phase::Hold)
        .await
        .map_or(Phase::Stop, |p| *p);
    if now == Phase::Storm {
        // Dropping the stream closes the socket: no close frame, no
        // goodbye, as when a network path dies.
        let cut = ws.take().is_some();
        if cut {
            let mut retries = 0;
            loop {
                ws = Box::pin(attempt(&shared, &stats.storm, &token, source, &phase)).await;
                if ws.is_some() || retries >= shared.storm_retries || *phase.borrow() == Phase::Stop
                {
                    break;
                }
                retries += 1;
                sleep(Duration::from_millis(200 * u64::from(retries))).await;
            }
            if ws.is_none() {
                stats.storm.gave_up();
            }
        }
        let _ = events.send(Event::Storm { cut });
        Box::pin(hold_until(&mut ws, &mut phase, stats, true, |p| {
            p == Phase::Stop
        }))
        .await;
    }
    if let Some(ws) = ws {
        Box::pin(link::close(ws)).await;
    }
}

/// Hold `ws` (if any) until the phase satisfies `done`; a connection the
/// hub ends meanwhile is recorded as a drop and becomes None.
async fn hold_until(
    ws: &mut Option<WsStream>,
    phase: &mut watch::Receiver<Phase>,
    stats: &Stats,
    after_storm: bool,
    done: impl Fn(Phase) -> bool,
) {
    let Some(stream) = ws.as_mut() else {
        return;
    };
    let dropped = tokio::select! {
        failure = link::idle(stream, || stats.ping()) => Some(failure),
        _ = phase.wait_for(|p| done(*p)) => None,
    };
    if let Some(failure) = dropped {
        stats.dropped(failure, after_storm);
        *ws = None;
    }
}

/// One connection attempt within a `--connect-concurrency` slot, recorded
/// in `phase_stats`.
async fn attempt(
    shared: &Shared,
    phase_stats: &PhaseStats,
    token: &str,
    source: Option<IpAddr>,
    phase: &watch::Receiver<Phase>,
) -> Option<WsStream> {
    let Ok(_slot) = shared.slots.acquire().await else {
        phase_stats.failed(Failure("not attempted: closed".to_owned()));
        return None;
    };
    if *phase.borrow() == Phase::Stop {
        phase_stats.failed(Failure("not attempted: interrupted".to_owned()));
        return None;
    }
    let clock = &shared.stats.clock;
    let started = clock.now_ns();
    phase_stats.attempt(started);
    // Boxed: the handshake's large future lives on the heap only while it
    // runs, not in every idle task for the rest of the run.
    match Box::pin(link::connect(&shared.target, token, source)).await {
        Ok(ws) => {
            phase_stats.connected(started, clock.now_ns());
            Some(ws)
        }
        Err(failure) => {
            phase_stats.failed(failure);
            None
        }
    }
}

/// The hub's address for `url`, of the same family as the source addresses.
async fn resolve(url: &str, sources: &SourceAddrs) -> anyhow::Result<SocketAddr> {
    let parsed = Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let port = parsed
        .port_or_known_default()
        .with_context(|| format!("{url:?} has no port"))?;
    let candidates: Vec<SocketAddr> = match parsed.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .with_context(|| format!("cannot resolve {name}"))?
            .collect(),
        None => bail!("{url:?} has no host"),
    };
    let want_v4 = sources.addrs().first().map(IpAddr::is_ipv4);
    let addr = candidates
        .iter()
        .find(|a| want_v4.is_none_or(|v4| a.is_ipv4() == v4))
        .copied()
        .with_context(|| {
            format!("{url:?} resolves to no address of the --source-addrs family ({candidates:?})")
        })?;
    if sources
        .addrs()
        .iter()
        .any(|s| s.is_ipv4() != addr.is_ipv4())
    {
        bail!("--source-addrs mixes IPv4 and IPv6; the hub is at {addr}");
    }
    Ok(addr)
}

/// Ctrl-C and SIGTERM end the run early (with a summary); SIGUSR1 ends a
/// `--wait-signal` wait. Registered before the first connection, so a
/// script's SIGUSR1 never meets the default action (terminate).
struct Signals {
    /// Ctrl-C or SIGTERM.
    stop: StopSignal,
    /// SIGUSR1.
    usr1: Usr1Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                stop: StopSignal {
                    term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
                },
                usr1: Usr1Signal {
                    usr1: signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?,
                },
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {
            stop: StopSignal {},
            usr1: Usr1Signal {},
        })
    }
}

/// Ctrl-C or SIGTERM.
struct StopSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl StopSignal {
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGUSR1 (never, where there is none).
struct Usr1Signal {
    #[cfg(unix)]
    usr1: tokio::signal::unix::Signal,
}

impl Usr1Signal {
    async fn recv(&mut self) {
        #[cfg(unix)]
        self.usr1.recv().await;
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_validate() -> anyhow::Result<()> {
        let args = ConnectionsArgs::try_parse_from([
            "connections",
            "--hub",
            "http://127.0.0.1:1",
            "--tokens",
            "t.txt",
            "--offset",
            "19000",
            "--devices",
            "19000",
            "--source-addrs",
            "127.0.1.2-127.0.1.9,127.0.2.1",
            "--storm",
            "--wait-signal",
        ])?;
        args.validate()?;
        assert_eq!(args.offset, 19_000);
        assert_eq!(args.source_addrs.len(), 9);
        assert_eq!(args.connect_concurrency, 1024);
        let default = ConnectionsArgs::try_parse_from(["connections", "--api-key", "k"])?;
        assert_eq!(default.source_addrs.len(), 16);
        assert_eq!(
            default.source_addrs.for_connection(0),
            Some("127.0.0.2".parse()?)
        );
        assert!(ConnectionsArgs::try_parse_from(["connections"]).is_err());
        let offset_alone =
            ConnectionsArgs::try_parse_from(["connections", "--api-key", "k", "--offset", "3"])?;
        assert!(offset_alone.validate().is_err(), "--offset is for --tokens");
        assert!(
            ConnectionsArgs::try_parse_from(["connections", "--api-key", "k", "--provision-only"])
                .is_err(),
            "--provision-only needs --tokens-out"
        );
        let wss = ConnectionsArgs::try_parse_from([
            "connections",
            "--api-key",
            "k",
            "--hub",
            "wss://localhost:1",
        ])?;
        assert!(wss.validate().is_err(), "wss:// needs --ca");
        Ok(())
    }

    #[tokio::test]
    async fn the_hub_address_matches_the_source_family() -> anyhow::Result<()> {
        let v4: SourceAddrs = "127.0.0.2".parse()?;
        let any: SourceAddrs = "any".parse()?;
        assert_eq!(
            resolve("ws://127.0.0.1:9/ws/device", &v4).await?,
            "127.0.0.1:9".parse()?
        );
        assert!(resolve("ws://[::1]:9/ws/device", &v4).await.is_err());
        assert_eq!(
            resolve("ws://[::1]:9/ws/device", &any).await?,
            "[::1]:9".parse()?
        );
        Ok(())
    }
}
