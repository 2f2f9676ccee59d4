//! The open-file limit, which caps how many sockets one process can hold.
//!
//! Every connection is a file descriptor. The soft `RLIMIT_NOFILE` is often
//! far below the hard one, so the run first raises it to the hard limit;
//! past the hard limit nothing but privileges helps (on some machines it
//! is 20,000), and then the devices must be split over several processes
//! (`--offset`). Failing before the first connection, with that advice, is
//! kinder than thousands of "too many open files" an hour into a bench.

use anyhow::bail;

/// Descriptors kept for what is not a device connection: the runtime's
/// epoll and wake-up fds, stdio, the provisioning HTTP client's pool, the
/// tokens file, resolver sockets.
pub const RESERVED: u64 = 100;

/// The open-file limits after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit in force (None: unlimited).
    pub soft: Option<u64>,
    /// The hard limit (None: unlimited).
    pub hard: Option<u64>,
}

impl FdLimit {
    /// Connections this process can hold at once.
    pub fn connections(&self) -> Option<u64> {
        self.soft.map(|soft| soft.saturating_sub(RESERVED))
    }

    /// Fails, naming the limit and what to do, unless `devices` connections fit.
    pub fn check(&self, devices: usize) -> anyhow::Result<()> {
        let Some(room) = self.connections() else {
            return Ok(());
        };
        let wanted = u64::try_from(devices).unwrap_or(u64::MAX);
        if wanted > room {
            let hard = self
                .hard
                .map_or_else(|| "unlimited".to_owned(), |h| h.to_string());
            bail!(
                "{devices} connections need {} file descriptors, but this process may open \
                 {} (RLIMIT_NOFILE soft limit, hard limit {hard}; raising the hard limit needs \
                 CAP_SYS_RESOURCE). Split the devices over several processes, e.g. \
                 `--devices {room} --offset 0`, `--devices {room} --offset {room}`, ... with \
                 the same --tokens file and different --source-addrs",
                wanted.saturating_add(RESERVED),
                self.soft.unwrap_or_default(),
            );
        }
        Ok(())
    }
}

/// Raise the soft open-file limit to the hard limit, and say what holds.
#[cfg(unix)]
pub fn raise() -> FdLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%err, "cannot raise the open-file soft limit to the hard limit");
        }
    }
    let limit = getrlimit(Resource::Nofile);
    FdLimit {
        soft: limit.current,
        hard: limit.maximum,
    }
}

/// No such limit to raise here: unknown.
#[cfg(not(unix))]
pub fn raise() -> FdLimit {
    FdLimit {
        soft: None,
        hard: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_leaves_room_for_the_runtime() {
        let limit = FdLimit {
            soft: Some(20_000),
            hard: Some(20_000),
        };
        assert_eq!(limit.connections(), Some(19_900));
        assert!(limit.check(19_900).is_ok());
        let err = limit.check(19_901).expect_err("too many").to_string();
        assert!(err.contains("hard limit 20000"), "{err}");
        assert!(err.contains("--offset 19900"), "{err}");
        let unlimited = FdLimit {
            soft: None,
            hard: None,
        };
        assert!(unlimited.check(usize::MAX).is_ok());
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let limit = raise();
        assert_eq!(limit.soft, limit.hard);
    }
}
