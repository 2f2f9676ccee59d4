//! `command_load`: a command round-trip load generator for the hub.
//!
//! It lists the devices that are online (through the HTTP API), then sends
//! commands to random ones at a steady rate, via HTTP (`POST
//! /api/v1/devices/{id}/commands?wait=SECONDS`) or via MQTT (a request on
//! `{prefix}/devices/{id}/commands` with a Response Topic and Correlation
//! Data), and measures each command's round trip: request sent to final
//! status received. `bench/commands.sh` runs it against a release hub with
//! 1,000 simulated devices (device-sim) streaming telemetry meanwhile.
//!
//! **The schedule is open-loop.** Command `n` is due at `start + n / rate`;
//! the scheduler sleeps until then and hands the command to its own task,
//! so a slow answer never delays the next command (if the scheduler itself
//! falls behind, the late commands go out at once, as a burst, and the lag
//! is reported). The round trip is measured from the moment the task sends
//! the request (the `p*_ms` figures); the same round trip measured from the
//! command's scheduled time, which also counts any lag of the generator, is
//! reported beside it (`sched_*`).
//!
//! **Outcomes.** A command that reaches a final status within `--wait`
//! seconds counts as `succeeded`, `failed_or_rejected` or `expired` and its
//! round trip enters the histogram; one that does not (HTTP 202 after the
//! wait, no final status on MQTT) counts as a timeout; transport failures,
//! HTTP error statuses and MQTT refusals (`{"error": ...}`) count as
//! errors. Commands of the first `--warmup` seconds are sent but counted
//! nowhere.

#[path = "command_load/mqtt.rs"]
mod mqtt;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use mqtt::MqttRequester;

/// Send commands to online devices at a steady rate and measure their round trip.
#[derive(Debug, Clone, Parser)]
#[command(name = "command_load", version, about)]
struct Args {
    /// Base URL of the hub's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,

    /// API key for the HTTP API (`hub apikey add NAME`).
    #[arg(long, env = "SIM_API_KEY")]
    api_key: String,

    /// How commands are sent.
    #[arg(long, value_enum, default_value_t = Via::Http)]
    via: Via,

    /// MQTT broker the hub's bridge is connected to (for --via mqtt).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    mqtt_url: String,

    /// The hub's MQTT topic prefix.
    #[arg(long, default_value = "hub")]
    mqtt_prefix: String,

    /// Commands per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,

    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,

    /// Seconds of load before the measurement starts (sent, not counted).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,

    /// Seconds to wait for a command's final status: the HTTP `?wait`
    /// (0 to 60) and the MQTT per-command timeout.
    #[arg(long, default_value_t = 10)]
    wait: u64,

    /// Command time to live in seconds, sent with every request.
    #[arg(long, default_value_t = 30)]
    ttl: u64,

    /// Wait until at least this many devices are online before starting.
    #[arg(long, default_value_t = 1)]
    min_devices: usize,

    /// Seconds to wait for --min-devices to come online.
    #[arg(long, default_value_t = 120.0)]
    online_timeout: f64,

    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,

    /// Keep Nagle's algorithm on the MQTT connection (rumqttc's default);
    /// without it the client sets TCP_NODELAY. For comparisons.
    #[arg(long)]
    mqtt_nagle: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Via {
    Http,
    Mqtt,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Mqtt => "mqtt",
        }
    }
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if !self.rate.is_finite() || self.rate <= 0.0 || self.rate > 1_000_000.0 {
            bail!("--rate must be a positive number of commands per second");
        }
        for (name, value) in [
            ("--duration", self.duration),
            ("--warmup", self.warmup),
            ("--online-timeout", self.online_timeout),
        ] {
            if !value.is_finite() || !(0.0..=86_400.0).contains(&value) {
                bail!("{name} must be between 0 and 86400 seconds");
            }
        }
        if self.duration <= 0.0 {
            bail!("--duration must be positive");
        }
        if self.wait == 0 || self.wait > 60 {
            bail!("--wait must be between 1 and 60 seconds (the hub's longest ?wait)");
        }
        if self.ttl == 0 {
            bail!("--ttl must be at least 1 second");
        }
        Ok(())
    }

    fn api_base(&self) -> &str {
        self.api.trim_end_matches('/')
    }
}

/// How one command ended, as seen by its sender.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A final status (`succeeded`, `failed`, `rejected`, `expired`) arrived.
    Final(Final),
    /// No final status within the wait.
    Timeout,
    /// The request failed or was refused.
    Error(String),
}

