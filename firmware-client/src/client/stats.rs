//! Counters a device keeps, and what the ack observer hears.

use std::time::Duration;

use crate::command::Outcome;

/// A snapshot of a device's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Readings accepted into the outbox.
    pub readings_pushed: u64,
    /// Readings the hub acknowledged (by Ack or by a Welcome's `last_stored_seq`).
    pub readings_acked: u64,
    /// Readings still in the outbox: pushed minus acked.
    pub outstanding: u64,
    /// Telemetry frames written, resends included.
    pub frames_sent: u64,
    /// Telemetry frames written again after a reconnect.
    pub frames_resent: u64,
    /// Sessions re-established (Welcomes after the first).
    pub reconnects: u64,
    /// Error frames received from the hub.
    pub errors_received: u64,
    /// Commands received, repeats included. Each is answered at once
    /// (`Delivered`, a refusal, or a repeat's outcome) and, when run, again
    /// with its final outcome.
    pub commands_received: u64,
    /// Commands whose handler succeeded.
    pub commands_applied: u64,
    /// Commands whose handler failed (returned an error or panicked).
    pub commands_failed: u64,
    /// Commands refused without running a handler: expired, unknown
    /// actuator, wrong value kind, no handler, too many in progress.
    pub commands_rejected: u64,
    /// Commands received again with an id already seen, answered from
    /// memory without acting (`received = applied + failed + rejected +
    /// duplicate + still in progress`).
    pub commands_duplicate: u64,
    /// Received messages that were not valid downlink frames (ignored).
    pub invalid_downlinks: u64,
}

/// One acknowledged frame, as reported to [`DeviceConfig::on_ack`](crate::DeviceConfig::on_ack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckInfo {
    /// The frame's sequence number.
    pub seq: u64,
    /// Readings it carried.
    pub readings: u32,
    /// Time from the frame's most recent send to the ack.
    pub latency: Duration,
}

/// Counters updated under the session lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub readings_pushed: u64,
    pub readings_acked: u64,
    pub frames_sent: u64,
    pub frames_resent: u64,
    pub sessions: u64,
    pub errors_received: u64,
    pub commands_received: u64,
    pub commands_applied: u64,
    pub commands_failed: u64,
    pub commands_rejected: u64,
    pub commands_duplicate: u64,
    pub invalid_downlinks: u64,
}

impl Counters {
    /// Count a command's final outcome.
    pub(crate) fn command_finished(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Succeeded(_) => self.commands_applied += 1,
            Outcome::Failed(_) => self.commands_failed += 1,
            Outcome::Rejected(_) => self.commands_rejected += 1,
            Outcome::Delivered => {}
        }
    }

    pub(crate) fn snapshot(&self, outstanding: usize) -> Stats {
        Stats {
            readings_pushed: self.readings_pushed,
            readings_acked: self.readings_acked,
            outstanding: outstanding as u64,
            frames_sent: self.frames_sent,
            frames_resent: self.frames_resent,
            reconnects: self.sessions.saturating_sub(1),
            errors_received: self.errors_received,
            commands_received: self.commands_received,
            commands_applied: self.commands_applied,
            commands_failed: self.commands_failed,
            commands_rejected: self.commands_rejected,
            commands_duplicate: self.commands_duplicate,
            invalid_downlinks: self.invalid_downlinks,
        }
    }
}
