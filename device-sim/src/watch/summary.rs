//! What a `watch` run saw, summed over its clients: counts by message type,
//! readings received and their rate, resyncs, disconnects; printed as a
//! short report or one JSON object.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::ClientStats;
use super::message::Kind;
use crate::report::{LatencyMs, thousands};

/// The outcome of a `watch` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchSummary {
    /// Clients started.
    pub clients: usize,
    /// Devices the hub listed when the clients started.
    pub devices_listed: usize,
    /// Distinct devices some client subscribed to.
    pub devices_watched: usize,
    /// Clients that were welcomed at least once.
    pub clients_connected: usize,
    /// Welcomes received over all clients (more than `clients_connected`
    /// when clients reconnected).
    pub sessions: u64,
    /// Seconds from the clients' start to their stop.
    pub duration_s: f64,
    /// Messages received.
    pub messages: u64,
    /// Messages received per second of `duration_s`.
    pub messages_per_s: f64,
    /// Messages received, by type.
    pub messages_by_type: BTreeMap<&'static str, u64>,
    /// Telemetry readings received.
    pub readings: u64,
    /// Readings received per second while telemetry flowed (from the first
    /// telemetry message any client received to the last).
    pub readings_per_s: f64,
    /// Seconds from the first telemetry message to the last.
    pub telemetry_window_s: f64,
    /// Snapshots with reason `lagged`: a client fell behind and the hub
    /// dropped its queued messages.
    pub resyncs: u64,
    /// Sessions that ended while the run was going.
    pub disconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Text frames that did not parse as a stream message.
    pub parse_errors: u64,
    /// Binary frames received (the stream sends none).
    pub binary_frames: u64,
    /// MiB of JSON received per second of `duration_s`.
    pub mib_per_s: f64,
    /// From a telemetry message's newest reading (device clock) to its
    /// arrival (includes batching on the device and the database commit).
    pub telemetry_delay_ms: LatencyMs,
    /// Close codes the hub sent, with how often.
    pub close_codes: BTreeMap<u16, u64>,
    /// Why clients gave up (close 4001, ...), with how many.
    pub fatal: BTreeMap<String, u64>,
    /// One of the last errors (connection or parsing), if any.
    pub last_error: Option<String>,
    /// One of the `error` messages the hub sent, if any.
    pub last_hub_error: Option<String>,
}