/// A final status as received.
#[derive(Debug)]
pub(crate) struct Final {
    /// `succeeded`, `failed`, `rejected` or `expired`.
    status: String,
    /// When it arrived.
    at: Instant,
    /// When it arrived, µs since the Unix epoch (to compare with the hub's times).
    at_wall_us: i64,
    /// The lifecycle times the hub recorded.
    hub: HubTimes,
}

/// The hub's timestamps of one command (ms since the Unix epoch), from its
/// JSON view: `created_at`, `sent_at`, `delivered_at`, `finished_at`.
#[derive(Debug, Default, Clone, Copy)]
struct HubTimes {
    created: Option<i64>,
    sent: Option<i64>,
    delivered: Option<i64>,
    finished: Option<i64>,
}

impl HubTimes {
    fn from_view(view: &serde_json::Value) -> HubTimes {
        let field = |name: &str| {
            view.get(name)
                .and_then(|v| v.as_str())
                .and_then(parse_rfc3339_ms)
        };
        HubTimes {
            created: field("created_at"),
            sent: field("sent_at"),
            delivered: field("delivered_at"),
            finished: field("finished_at"),
        }
    }
}

/// Ms since the Unix epoch of the hub's UTC times
/// (`2026-11-26T08:00:00.123Z`); None for anything else.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + milli)
}

/// Now, µs since the Unix epoch.
pub(crate) fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The outcome a command's JSON view (HTTP answer or MQTT status message)
/// stands for, received at `at`; None while the status is not final.
pub(crate) fn outcome_of_view(
    view: &serde_json::Value,
    at: Instant,
    at_wall_us: i64,
) -> Option<Outcome> {
    match view.get("status").and_then(|s| s.as_str()) {
        Some(status) if is_final(status) => Some(Outcome::Final(Final {
            status: status.to_owned(),
            at,
            at_wall_us,
            hub: HubTimes::from_view(view),
        })),
        Some(_) => None,
        None => Some(Outcome::Error("a command view without status".into())),
    }
}

/// Stages of the round trip, from the hub's timestamps (ms resolution) and
/// the sender's clock (same machine).
const STAGES: [&str; 5] = [
    // request sent -> created_at (transport, auth, device lookup)
    "accept",
    // created_at -> sent_at (insert committed, offered, written to the socket)
    "to_device",
    // sent_at -> delivered_at (device receipt processed by the hub)
    "delivered",
    // delivered_at -> finished_at (device result processed by the hub)
    "result",
    // finished_at -> final status received (final update committed, notified)
    "notify",
];

/// Whether `status` is one a command never leaves.
pub(crate) fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "rejected" | "expired")
}

/// Counters and histograms, shared by the command tasks.
struct Stats {
    inner: Mutex<StatsInner>,
    /// Commands handed to a task (all phases).
    issued: AtomicU64,
    /// Commands handed to a task in the measured phase.
    measured_issued: AtomicU64,
    /// Commands whose task ended (all phases).
    finished: AtomicU64,
}

