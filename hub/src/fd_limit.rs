//! The open-file limit: every device connection is a file descriptor.
//!
//! Most systems start a process with a soft limit of 1,024 open files, far
//! below the connections one hub is meant to hold (`--max-connections`,
//! 100,000 by default), while the hard limit a service manager or container
//! grants is often much higher. [`raise_to_hard`] lifts the soft limit to
//! the hard one at start, which needs no privilege. What remains is the
//! ceiling on connections; `hub serve` logs it and warns when
//! `--max-connections` would run into it (accepting then fails with EMFILE
//! instead of a clean refusal). The hard limit itself can only be raised by
//! whoever starts the hub (systemd `LimitNOFILE=`, `ulimit -Hn`, the container
//! runtime's `nofile` ulimit).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but device connections: the database
/// pools, the MQTT bridge, log and database files, API clients.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The open-file limits after [`raise_to_hard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit now in force (None: unlimited).
    pub soft: Option<u64>,
    /// The hard limit (None: unlimited).
    pub hard: Option<u64>,
    /// The soft limit before, if it was raised.
    pub raised_from: Option<u64>,
}

impl FdLimit {
    /// Connections this process can hold at most, leaving
    /// [`RESERVED_DESCRIPTORS`] for the rest (None: no limit).
    pub fn connection_ceiling(&self) -> Option<u64> {
        self.soft
            .map(|soft| soft.saturating_sub(RESERVED_DESCRIPTORS))
    }
}

/// Raises the soft open-file limit to the hard limit. A refusal (some
/// sandboxes forbid even that) leaves the limit as it was; the result says
/// what is in force either way.
pub fn raise_to_hard() -> FdLimit {
    let before = getrlimit(Resource::Nofile);
    let raise = match (before.current, before.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if raise
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            },
        )
        .is_ok()
    {
        let after = getrlimit(Resource::Nofile);
        return FdLimit {
            soft: after.current,
            hard: after.maximum,
            raised_from: before.current,
        };
    }
    FdLimit {
        soft: before.current,
        hard: before.maximum,
        raised_from: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit_and_is_idempotent() {
        let first = raise_to_hard();
        assert_eq!(first.soft, first.hard, "{first:?}");
        let second = raise_to_hard();
        assert_eq!(second.soft, first.soft);
        assert_eq!(second.raised_from, None, "nothing left to raise");
    }

    #[test]
    fn the_ceiling_keeps_a_reserve() {
        let limit = FdLimit {
            soft: Some(20_000),
            hard: Some(20_000),
            raised_from: Some(1024),
        };
        assert_eq!(
            limit.connection_ceiling(),
            Some(20_000 - RESERVED_DESCRIPTORS)
        );
        let unlimited = FdLimit {
            soft: None,
            hard: None,
            raised_from: None,
        };
        assert_eq!(unlimited.connection_ceiling(), None);
    }
}
