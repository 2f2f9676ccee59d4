//! What the simulation tells its user: a live progress line on stderr, the
//! ack latency histogram, and the final summary (text or one JSON object).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Ack latencies (frame sent to Ack received), in microseconds, with three
/// significant digits from 1 µs to 1 hour.
#[derive(Debug)]
pub struct Latency {
    histogram: Mutex<Histogram<u64>>,
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Latency {
            histogram: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
        })
    }

    /// Record one frame's latency (clamped into the histogram's range).
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(micros.max(1));
    }

    /// p50, p99 and max in milliseconds (zeros when nothing was recorded).
    pub fn summary(&self) -> LatencyMs {
        let histogram = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if histogram.is_empty() {
            return LatencyMs::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencyMs {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Counters summed over every device at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Devices simulated.
    pub devices: usize,
    /// Devices in a session right now.
    pub connected: usize,
    /// Devices that stopped for good (credentials refused, revoked...).
    pub stopped: usize,
    /// Readings pushed into outboxes.
    pub sent: u64,
    /// Readings acknowledged by the hub.
    pub acked: u64,
    /// Readings not acknowledged yet.
    pub outstanding: u64,
    /// Sessions re-established.
    pub reconnects: u64,
    /// Error frames from the hub.
    pub errors: u64,
    /// Telemetry frames written.
    pub frames_sent: u64,
    /// Of which resends after reconnects.
    pub frames_resent: u64,
    /// Commands whose handler succeeded.
    pub commands_applied: u64,
}

/// The live progress line: rewritten in place on a terminal, one line per
/// second otherwise (logs, CI).
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    started: Instant,
    last: Option<(Instant, u64)>,
    rate: f64,
    open_line: bool,
}

impl Progress {
    /// A progress reporter on stderr.
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            rate: 0.0,
            open_line: false,
        }
    }

    /// Print the line for `totals`, with the ack rate since the last call.
    pub fn update(&mut self, phase: &str, totals: &Totals) {
        let now = Instant::now();
        // A rate over less than half a second (the final line) says little:
        // keep showing the previous one.
        match self.last {
            Some((at, acked)) if now - at >= Duration::from_millis(500) => {
                self.rate = totals.acked.saturating_sub(acked) as f64 / (now - at).as_secs_f64();
                self.last = Some((now, totals.acked));
            }
            Some(_) => {}
            None => self.last = Some((now, totals.acked)),
        }
        let rate = self.rate;
        let line = format!(
            "[{:>6.1}s] {phase:<8} connected {}/{} | sent {} acked {} outstanding {} | {}/s | reconnects {}{}",
            (now - self.started).as_secs_f64(),
            totals.connected,
            totals.devices,
            thousands(totals.sent),
            thousands(totals.acked),
            thousands(totals.outstanding),
            thousands(rate.round() as u64),
            thousands(totals.reconnects),
            if totals.errors > 0 {
                format!(" | errors {}", thousands(totals.errors))
            } else {
                String::new()
            },
        );
        let mut stderr = std::io::stderr().lock();
        let _ = if self.tty {
            self.open_line = true;
            write!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }

    /// End the rewritten line so what follows starts on its own.
    pub fn finish(&mut self) {
        if self.open_line {
            eprintln!();
            self.open_line = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Devices simulated.
    pub devices: usize,
    /// Devices connected when the ramp-up ended.
    pub devices_connected: usize,
    /// Devices that stopped for good during the run.
    pub devices_stopped: usize,
    /// Measured time: from the start of generation to the end of the drain.
    pub duration_s: f64,
    /// Readings pushed into outboxes.
    pub readings_sent: u64,
    /// Readings acknowledged by the hub.
    pub readings_acked: u64,
    /// Readings still unacknowledged after the drain.
    pub outstanding: u64,
    /// Sessions re-established during the run.
    pub reconnects: u64,
    /// Error frames received from the hub.
    pub errors: u64,
    /// Ack latency per frame.
    pub ack_latency_ms: LatencyMs,
    /// Acknowledged readings per measured second.
    pub readings_per_s: f64,
    /// Telemetry frames written.
    pub frames_sent: u64,
    /// Telemetry frames resent after reconnects.
    pub frames_resent: u64,
    /// Connections cut on purpose by `--chaos-disconnect-every`.
    pub chaos_cuts: u64,
    /// Seconds the drain was allowed.
    pub drain_timeout_s: f64,
    /// Commands from the hub applied to the simulated actuators (each
    /// command id at most once per device).
    pub commands_applied: u64,
}

impl Summary {
    /// What went wrong, if anything; each makes the exit code non-zero.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.devices_connected == 0 {
            problems.push("could not connect any device".to_owned());
        }
        if self.outstanding > 0 {
            problems.push(format!(
                "{} readings still unacknowledged after the {} s drain timeout",
                thousands(self.outstanding),
                self.drain_timeout_s
            ));
        }
        problems
    }

    /// Success only when some device connected and everything was acknowledged.
    pub fn exit_code(&self) -> ExitCode {
        if self.problems().is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Print the summary on stdout: one JSON object, or a short report.
pub fn print_summary(summary: &Summary, json: bool) {
    if json {
        match serde_json::to_string(summary) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("device-sim: cannot encode the summary: {err}"),
        }
        for problem in summary.problems() {
            eprintln!("device-sim: {problem}");
        }
        return;
    }
    println!("{}", render(summary));
}

/// The human-readable summary.
pub fn render(s: &Summary) -> String {
    let mut out = String::from("device-sim summary\n");
    let mut row = |label: &str, value: String| {
        out.push_str(&format!("  {label:<16}{value}\n"));
    };
    row(
        "devices",
        format!(
            "{} ({} connected after ramp-up, {} stopped)",
            s.devices, s.devices_connected, s.devices_stopped
        ),
    );
    row("duration", format!("{:.1} s", s.duration_s));
    row("readings sent", thousands(s.readings_sent));
    row("readings acked", thousands(s.readings_acked));
    row("outstanding", thousands(s.outstanding));
    row(
        "frames",
        format!(
            "{} sent, {} resent",
            thousands(s.frames_sent),
            thousands(s.frames_resent)
        ),
    );
    row(
        "reconnects",
        format!("{} ({} chaos cuts)", thousands(s.reconnects), s.chaos_cuts),
    );
    row("errors", thousands(s.errors));
    row(
        "commands",
        format!("{} applied", thousands(s.commands_applied)),
    );
    row(
        "ack latency",
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            s.ack_latency_ms.p50, s.ack_latency_ms.p99, s.ack_latency_ms.max
        ),
    );
    row(
        "throughput",
        format!(
            "{} readings/s acked",
            thousands(s.readings_per_s.round() as u64)
        ),
    );
    for problem in s.problems() {
        out.push_str(&format!("  FAILED: {problem}\n"));
    }
    out
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            devices: 2,
            devices_connected: 2,
            devices_stopped: 0,
            duration_s: 1.5,
            readings_sent: 3_000,
            readings_acked: 3_000,
            outstanding: 0,
            reconnects: 1,
            errors: 0,
            ack_latency_ms: LatencyMs {
                p50: 1.0,
                p99: 2.0,
                max: 3.0,
            },
            readings_per_s: 2_000.0,
            frames_sent: 60,
            frames_resent: 2,
            chaos_cuts: 1,
            drain_timeout_s: 30.0,
            commands_applied: 3,
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_json_summary_has_the_documented_keys() {
        let value = serde_json::to_value(summary()).expect("serialises");
        for key in [
            "devices",
            "duration_s",
            "readings_sent",
            "readings_acked",
            "outstanding",
            "reconnects",
            "errors",
            "ack_latency_ms",
            "readings_per_s",
            "commands_applied",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p99", "max"] {
            assert!(value["ack_latency_ms"].get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn the_text_summary_shows_the_commands_applied() {
        let text = render(&summary());
        assert!(text.contains("  commands        3 applied\n"), "{text}");
    }

    #[test]
    fn unacked_readings_or_no_connection_fail_the_run() {
        assert!(summary().problems().is_empty());
        let mut s = summary();
        s.outstanding = 5;
        assert_eq!(s.problems().len(), 1);
        assert!(render(&s).contains("FAILED: 5 readings still unacknowledged"));
        let mut s = summary();
        s.devices_connected = 0;
        assert_eq!(
            s.problems(),
            vec!["could not connect any device".to_owned()]
        );
    }

    #[test]
    fn latency_percentiles_in_milliseconds() {
        let latency = Latency::new().expect("histogram");
        assert_eq!(latency.summary(), LatencyMs::default());
        for ms in 1..=100u64 {
            latency.record(Duration::from_millis(ms));
        }
        let s = latency.summary();
        assert!((s.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99 - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max - 100.0).abs() < 0.1, "{s:?}");
    }
}