impl WatchSummary {
    /// Sums the clients' stats.
    pub fn new(
        stats: &[ClientStats],
        devices_listed: usize,
        devices_watched: usize,
        duration: Duration,
    ) -> anyhow::Result<Self> {
        let mut by_kind = [0u64; Kind::ALL.len()];
        let mut delay = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
        let mut close_codes = BTreeMap::new();
        let mut fatal = BTreeMap::new();
        let mut first = None;
        let mut last = None;
        for s in stats {
            for (sum, n) in by_kind.iter_mut().zip(s.messages) {
                *sum += n;
            }
            delay.add(&s.delay_ms)?;
            for (code, _) in &s.close_codes {
                *close_codes.entry(*code).or_insert(0) += 1;
            }
            if let Some(why) = &s.fatal {
                *fatal.entry(why.clone()).or_insert(0) += 1;
            }
            first = match (first, s.first_telemetry) {
                (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                (a, b) => a.or(b),
            };
            last = match (last, s.last_telemetry) {
                (Some(a), Some(b)) => Some(std::cmp::max(a, b)),
                (a, b) => a.or(b),
            };
        }
        let sum = |f: fn(&ClientStats) -> u64| stats.iter().map(f).sum::<u64>();
        let readings = sum(|s| s.readings);
        let messages: u64 = by_kind.iter().sum();
        let window = match (first, last) {
            (Some(first), Some(last)) => last.duration_since(first),
            _ => Duration::ZERO,
        };
        let per_s = |n: f64, over: Duration| {
            if over.is_zero() {
                0.0
            } else {
                n / over.as_secs_f64()
            }
        };
        let ms = |v: u64| v as f64;
        Ok(WatchSummary {
            clients: stats.len(),
            devices_listed,
            devices_watched,
            clients_connected: stats.iter().filter(|s| s.sessions > 0).count(),
            sessions: sum(|s| s.sessions),
            duration_s: duration.as_secs_f64(),
            messages,
            messages_per_s: per_s(messages as f64, duration),
            messages_by_type: Kind::ALL
                .iter()
                .map(|k| (k.name(), by_kind[k.index()]))
                .collect(),
            readings,
            readings_per_s: per_s(readings as f64, window),
            telemetry_window_s: window.as_secs_f64(),
            resyncs: sum(|s| s.resyncs),
            disconnects: sum(|s| s.disconnects),
            connect_failures: sum(|s| s.connect_failures),
            parse_errors: sum(|s| s.parse_errors),
            binary_frames: sum(|s| s.binary_frames),
            mib_per_s: per_s(sum(|s| s.bytes) as f64 / (1024.0 * 1024.0), duration),
            telemetry_delay_ms: if delay.is_empty() {
                LatencyMs::default()
            } else {
                LatencyMs {
                    p50: ms(delay.value_at_quantile(0.50)),
                    p99: ms(delay.value_at_quantile(0.99)),
                    max: ms(delay.max()),
                }
            },
            close_codes,
            fatal,
            last_error: stats.iter().rev().find_map(|s| s.last_error.clone()),
            last_hub_error: stats.iter().rev().find_map(|s| s.last_hub_error.clone()),
        })
    }

    /// What went wrong, if anything; each makes the exit code non-zero.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.clients_connected == 0 {
            problems.push(format!(
                "no client was welcomed by the hub{}",
                self.last_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        for (why, n) in &self.fatal {
            problems.push(format!("{n} clients gave up: {why}"));
        }
        if self.clients_connected > 0 && self.devices_watched > 0 && self.readings == 0 {
            problems.push("no telemetry reading was received".to_owned());
        }
        if self.parse_errors > 0 {
            problems.push(format!(
                "{} messages did not parse",
                thousands(self.parse_errors)
            ));
        }
        problems
    }

    /// Success only when clients connected, none gave up, telemetry arrived
    /// and every message parsed.
    pub fn exit_code(&self) -> ExitCode {
        if self.problems().is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Print the summary on stdout: one JSON object, or a short report.
pub fn print(summary: &WatchSummary, json: bool) {
    if json {
        match serde_json::to_string(summary) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("device-sim watch: cannot encode the summary: {err}"),
        }
        for problem in summary.problems() {
            eprintln!("device-sim watch: {problem}");
        }
        return;
    }
    println!("{}", render(summary));
}

/// The human-readable summary.
pub fn render(s: &WatchSummary) -> String {
    let mut out = format!(
        "device-sim watch summary: {} stream clients for {:.1} s\n",
        thousands(s.clients as u64),
        s.duration_s
    );
    let mut row = |label: &str, value: String| {
        out.push_str(&format!("  {label:<13}{value}\n"));
    };
    row(
        "clients",
        format!(
            "{} connected ({} sessions), {} disconnects, {} failed connects",
            thousands(s.clients_connected as u64),
            thousands(s.sessions),
            thousands(s.disconnects),
            thousands(s.connect_failures)
        ),
    );
    row(
        "devices",
        format!(
            "{} watched of {} listed",
            thousands(s.devices_watched as u64),
            thousands(s.devices_listed as u64)
        ),
    );
    row(
        "messages",
        format!(
            "{} ({} /s, {:.2} MiB/s)",
            thousands(s.messages),
            thousands(s.messages_per_s.round() as u64),
            s.mib_per_s
        ),
    );
    row(
        "by type",
        s.messages_by_type
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| format!("{kind} {}", thousands(*n)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    row(
        "readings",
        format!(
            "{} received, {} /s over {:.1} s of telemetry",
            thousands(s.readings),
            thousands(s.readings_per_s.round() as u64),
            s.telemetry_window_s
        ),
    );
    row(
        "delay",
        format!(
            "newest reading to arrival: p50 {} ms, p99 {} ms, max {} ms",
            s.telemetry_delay_ms.p50, s.telemetry_delay_ms.p99, s.telemetry_delay_ms.max
        ),
    );
    row(
        "resyncs",
        format!("{} (snapshot reason lagged)", thousands(s.resyncs)),
    );
    if !s.close_codes.is_empty() {
        row(
            "close codes",
            s.close_codes
                .iter()
                .map(|(code, n)| format!("{code} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some(err) = &s.last_hub_error {
        row("hub error", err.clone());
    }
    let problems = s.problems();
    if problems.is_empty() {
        row("result", "OK".to_owned());
    }
    for problem in problems {
        row("result", format!("FAILED: {problem}"));
    }
    out
}
