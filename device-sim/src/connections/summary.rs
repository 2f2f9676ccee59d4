//! The outcome of `device-sim connections`: one JSON object (`--json`) or
//! a short block for people, and the verdict that sets the exit code.
//! Every refused or lost connection is counted under its reason.

use std::process::ExitCode;

use serde::Serialize;

use super::stats::{PhaseReport, Reasons};
use crate::report::{millis, thousands};

/// What the run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The device endpoint.
    pub hub: String,
    /// Devices simulated (connections wanted).
    pub devices: usize,
    /// Source addresses used round-robin (0: chosen by the OS).
    pub source_addrs: usize,
    /// The open-file soft limit the run had (None: unlimited).
    pub fd_limit: Option<u64>,
    /// Devices welcomed during the ramp.
    pub connected: u64,
    /// Devices whose first attempt failed.
    pub failed: u64,
    /// Those failures by reason.
    pub failures: Reasons,
    /// First attempt to last Welcome of the ramp.
    pub ramp_s: f64,
    /// Welcomes per second over the ramp.
    pub connect_rate_per_s: f64,
    /// The ramp in full (latency, Unix start and end for lining up processes).
    pub ramp: PhaseReport,
    /// How long the connections were held after the ramp.
    pub hold_s: f64,
    /// Pings received from the hub while holding (ramp end to storm or end).
    pub pings_during_hold: u64,
    /// Pings received over the whole run.
    pub pings_received: u64,
    /// Held connections the hub closed (or that were lost) before the storm.
    pub dropped_during_hold: u64,
    /// Those drops by reason.
    pub drops: Reasons,
    /// The reconnect storm, when `--storm` ran.
    pub storm: Option<StormReport>,
    /// Ctrl-C or SIGTERM cut the run short.
    pub interrupted: bool,
}

/// The reconnect storm: every held connection cut, then reconnected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StormReport {
    /// Connections cut (those held when the storm began).
    pub cut: u64,
    /// Of which reconnected (Welcome again).
    pub reconnected: u64,
    /// Devices that did not reconnect (every attempt failed).
    pub failed: u64,
    /// Reconnect attempts that failed, retries included (reasons in
    /// `phase.failures`).
    pub failed_attempts: u64,
    /// Cut to last Welcome.
    pub seconds: f64,
    /// Reconnects per second.
    pub rate_per_s: f64,
    /// The storm in full (latency, failure reasons, Unix times).
    pub phase: PhaseReport,
    /// Reconnected connections lost before the run ended.
    pub dropped_after: u64,
    /// Those drops by reason.
    pub drops: Reasons,
}

