//! What the simulation tells its user: a live progress line on stderr, the
//! ack latency histogram, and the final summary (text or one JSON object).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Ack latencies (frame sent to Ack received), in microseconds, with three
/// significant digits from 1 µs to 1 hour: over the whole run for the
/// summary, and since the last progress line for that line.
#[derive(Debug)]
pub struct Latency {
    histograms: Mutex<Histograms>,
}

#[derive(Debug)]
struct Histograms {
    /// Every ack of the run.
    total: Histogram<u64>,
    /// Acks since the last [`Latency::take_interval`].
    interval: Histogram<u64>,
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> anyhow::Result<Self> {
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 3);
        Ok(Latency {
            histograms: Mutex::new(Histograms {
                total: histogram()?,
                interval: histogram()?,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Histograms> {
        self.histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Record one frame's latency (clamped into the histogram's range).
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut histograms = self.lock();
        histograms.total.saturating_record(micros);
        histograms.interval.saturating_record(micros);
    }

    /// p50, p99 and max over the run in milliseconds (zeros when nothing was recorded).
    pub fn summary(&self) -> LatencyMs {
        percentiles(&self.lock().total).unwrap_or_default()
    }

    /// p50, p99 and max since the last call (None when no ack arrived), and
    /// start a new interval.
    pub fn take_interval(&self) -> Option<LatencyMs> {
        let mut histograms = self.lock();
        let interval = percentiles(&histograms.interval);
        histograms.interval.reset();
        interval
    }
}

fn percentiles(histogram: &Histogram<u64>) -> Option<LatencyMs> {
    if histogram.is_empty() {
        return None;
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Some(LatencyMs {
        p50: ms(histogram.value_at_quantile(0.50)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
    })
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

/// The live progress line, once a second: rewritten in place on a
/// terminal, one line each otherwise (logs, CI).
///
/// ```text
/// [  12s] running   devices 20/20 | sent 2,000/s acked 1,990/s | ack p50 1.21 ms p99 4.50 ms | unacked 34 | reconnects 0
/// ```
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    started: Instant,
    /// Counters at the previous line, for the rates.
    last: Option<(Instant, Totals)>,
    /// Readings sent and acked per second, as last computed.
    rates: (f64, f64),
    /// Ack latency of the previous interval, shown until acks arrive again.
    latency: Option<LatencyMs>,
    open_line: bool,
}

impl Progress {
    /// A progress reporter on stderr.
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            rates: (0.0, 0.0),
            latency: None,
            open_line: false,
        }
    }

    /// Print the line for `totals`, with rates and ack latency since the last call.
    pub fn update(&mut self, phase: &str, totals: &Totals, latency: &Latency) {
        let now = Instant::now();
        // A rate over less than half a second (the final line) says little:
        // keep showing the previous one.
        match self.last {
            Some((at, before)) if now - at >= Duration::from_millis(500) => {
                let seconds = (now - at).as_secs_f64();
                self.rates = (
                    totals.sent.saturating_sub(before.sent) as f64 / seconds,
                    totals.acked.saturating_sub(before.acked) as f64 / seconds,
                );
                self.last = Some((now, *totals));
                self.latency = latency.take_interval();
            }
            Some(_) => {}
            None => {
                self.last = Some((now, *totals));
                latency.take_interval();
            }
        }
        let line = progress_line(phase, now - self.started, totals, self.rates, self.latency);
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

/// One progress line; fields that are zero and rarely not (stopped devices,
/// error frames) appear only when they are not.
fn progress_line(
    phase: &str,
    elapsed: Duration,
    totals: &Totals,
    (sent_per_s, acked_per_s): (f64, f64),
    latency: Option<LatencyMs>,
) -> String {
    let mut line = format!(
        "[{:>5}s] {phase:<9} devices {}/{} | sent {}/s acked {}/s | ",
        elapsed.as_secs(),
        totals.connected,
        totals.devices,
        thousands(sent_per_s.round() as u64),
        thousands(acked_per_s.round() as u64),
    );
    match latency {
        Some(l) => line.push_str(&format!("ack p50 {} p99 {}", millis(l.p50), millis(l.p99))),
        None => line.push_str("ack p50 - p99 -"),
    }
    line.push_str(&format!(
        " | unacked {} | reconnects {}",
        thousands(totals.outstanding),
        thousands(totals.reconnects)
    ));
    if totals.stopped > 0 {
        line.push_str(&format!(" | stopped {}", thousands(totals.stopped as u64)));
    }
    if totals.errors > 0 {
        line.push_str(&format!(" | errors {}", thousands(totals.errors)));
    }
    line
}

/// Milliseconds with the digits that matter: `0.42 ms`, `12.3 ms`, `1,250 ms`.
pub fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", thousands(ms.round() as u64))
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

/// The human-readable summary: a headline, then one labelled line per topic,
/// then the verdict.
pub fn render(s: &Summary) -> String {
    let mut out = format!(
        "device-sim summary: {} devices for {:.1} s\n",
        thousands(s.devices as u64),
        s.duration_s
    );
    let mut row = |label: &str, value: String| {
        out.push_str(&format!("  {label:<13}{value}\n"));
    };
    row(
        "devices",
        format!(
            "{} connected after ramp-up, {} stopped",
            thousands(s.devices_connected as u64),
            thousands(s.devices_stopped as u64)
        ),
    );
    let acked_share = if s.readings_sent == 0 {
        String::new()
    } else {
        format!(
            " ({:.1}%)",
            s.readings_acked as f64 * 100.0 / s.readings_sent as f64
        )
    };
    row(
        "readings",
        format!(
            "{} sent, {} acked{acked_share}, {} outstanding",
            thousands(s.readings_sent),
            thousands(s.readings_acked),
            thousands(s.outstanding)
        ),
    );
    row(
        "throughput",
        format!(
            "{} readings/s acked",
            thousands(s.readings_per_s.round() as u64)
        ),
    );
    row(
        "ack latency",
        format!(
            "p50 {}, p99 {}, max {}",
            millis(s.ack_latency_ms.p50),
            millis(s.ack_latency_ms.p99),
            millis(s.ack_latency_ms.max)
        ),
    );
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
        format!(
            "{} ({} chaos cuts)",
            thousands(s.reconnects),
            thousands(s.chaos_cuts)
        ),
    );
    row("error frames", thousands(s.errors));
    row(
        "commands",
        format!("{} applied", thousands(s.commands_applied)),
    );
    let problems = s.problems();
    if problems.is_empty() {
        row("result", "OK: every reading acknowledged".to_owned());
    }
    for problem in problems {
        row("result", format!("FAILED: {problem}"));
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
        assert!(text.contains("\n  commands     3 applied\n"), "{text}");
    }

    #[test]
    fn unacked_readings_or_no_connection_fail_the_run() {
        assert!(summary().problems().is_empty());
        let mut s = summary();
        s.outstanding = 5;
        assert_eq!(s.problems().len(), 1);
        assert!(render(&s).contains("  result       FAILED: 5 readings still unacknowledged"));
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

    #[test]
    fn the_interval_latency_restarts_at_each_line() {
        let latency = Latency::new().expect("histogram");
        assert_eq!(latency.take_interval(), None);
        latency.record(Duration::from_millis(40));
        let first = latency.take_interval().expect("one ack");
        assert!((first.p50 - 40.0).abs() < 0.1, "{first:?}");
        assert_eq!(latency.take_interval(), None, "nothing since");
        latency.record(Duration::from_millis(2));
        let second = latency.take_interval().expect("one ack");
        assert!((second.p99 - 2.0).abs() < 0.01, "{second:?}");
        // The run's summary keeps both.
        assert!((latency.summary().max - 40.0).abs() < 0.1);
    }

    #[test]
    fn the_text_summary_reads_as_a_block() {
        let expected = [
            "device-sim summary: 2 devices for 1.5 s",
            "  devices      2 connected after ramp-up, 0 stopped",
            "  readings     3,000 sent, 3,000 acked (100.0%), 0 outstanding",
            "  throughput   2,000 readings/s acked",
            "  ack latency  p50 1.00 ms, p99 2.00 ms, max 3.00 ms",
            "  frames       60 sent, 2 resent",
            "  reconnects   1 (1 chaos cuts)",
            "  error frames 0",
            "  commands     3 applied",
            "  result       OK: every reading acknowledged",
        ];
        assert_eq!(render(&summary()), expected.join("\n") + "\n");
    }

    #[test]
    fn the_progress_line_shows_rates_latency_and_trouble_only_when_there() {
        let mut totals = Totals {
            devices: 20,
            connected: 19,
            sent: 10_000,
            acked: 9_990,
            outstanding: 10,
            reconnects: 2,
            ..Totals::default()
        };
        let latency = LatencyMs {
            p50: 1.234,
            p99: 45.67,
            max: 120.0,
        };
        let line = progress_line(
            "running",
            Duration::from_millis(12_400),
            &totals,
            (2_000.4, 1_990.0),
            Some(latency),
        );
        assert_eq!(
            line,
            "[   12s] running   devices 19/20 | sent 2,000/s acked 1,990/s | \
             ack p50 1.23 ms p99 45.7 ms | unacked 10 | reconnects 2"
        );
        totals.stopped = 1;
        totals.errors = 3;
        let line = progress_line("draining", Duration::ZERO, &totals, (0.0, 0.0), None);
        assert!(line.contains("ack p50 - p99 -"), "{line}");
        assert!(line.ends_with(" | stopped 1 | errors 3"), "{line}");
        assert_eq!(millis(1_250.0), "1,250 ms");
    }
}