struct StatsInner {
    /// Round trip from the actual send, µs (measured phase).
    rtt: Histogram<u64>,
    /// Round trip from the scheduled send, µs (measured phase).
    sched: Histogram<u64>,
    /// Send lateness behind the schedule, µs (measured phase).
    lag: Histogram<u64>,
    /// Round trips finished in the current progress interval (any phase).
    interval: Histogram<u64>,
    /// The round trip's stages (see [`STAGES`]), µs (measured phase).
    stages: Vec<Histogram<u64>>,
    sent: u64,
    succeeded: u64,
    failed_or_rejected: u64,
    expired: u64,
    errors: u64,
    timeouts: u64,
    /// Error messages and how often each was seen.
    error_kinds: HashMap<String, u64>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 10 minutes, three significant digits.
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// One command's timing: when it was due and when it went out.
#[derive(Debug, Clone, Copy)]
struct Timing {
    scheduled: Instant,
    sent: Instant,
    /// `sent` as µs since the Unix epoch.
    sent_wall_us: i64,
    measured: bool,
}

impl Stats {
    fn new() -> anyhow::Result<Self> {
        Ok(Stats {
            inner: Mutex::new(StatsInner {
                rtt: histogram()?,
                sched: histogram()?,
                lag: histogram()?,
                interval: histogram()?,
                stages: STAGES
                    .iter()
                    .map(|_| histogram())
                    .collect::<anyhow::Result<_>>()?,
                sent: 0,
                succeeded: 0,
                failed_or_rejected: 0,
                expired: 0,
                errors: 0,
                timeouts: 0,
                error_kinds: HashMap::new(),
            }),
            issued: AtomicU64::new(0),
            measured_issued: AtomicU64::new(0),
            finished: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatsInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, timing: Timing, outcome: Outcome) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        if let Outcome::Final(done) = &outcome {
            s.interval
                .saturating_record(micros(done.at.saturating_duration_since(timing.sent)));
        }
        if !timing.measured {
            return;
        }
        s.sent += 1;
        s.lag.saturating_record(micros(
            timing.sent.saturating_duration_since(timing.scheduled),
        ));
        match outcome {
            Outcome::Final(done) => {
                s.rtt
                    .saturating_record(micros(done.at.saturating_duration_since(timing.sent)));
                s.sched
                    .saturating_record(micros(done.at.saturating_duration_since(timing.scheduled)));
                let h = done.hub;
                let points = [
                    Some(timing.sent_wall_us),
                    h.created.map(|ms| ms * 1000),
                    h.sent.map(|ms| ms * 1000),
                    h.delivered.map(|ms| ms * 1000),
                    h.finished.map(|ms| ms * 1000),
                    Some(done.at_wall_us),
                ];
                for (stage, pair) in s.stages.iter_mut().zip(points.windows(2)) {
                    if let [Some(from), Some(to)] = pair {
                        // Clamped: the hub's times are truncated to the ms.
                        stage.saturating_record(u64::try_from(to - from).unwrap_or(0).max(1));
                    }
                }
                match done.status.as_str() {
                    "succeeded" => s.succeeded += 1,
                    "expired" => s.expired += 1,
                    _ => s.failed_or_rejected += 1,
                }
            }
            Outcome::Timeout => s.timeouts += 1,
            Outcome::Error(message) => {
                s.errors += 1;
                let seen = s.error_kinds.entry(message.clone()).or_insert(0);
                *seen += 1;
                if *seen == 1 && s.error_kinds.len() <= 10 {
                    eprintln!("command_load: error: {message}");
                }
            }
        }
    }

    /// A progress line for the interval just ended; resets the interval.
    fn progress(&self, elapsed: Duration, phase: &str) -> String {
        let issued = self.issued.load(Ordering::Relaxed);
        let finished = self.finished.load(Ordering::Relaxed);
        let mut s = self.lock();
        let mut line = format!(
            "[{:5.1}s {phase}] issued={issued} in_flight={} measured: sent={} ok={} failed={} expired={} errors={} timeouts={}",
            elapsed.as_secs_f64(),
            issued.saturating_sub(finished),
            s.sent,
            s.succeeded,
            s.failed_or_rejected,
            s.expired,
            s.errors,
            s.timeouts,
        );
        if !s.interval.is_empty() {
            let _ = write!(
                line,
                " | last 1s: n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
                s.interval.len(),
                ms(s.interval.value_at_quantile(0.50)),
                ms(s.interval.value_at_quantile(0.99)),
                ms(s.interval.max()),
            );
        }
        s.interval.reset();
        line
    }
}

/// The final figures.
#[derive(Debug, Serialize)]
struct Summary {
    via: Via,
    /// Offered commands per second.
    rate: f64,
    /// Measured seconds (warm-up excluded).
    duration_s: f64,
    warmup_s: f64,
    /// Online devices the commands were spread over.
    devices: usize,
    sent: u64,
    succeeded: u64,
    failed_or_rejected: u64,
    expired: u64,
    errors: u64,
    timeouts: u64,
    /// Round trip from the actual send to the final status, ms.
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// Round trip from the scheduled send (includes generator lag), ms.
    sched_p50_ms: f64,
    sched_p99_ms: f64,
    sched_max_ms: f64,
    /// How late the generator sent, ms.
    lag_p99_ms: f64,
    lag_max_ms: f64,
    /// Measured commands sent per second of the measured window.
    achieved_rate: f64,
    /// Where the round trip goes: p50/p99 of each stage (see `STAGES`), ms;
    /// stages that use the hub's timestamps have 1 ms resolution.
    stages: Vec<StageSummary>,
}

#[derive(Debug, Serialize)]
struct StageSummary {
    stage: &'static str,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Deserialize)]
struct DevicePage {
    devices: Vec<DeviceEntry>,
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeviceEntry {
    id: String,
}

/// Every online device's id.
async fn online_devices(
    client: &reqwest::Client,
    api: &str,
    key: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut request = client
            .get(format!("{api}/api/v1/devices"))
            .bearer_auth(key)
            .query(&[("online", "true"), ("limit", "1000")]);
        if let Some(cursor) = &after {
            request = request.query(&[("after", cursor.as_str())]);
        }
        let response = request.send().await.context("GET /api/v1/devices")?;
        let status = response.status();
        if !status.is_success() {
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            bail!("GET /api/v1/devices answered {status}: {body}");
        }
        let page: DevicePage = response
            .json()
            .await
            .context("GET /api/v1/devices: unexpected body")?;
        ids.extend(page.devices.into_iter().map(|d| d.id));
        match page.next {
            Some(next) if !next.is_empty() => after = Some(next),
            _ => return Ok(ids),
        }
    }
}

/// Polls the device list until at least `min` devices are online.
async fn wait_for_devices(
    client: &reqwest::Client,
    args: &Args,
) -> anyhow::Result<Arc<Vec<String>>> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.online_timeout);
    loop {
        let ids = online_devices(client, args.api_base(), &args.api_key).await?;
        if ids.len() >= args.min_devices.max(1) {
            return Ok(Arc::new(ids));
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} devices online after {} s, --min-devices is {}",
                ids.len(),
                args.online_timeout,
                args.min_devices
            );
        }
        eprintln!(
            "command_load: {} of {} devices online, waiting",
            ids.len(),
            args.min_devices
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The request body of command `n`: relay on, setpoint, relay off,
/// setpoint, ... (setpoints within the simulated devices' 10 to 30 °C).
fn command_body(n: u64, ttl: u64) -> serde_json::Value {
    match n % 4 {
        0 => serde_json::json!({"actuator": "relay", "value": true, "ttl": ttl}),
        2 => serde_json::json!({"actuator": "relay", "value": false, "ttl": ttl}),
        _ => {
            let setpoint = 15.0 + (n % 21) as f64 * 0.5;
            serde_json::json!({"actuator": "setpoint", "value": setpoint, "ttl": ttl})
        }
    }
}

/// The transport commands go out on.
#[derive(Clone)]
enum Sender {
    Http {
        client: reqwest::Client,
        api: Arc<str>,
        key: Arc<str>,
        wait: u64,
    },
    Mqtt(Arc<MqttRequester>),
}

impl Sender {
    /// Sends command `n` to `device`; returns when its outcome is known,
    /// with the moment the request left (monotonic and wall clock).
    async fn send(&self, n: u64, device: &str, body: serde_json::Value) -> (Instant, i64, Outcome) {
        match self {
            Sender::Http {
                client,
                api,
                key,
                wait,
            } => {
                let (sent, sent_wall_us) = (Instant::now(), wall_us());
                let outcome = http_command(client, api, key, *wait, device, &body).await;
                (sent, sent_wall_us, outcome)
            }
            Sender::Mqtt(mqtt) => mqtt.request(n, device, &body).await,
        }
    }
}

async fn http_command(
    client: &reqwest::Client,
    api: &str,
    key: &str,
    wait: u64,
    device: &str,
    body: &serde_json::Value,
) -> Outcome {
    let response = match client
        .post(format!("{api}/api/v1/devices/{device}/commands"))
        .query(&[("wait", wait)])
        .bearer_auth(key)
        .json(body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return Outcome::Timeout,
        Err(err) => return Outcome::Error(format!("POST: {err}")),
    };
    let status = response.status();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(err) if err.is_timeout() => return Outcome::Timeout,
        Err(err) => return Outcome::Error(format!("reading the answer: {err}")),
    };
    let (at, at_wall_us) = (Instant::now(), wall_us());
    match status.as_u16() {
        200 => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(view) => outcome_of_view(&view, at, at_wall_us)
                .unwrap_or_else(|| Outcome::Error("200 with a status that is not final".into())),
            Err(err) => Outcome::Error(format!("200 with a body that is not JSON: {err}")),
        },
        // Stored, but not final within the wait.
        202 => Outcome::Timeout,
        code => {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            Outcome::Error(format!("HTTP {code}: {text}"))
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(err) = args.validate() {
        eprintln!("command_load: {err:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("command_load: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(summary) => {
            print_summary(&summary, args.json);
            if summary.succeeded == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("command_load: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<Summary> {
    // reqwest is built without a crypto provider; it needs a process default
    // even for plain http.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(args.wait + 5))
        .build()
        .context("HTTP client")?;
    let devices = wait_for_devices(&client, args).await?;
    eprintln!(
        "command_load: {} devices online; {} commands/s via {} for {} s (+{} s warm-up)",
        devices.len(),
        args.rate,
        args.via.name(),
        args.duration,
        args.warmup
    );
    let sender = match args.via {
        Via::Http => Sender::Http {
            client: client.clone(),
            api: Arc::from(args.api_base()),
            key: Arc::from(args.api_key.as_str()),
            wait: args.wait,
        },
        Via::Mqtt => Sender::Mqtt(Arc::new(
            MqttRequester::connect(
                &args.mqtt_url,
                &args.mqtt_prefix,
                Duration::from_secs(args.wait),
                args.mqtt_nagle,
            )
            .await?,
        )),
    };

    let stats = Arc::new(Stats::new()?);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_start = start + Duration::from_secs_f64(args.warmup);
    let end = measure_start + Duration::from_secs_f64(args.duration);
    let total = ((args.warmup + args.duration) * args.rate).ceil() as u64;

    let progress = {
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                let now = tick.tick().await;
                let phase = if now < measure_start {
                    "warm-up"
                } else if now <= end {
                    "measure"
                } else {
                    "drain"
                };
                eprintln!("{}", stats.progress(now - start, phase));
            }
        })
    };

    let mut tasks = JoinSet::new();
    for n in 0..total {
        let scheduled = start + Duration::from_secs_f64(n as f64 / args.rate);
        if scheduled >= end {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let device = {
            let i = rand::rng().random_range(0..devices.len());
            devices[i].clone()
        };
        let body = command_body(n, args.ttl);
        let sender = sender.clone();
        let stats_task = Arc::clone(&stats);
        let measured = scheduled >= measure_start;
        stats.issued.fetch_add(1, Ordering::Relaxed);
        if measured {
            stats.measured_issued.fetch_add(1, Ordering::Relaxed);
        }
        tasks.spawn(async move {
            let (sent, sent_wall_us, outcome) = sender.send(n, &device, body).await;
            let timing = Timing {
                scheduled,
                sent,
                sent_wall_us,
                measured,
            };
            stats_task.record(timing, outcome);
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    tokio::time::sleep_until(end).await;
    let window = Instant::now().saturating_duration_since(measure_start);
    // Every task ends within its own timeout; this only bounds a surprise.
    let drain = tokio::time::timeout(Duration::from_secs(args.wait + 15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    progress.abort();
    if drain.is_err() {
        eprintln!(
            "command_load: {} commands still unanswered after the drain; counted as timeouts",
            tasks.len()
        );
    }
    if let Sender::Mqtt(mqtt) = &sender {
        mqtt.disconnect().await;
    }

    let s = stats.lock();
    // Measured commands whose task did not finish (none, unless the drain timed out).
    let sent = stats.measured_issued.load(Ordering::Relaxed);
    let unanswered = sent.saturating_sub(s.sent);
    let q = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(q))
        }
    };
    let summary = Summary {
        via: args.via,
        rate: args.rate,
        duration_s: args.duration,
        warmup_s: args.warmup,
        devices: devices.len(),
        sent,
        succeeded: s.succeeded,
        failed_or_rejected: s.failed_or_rejected,
        expired: s.expired,
        errors: s.errors,
        timeouts: s.timeouts + unanswered,
        p50_ms: q(&s.rtt, 0.50),
        p90_ms: q(&s.rtt, 0.90),
        p99_ms: q(&s.rtt, 0.99),
        p999_ms: q(&s.rtt, 0.999),
        max_ms: if s.rtt.is_empty() {
            0.0
        } else {
            ms(s.rtt.max())
        },
        sched_p50_ms: q(&s.sched, 0.50),
        sched_p99_ms: q(&s.sched, 0.99),
        sched_max_ms: if s.sched.is_empty() {
            0.0
        } else {
            ms(s.sched.max())
        },
        lag_p99_ms: q(&s.lag, 0.99),
        lag_max_ms: if s.lag.is_empty() {
            0.0
        } else {
            ms(s.lag.max())
        },
        achieved_rate: sent as f64 / window.as_secs_f64().max(1e-9),
        stages: STAGES
            .iter()
            .zip(&s.stages)
            .map(|(&stage, h)| StageSummary {
                stage,
                p50_ms: q(h, 0.50),
                p90_ms: q(h, 0.90),
                p99_ms: q(h, 0.99),
                max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
            })
            .collect(),
    };
    if !s.error_kinds.is_empty() {
        let mut kinds: Vec<_> = s.error_kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (message, count) in kinds.into_iter().take(10) {
            eprintln!("command_load: {count} x {message}");
        }
    }
    Ok(summary)
}

fn print_summary(s: &Summary, json: bool) {
    if json {
        match serde_json::to_string(s) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("command_load: cannot encode the summary: {err}"),
        }
        return;
    }
    println!(
        "via {}: {} commands/s offered for {} s over {} devices",
        s.via.name(),
        s.rate,
        s.duration_s,
        s.devices
    );
    println!(
        "  sent {} ({:.1}/s): succeeded {}, failed or rejected {}, expired {}, errors {}, timeouts {}",
        s.sent, s.achieved_rate, s.succeeded, s.failed_or_rejected, s.expired, s.errors, s.timeouts
    );
    println!(
        "  round trip (send to final status): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms
    );
    println!(
        "  from the scheduled time: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (generator lag p99 {:.2} ms, max {:.2} ms)",
        s.sched_p50_ms, s.sched_p99_ms, s.sched_max_ms, s.lag_p99_ms, s.lag_max_ms
    );
    println!("  stages (hub timestamps, 1 ms resolution):");
    for stage in &s.stages {
        println!(
            "    {:<10} p50 {:6.1} ms  p90 {:6.1} ms  p99 {:6.1} ms  max {:6.1} ms",
            stage.stage, stage.p50_ms, stage.p90_ms, stage.p99_ms, stage.max_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_times_parse_to_epoch_ms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-26T08:00:00.123Z"),
            Some(1_795_680_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:00.000Z"),
            Some(951_868_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T23:59:59.999Z"),
            Some(1_709_251_199_999)
        );
        for bad in [
            "",
            "2026-11-26T08:00:00Z",
            "2026-11-26 08:00:00.123Z",
            "2026-13-26T08:00:00.123Z",
            "2026-11-26T08:00:00.123+01:00",
            "2026-11-26T08:0x:00.123Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn final_views_become_outcomes_with_their_times() {
        let view = serde_json::json!({
            "status": "succeeded",
            "created_at": "2026-11-26T08:00:00.100Z",
            "sent_at": "2026-11-26T08:00:00.101Z",
            "delivered_at": "2026-11-26T08:00:00.102Z",
            "finished_at": "2026-11-26T08:00:00.103Z",
        });
        let at = Instant::now();
        match outcome_of_view(&view, at, 7) {
            Some(Outcome::Final(done)) => {
                assert_eq!(done.status, "succeeded");
                assert_eq!(done.hub.created, Some(1_795_680_000_100));
                assert_eq!(done.hub.finished, Some(1_795_680_000_103));
            }
            other => panic!("expected a final outcome, got {other:?}"),
        }
        let queued = serde_json::json!({"status": "delivered"});
        assert!(outcome_of_view(&queued, at, 0).is_none());
        let odd = serde_json::json!({"id": 1});
        assert!(matches!(
            outcome_of_view(&odd, at, 0),
            Some(Outcome::Error(_))
        ));
    }

    #[test]
    fn commands_alternate_relay_and_valid_setpoints() {
        let actuators: Vec<String> = (0..4)
            .map(|n| command_body(n, 30)["actuator"].to_string())
            .collect();
        assert_eq!(
            actuators,
            ["\"relay\"", "\"setpoint\"", "\"relay\"", "\"setpoint\""]
        );
        assert_eq!(command_body(0, 30)["value"], true);
        assert_eq!(command_body(2, 30)["value"], false);
        for n in 0..1000 {
            let body = command_body(n, 30);
            if body["actuator"] == "setpoint" {
                let value = body["value"].as_f64().expect("a number");
                assert!((10.0..=30.0).contains(&value), "{value}");
            }
            assert_eq!(body["ttl"], 30);
        }
    }

    #[test]
    fn flags_parse_and_validate() {
        let args = Args::try_parse_from([
            "command_load",
            "--api-key",
            "k",
            "--via",
            "mqtt",
            "--rate",
            "200",
        ])
        .expect("parses");
        args.validate().expect("valid");
        assert_eq!(args.via, Via::Mqtt);
        for bad in [["--rate", "0"], ["--wait", "61"], ["--duration", "0"]] {
            let args = Args::try_parse_from(["command_load", "--api-key", "k", bad[0], bad[1]])
                .expect("parses");
            assert!(args.validate().is_err(), "{bad:?}");
        }
    }
}