impl Summary {
    /// What went wrong; each makes the exit code non-zero.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let connected = usize::try_from(self.connected).unwrap_or(usize::MAX);
        if connected < self.devices {
            problems.push(format!(
                "{} of {} devices did not connect ({})",
                thousands((self.devices - connected) as u64),
                thousands(self.devices as u64),
                reasons(&self.failures)
            ));
        }
        if self.dropped_during_hold > 0 {
            problems.push(format!(
                "{} connections dropped while held ({})",
                thousands(self.dropped_during_hold),
                reasons(&self.drops)
            ));
        }
        if let Some(storm) = &self.storm {
            if storm.reconnected < storm.cut {
                problems.push(format!(
                    "{} of {} connections did not reconnect after the storm ({})",
                    thousands(storm.cut - storm.reconnected),
                    thousands(storm.cut),
                    reasons(&storm.phase.failures)
                ));
            }
            if storm.dropped_after > 0 {
                problems.push(format!(
                    "{} reconnected connections dropped afterwards ({})",
                    thousands(storm.dropped_after),
                    reasons(&storm.drops)
                ));
            }
        }
        if self.interrupted {
            problems.push("interrupted".to_owned());
        }
        problems
    }

    /// Success only when every device connected, none dropped, and the
    /// storm (if any) reconnected them all.
    pub fn exit_code(&self) -> ExitCode {
        if self.problems().is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// `401 ×3, timeout: upgrade ×1`, or `-`.
fn reasons(map: &Reasons) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(reason, n)| format!("{reason} ×{}", thousands(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Print the summary on stdout: one JSON object, or the block of [`render`];
/// with JSON the problems also go to stderr.
pub fn print(summary: &Summary, json: bool) {
    if json {
        match serde_json::to_string(summary) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("device-sim connections: cannot encode the summary: {err}"),
        }
        for problem in summary.problems() {
            eprintln!("device-sim connections: {problem}");
        }
        return;
    }
    println!("{}", render(summary));
}

/// The human-readable summary.
pub fn render(s: &Summary) -> String {
    let mut out = format!(
        "device-sim connections: {} devices to {} from {} source addresses\n",
        thousands(s.devices as u64),
        s.hub,
        s.source_addrs
    );
    let mut row = |label: &str, value: String| {
        out.push_str(&format!("  {label:<12}{value}\n"));
    };
    row(
        "connected",
        format!(
            "{} in {:.2} s ({}/s), {} failed",
            thousands(s.connected),
            s.ramp_s,
            thousands(s.connect_rate_per_s.round() as u64),
            thousands(s.failed)
        ),
    );
    if !s.failures.is_empty() {
        row("  failures", reasons(&s.failures));
    }
    row(
        "latency",
        format!(
            "p50 {}, p99 {}, max {}",
            millis(s.ramp.latency_ms.p50),
            millis(s.ramp.latency_ms.p99),
            millis(s.ramp.latency_ms.max)
        ),
    );
    row(
        "hold",
        format!(
            "{:.1} s, {} pings received, {} dropped",
            s.hold_s,
            thousands(s.pings_during_hold),
            thousands(s.dropped_during_hold)
        ),
    );
    if !s.drops.is_empty() {
        row("  drops", reasons(&s.drops));
    }
    if let Some(storm) = &s.storm {
        row(
            "storm",
            format!(
                "{} of {} reconnected in {:.2} s ({}/s), {} failed ({} failed attempts)",
                thousands(storm.reconnected),
                thousands(storm.cut),
                storm.seconds,
                thousands(storm.rate_per_s.round() as u64),
                thousands(storm.failed),
                thousands(storm.failed_attempts)
            ),
        );
        if !storm.phase.failures.is_empty() {
            row("  failures", reasons(&storm.phase.failures));
        }
        row(
            "  latency",
            format!(
                "p50 {}, p99 {}, max {}",
                millis(storm.phase.latency_ms.p50),
                millis(storm.phase.latency_ms.p99),
                millis(storm.phase.latency_ms.max)
            ),
        );
        if storm.dropped_after > 0 {
            row("  drops", reasons(&storm.drops));
        }
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

#[cfg(test)]
mod tests {
    use super::super::stats::LatencyMs;
    use super::*;

    fn phase(connected: u64) -> PhaseReport {
        PhaseReport {
            connected,
            failed: 0,
            gave_up: 0,
            failures: Reasons::new(),
            seconds: 0.5,
            rate_per_s: connected as f64 * 2.0,
            latency_ms: LatencyMs {
                p50: 1.0,
                p99: 2.0,
                max: 3.0,
            },
            started_unix_ms: 0.0,
            ended_unix_ms: 500.0,
        }
    }

    fn summary() -> Summary {
        Summary {
            hub: "ws://127.0.0.1:1/ws/device".to_owned(),
            devices: 10,
            source_addrs: 4,
            fd_limit: Some(20_000),
            connected: 10,
            failed: 0,
            failures: Reasons::new(),
            ramp_s: 0.5,
            connect_rate_per_s: 20.0,
            ramp: phase(10),
            hold_s: 2.0,
            pings_during_hold: 20,
            pings_received: 20,
            dropped_during_hold: 0,
            drops: Reasons::new(),
            storm: Some(StormReport {
                cut: 10,
                reconnected: 10,
                failed: 0,
                failed_attempts: 0,
                seconds: 0.5,
                rate_per_s: 20.0,
                phase: phase(10),
                dropped_after: 0,
                drops: Reasons::new(),
            }),
            interrupted: false,
        }
    }

    #[test]
    fn a_clean_run_passes_and_every_shortfall_fails_with_its_reason() {
        assert!(summary().problems().is_empty());
        assert!(render(&summary()).contains("  result      OK\n"));

        let mut s = summary();
        s.connected = 8;
        s.failed = 2;
        s.failures.insert("http 401 Unauthorized".to_owned(), 2);
        let problems = s.problems();
        assert_eq!(
            problems,
            ["2 of 10 devices did not connect (http 401 Unauthorized ×2)"]
        );

        let mut s = summary();
        s.dropped_during_hold = 1;
        s.drops.insert("close 4003: idle timeout".to_owned(), 1);
        assert!(s.problems()[0].contains("close 4003: idle timeout ×1"));

        let mut s = summary();
        if let Some(storm) = &mut s.storm {
            storm.reconnected = 9;
        }
        assert!(s.problems()[0].contains("did not reconnect"));
    }

    #[test]
    fn the_json_summary_has_the_documented_keys() -> anyhow::Result<()> {
        let value = serde_json::to_value(summary())?;
        for key in [
            "devices",
            "connected",
            "failed",
            "failures",
            "ramp_s",
            "connect_rate_per_s",
            "pings_during_hold",
            "dropped_during_hold",
            "drops",
            "storm",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        for key in ["reconnected", "seconds", "rate_per_s", "phase"] {
            assert!(value["storm"].get(key).is_some(), "missing storm.{key}");
        }
        assert!(value["ramp"]["latency_ms"].get("p99").is_some());
        Ok(())
    }
}
