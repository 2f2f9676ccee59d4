//! `hub status`: asks a running hub for its connections, rates, queue and
//! command counts (`GET /api/v1/status`) and prints them.
//!
//! Unlike `hub device` and `hub apikey` it talks to the hub over HTTP, not
//! to the database: what it shows lives in the hub's memory. Text for
//! people, or with `--json` the hub's answer as it came.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::api::status::StatusReport;
use crate::store::CommandStatus;

/// `hub status` arguments.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The hub's HTTP address.
    #[arg(long, env = "HUB_API_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key (`hub apikey add`).
    #[arg(long, env = "HUB_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Print the hub's JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the hub's answer.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// Runs `hub status`, printing on stdout.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let output = execute(&args).await?;
    print!("{output}");
    Ok(())
}

/// Fetches the status and returns what to print.
pub async fn execute(args: &StatusArgs) -> anyhow::Result<String> {
    // reqwest's TLS takes the process-wide provider; another install (from
    // an earlier call) is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout.max(1)))
        .build()
        .context("cannot build the HTTP client")?;
    let url = format!("{}/api/v1/status", args.url.trim_end_matches('/'));
    let response = client
        .get(&url)
        .bearer_auth(&args.api_key)
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {url}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("cannot read the answer from {url}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        bail!("{url} answered {status}: {message}");
    }
    if args.json {
        return Ok(format!("{}\n", body.trim()));
    }
    let report: StatusReport = serde_json::from_str(&body)
        .with_context(|| format!("{url} did not answer with a hub status"))?;
    Ok(render(&report))
}

/// The text form: one labelled line per topic.
pub fn render(s: &StatusReport) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    rows.push((
        "hub",
        format!(
            "{} (version {}), up {} since {}",
            s.instance,
            s.version,
            duration(s.uptime_s),
            s.started_at
        ),
    ));
    rows.push((
        "devices",
        format!(
            "{} connected ({} connections open)",
            thousands(s.devices.connected),
            thousands(u64::try_from(s.devices.connections_open).unwrap_or(0))
        ),
    ));
    rows.push((
        "rates",
        format!(
            "{} readings/s, {} frames/s, {} acks/s, {} stored/s (last {:.0} s)",
            rate(s.rates.readings_per_s),
            rate(s.rates.frames_per_s),
            rate(s.rates.acks_per_s),
            rate(s.rates.stored_per_s),
            s.rates.window_s
        ),
    ));
    rows.push((
        "ingest queue",
        format!(
            "{} of {} frames",
            thousands(s.ingest.queue_frames),
            thousands(s.ingest.queue_capacity)
        ),
    ));
    rows.push((
        "since start",
        format!(
            "{} readings received, {} stored, {} frames, {} acks",
            thousands(s.totals.readings_received),
            thousands(s.totals.readings_stored),
            thousands(s.totals.frames_received),
            thousands(s.totals.acks_sent)
        ),
    ));
    rows.push((
        "handshakes",
        format!(
            "{} accepted, {} refused",
            thousands(s.totals.handshakes_accepted),
            thousands(s.totals.handshakes_refused)
        ),
    ));
    rows.push((
        "problems",
        format!(
            "{} frames rejected, {} database errors",
            thousands(s.totals.rejections),
            thousands(s.totals.database_errors)
        ),
    ));
    // Lifecycle order, not the map's alphabetical one.
    let commands: Vec<String> = CommandStatus::ALL
        .iter()
        .map(|status| {
            let name = status.as_str();
            let n = s.commands.get(name).copied().unwrap_or(0);
            format!("{name} {}", thousands(n))
        })
        .collect();
    rows.push(("commands", commands.join(", ")));
    rows.push((
        "mqtt",
        match s.mqtt {
            None => "off".to_owned(),
            Some(m) => format!(
                "{}, {} dropped",
                if m.connected {
                    "connected"
                } else {
                    "DISCONNECTED"
                },
                thousands(m.dropped)
            ),
        },
    ));
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{label:<width$}  {value}\n"));
    }
    out
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate: one decimal below 100, whole numbers with separators above.
fn rate(x: f64) -> String {
    if x < 100.0 {
        format!("{x:.1}")
    } else {
        thousands(x.round() as u64)
    }
}

/// `3725.4` seconds as `1h 02m 05s`.
fn duration(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m {s:02}s"),
        _ => format!("{d}d {h}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status::{
        DevicesStatus, IngestStatus, MqttStatusReport, RatesStatus, TotalsStatus,
    };

    fn report() -> StatusReport {
        StatusReport {
            instance: "hub-a".into(),
            version: "0.1.0".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            uptime_s: 3725.4,
            devices: DevicesStatus {
                connected: 1200,
                connections_open: 1201,
            },
            rates: RatesStatus {
                window_s: 10.0,
                readings_per_s: 12_345.6,
                frames_per_s: 61.72,
                acks_per_s: 61.0,
                stored_per_s: 12_000.0,
            },
            totals: TotalsStatus {
                readings_received: 1_000_000,
                readings_stored: 999_000,
                frames_received: 5000,
                acks_sent: 4990,
                handshakes_accepted: 1300,
                handshakes_refused: 2,
                rejections: 3,
                database_errors: 0,
            },
            ingest: IngestStatus {
                queue_frames: 7,
                queue_capacity: 1024,
            },
            commands: [("queued".to_owned(), 4), ("succeeded".to_owned(), 3)]
                .into_iter()
                .collect(),
            mqtt: Some(MqttStatusReport {
                connected: true,
                dropped: 0,
            }),
        }
    }

    #[test]
    fn text_shows_each_topic_on_an_aligned_line() {
        let text = render(&report());
        let expected = [
            "hub           hub-a (version 0.1.0), up 1h 02m 05s since 2026-01-01T00:00:00.000Z",
            "devices       1,200 connected (1,201 connections open)",
            "rates         12,346 readings/s, 61.7 frames/s, 61.0 acks/s, 12,000 stored/s (last 10 s)",
            "ingest queue  7 of 1,024 frames",
            "since start   1,000,000 readings received, 999,000 stored, 5,000 frames, 4,990 acks",
            "handshakes    1,300 accepted, 2 refused",
            "problems      3 frames rejected, 0 database errors",
            "commands      queued 4, sent 0, delivered 0, succeeded 3, failed 0, rejected 0, expired 0",
            "mqtt          connected, 0 dropped",
        ];
        assert_eq!(text, expected.join("\n") + "\n");
    }

    #[test]
    fn mqtt_off_and_short_uptimes_read_well() {
        let mut s = report();
        s.mqtt = None;
        s.uptime_s = 59.9;
        let text = render(&s);
        assert!(text.contains("\nmqtt          off\n"), "{text}");
        assert!(text.contains(", up 59s since"), "{text}");
        assert_eq!(duration(90_061.0), "1d 1h 01m");
        assert_eq!(duration(61.0), "1m 01s");
    }

    #[test]
    fn the_report_round_trips_through_json() {
        let json = serde_json::to_string(&report()).expect("serialises");
        let back: StatusReport = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, report());
    }
}
