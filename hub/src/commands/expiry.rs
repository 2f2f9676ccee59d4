//! The expiry sweep: unfinished commands whose deadline passed become `expired`.
//!
//! Devices never apply an expired command (they check `expires_at_ms`), and
//! connections skip due commands when they deliver, so the sweep is what
//! tells callers: it turns the silent deadline into a recorded, published
//! final status, also for devices that never come back. Every hub sweeps;
//! the conditional update makes a command expire once even if two hubs race.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::CommandService;
use crate::gateway::connection::now_ms;

/// Most commands expired per query; the sweep repeats while it finds a full page.
const SWEEP_PAGE: u32 = 500;

/// Sweeps every `every` until `shutdown`.
pub async fn run_expiry(commands: CommandService, every: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(err) = sweep(&commands).await {
            warn!(error = %err, "command expiry sweep failed; retrying at the next one");
        }
    }
}

/// Expires everything due now; returns how many were expired.
pub async fn sweep(commands: &CommandService) -> Result<usize, crate::store::StoreError> {
    let mut expired = 0;
    loop {
        let due = commands.store().due_commands(now_ms(), SWEEP_PAGE).await?;
        for record in &due {
            commands.expire(record).await?;
        }
        expired += due.len();
        if due.len() < SWEEP_PAGE as usize {
            return Ok(expired);
        }
    }
}
