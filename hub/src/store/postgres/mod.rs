//! The Postgres backend: connection set-up, timeouts, migrations, and what
//! counts as "the server is unavailable".
//!
//! Postgres is the backend for several hubs sharing one database. Like the
//! SQLite backend it has two pools: `writer` holds one connection and serves
//! only the telemetry batch writer (the hot path never waits for a pool slot
//! behind API reads, and its prepared statements stay cached on one
//! connection), and `pool` serves everything else. A COMMIT returns after
//! the server has flushed its WAL (`synchronous_commit` on, the default), so
//! a committed batch is already durable.
//!
//! Outages: no call may wait forever for a server that is down, restarting
//! or unreachable, and the store must come back by itself when the server
//! does.
//! - Getting a connection waits at most [`ACQUIRE_TIMEOUT`] (that includes
//!   connecting: a refused connection is retried until then), then fails
//!   with a pool timeout.
//! - Each session is started with server-side limits (`statement_timeout`,
//!   `lock_timeout`, `idle_in_transaction_session_timeout`) unless the URL
//!   sets its own, so a slow query or a stuck transaction ends on the server.
//! - Every call also runs under a client-side deadline ([`CALL_DEADLINE`]),
//!   which covers what the server cannot: a server or network that stops
//!   answering without closing the connection.
//! - The general pool tests an idle connection before handing it out, so
//!   connections broken by a restart are replaced. The writer skips that
//!   round trip on the hot path; instead, after any failed or timed-out batch
//!   it drops its connection outright (whatever state it is in) and the next
//!   batch connects afresh.
//!
//! Failures of that kind are classified by [`is_unavailable_code`] (and the
//! facade's `StoreError::is_unavailable`), so the API answers 503 and the
//! ingest writer retries.
//!
//! The queries live in one file per storage area, like the public API.

mod api_keys;
mod audit;
pub(crate) mod cluster;
mod commands;
mod devices;
mod hubs;
mod presence;
mod retention;
mod telemetry;

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreError;

/// Longest wait for a pooled connection, connecting included.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Server-side limit on one statement.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Server-side limit on waiting for a lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Server-side limit on a transaction left idle (a client that went away
/// mid-transaction must not hold its locks).
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Client-side limit on one store call: a connection, a statement's server
/// limit and some slack; only reached when the server stops answering.
const CALL_DEADLINE: Duration = Duration::from_secs(45);
/// Connections in the general-purpose pool (API, sessions, admin). Several
/// hubs share one server, so each keeps few.
const POOL_CONNECTIONS: u32 = 8;
/// Connections of the batch writers' pool: the ingest queue is split by
/// device over this many writers, which commit in parallel. One Postgres
/// backend process runs on one core; two keep both cores of a small server
/// busy (measured: 174k readings/s end to end with one, see PERFORMANCE.md).
pub(crate) const WRITER_CONNECTIONS: u32 = 2;
/// Statements slower than this are logged at WARN.
const SLOW_STATEMENT: Duration = Duration::from_millis(500);

/// The Postgres backend.
pub(crate) struct PgStore {
    /// Connection options of the cluster listener's own connection.
    listen_options: Box<PgConnectOptions>,
    /// One connection, used only by `write_batch`; dropped after a failure.
    writer: PgPool,
    /// Everything else.
    pool: PgPool,
    /// Whether the last batch held keys already stored (a device resending
    /// after a reconnect); the next batch then skips the fast path that
    /// fails on them (see `telemetry`).
    expect_duplicates: AtomicBool,
}

impl PgStore {
    /// Connects both pools to the database named by `url` and applies
    /// pending migrations.
    pub async fn open(url: &str, instance: Option<&str>) -> Result<PgStore, StoreError> {
        let base = PgConnectOptions::from_str(url)?;
        let base = match base.get_application_name() {
            Some(_) => base,
            None => base.application_name("hub"),
        };
        // The notification triggers name the hub whose change it was
        // (migrations/postgres/0004_cluster.sql); the name is checked by the
        // configuration (letters, digits, `.`, `_`, `-`), so it needs no quoting.
        let base = match instance {
            Some(instance) => base.options([("hub.instance", instance)]),
            None => base,
        };
        let base = base.log_slow_statements(log::LevelFilter::Warn, SLOW_STATEMENT);

        // Migrations run on their own connection without the statement
        // limits: building an index on a large table may take longer. sqlx
        // holds an advisory lock while migrating, so hubs starting together
        // apply each migration once.
        let migrator = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(base.clone())
            .await?;
        let migrated = sqlx::migrate!("../migrations/postgres")
            .run(&migrator)
            .await;
        migrator.close().await;
        migrated?;

        let listen_options = Box::new(base.clone());
        let options = with_session_limits(base);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let writer = PgPoolOptions::new()
            .min_connections(1)
            .max_connections(WRITER_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A failed batch drops the connection (see `telemetry`), so the
            // ping before each batch would only cost a round trip.
            .test_before_acquire(false)
            .idle_timeout(None)
            // Batches are large; logging each statement at debug level would
            // drown everything else. Slow ones are still logged.
            .connect_with(options.log_statements(log::LevelFilter::Trace))
            .await?;
        Ok(PgStore {
            listen_options,
            writer,
            pool,
            expect_duplicates: AtomicBool::new(false),
        })
    }

    /// One trivial query on the general pool.
    pub async fn ping(&self) -> Result<(), StoreError> {
        bounded(async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Adds the server-side limits to the session's startup options, except
/// those the URL already sets (`?options=-c statement_timeout=…`).
fn with_session_limits(options: PgConnectOptions) -> PgConnectOptions {
    let limits = [
        ("statement_timeout", STATEMENT_TIMEOUT),
        ("lock_timeout", LOCK_TIMEOUT),
        (
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        ),
    ];
    let given = options.get_options().unwrap_or_default().to_owned();
    let missing: Vec<(&str, String)> = limits
        .into_iter()
        .filter(|(name, _)| !given.contains(name))
        .map(|(name, limit)| (name, format!("{}ms", limit.as_millis())))
        .collect();
    if missing.is_empty() {
        options
    } else {
        options.options(missing)
    }
}

/// Runs one store call under [`CALL_DEADLINE`]. A call cut short leaves its
/// connection to sqlx, which tests it before reuse.
async fn bounded<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_DEADLINE, call)
        .await
        .unwrap_or(Err(StoreError::Timeout(CALL_DEADLINE)))
}

/// True for SQLSTATEs that mean the server is unreachable, going away,
/// starting up or overloaded, or that the statement lost a race worth
/// retrying, rather than a fault in the request:
/// - class 08, connection exception;
/// - 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now
///   (starting up or shutting down), 57P05 idle session timeout;
/// - 25P03 idle-in-transaction timeout (the server closed the session);
/// - 57014 statement cancelled (the statement timeout), 55P03 lock timeout;
/// - 53300 too many connections;
/// - 40001 serialization failure, 40P01 deadlock detected.
pub(crate) fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01"
                | "57P02"
                | "57P03"
                | "57P05"
                | "25P03"
                | "57014"
                | "55P03"
                | "53300"
                | "40001"
                | "40P01"
        )
}

#[cfg(test)]
pub(crate) mod test_db {
    //! A fresh database on the test cluster for the backend's own unit
    //! tests (query plans), under the same rules as `hub/tests/common/db.rs`:
    //! `HUB_TEST_POSTGRES_URL` names the cluster; without it the test fails,
    //! unless a developer opts out outside CI with `HUB_TEST_SKIP_POSTGRES=1`.

    use sqlx::Connection;

    /// The URL of a new, empty database, or None when opted out.
    pub(crate) async fn fresh_url() -> Option<String> {
        let opted_out = std::env::var("HUB_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !(opted_out && ci),
            "HUB_TEST_SKIP_POSTGRES is not honoured under CI=true"
        );
        if opted_out {
            eprintln!("skipped: HUB_TEST_SKIP_POSTGRES=1");
            return None;
        }
        let admin = std::env::var("HUB_TEST_POSTGRES_URL")
            .expect("HUB_TEST_POSTGRES_URL names the test cluster (scripts/test.sh sets it)");
        let name = format!("hub_unit_{}_{}", std::process::id(), rand::random::<u32>());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to the test cluster");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create a database");
        conn.close().await.expect("close");
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let cut = base.rfind('/').expect("a URL with a path");
        let mut url = format!("{}/{name}", &base[..cut]);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        Some(url)
    }

    /// A store on a fresh database holding 5,000 devices with 3 sensors
    /// each and their latest values, the first 50 with 1,000 times x 3
    /// sensors of readings each, analysed: enough rows that the planner's
    /// choices are the ones a real database gets.
    pub(crate) async fn loaded_store() -> Option<super::PgStore> {
        let url = fresh_url().await?;
        let store = super::PgStore::open(&url, None).await.expect("open");
        for sql in [
            "INSERT INTO devices (id, name, token_hash, created_at) \
             SELECT lpad(to_hex(g), 16, '0'), 'd', '\\x00', 0 FROM generate_series(1, 5000) g",
            "INSERT INTO readings (device_pk, ts, sensor_id, kind, value_float, value_int) \
             SELECT d, t, s, 1, NULL, t \
             FROM generate_series(1, 50) d, generate_series(1, 1000) t, generate_series(1, 3) s",
            "INSERT INTO sensors (device_pk, sensor_id, name, unit, kind) \
             SELECT d, s, 's', '', 1 FROM generate_series(1, 5000) d, generate_series(1, 3) s",
            "INSERT INTO latest_readings (device_pk, sensor_id, ts, kind, value_float, value_int) \
             SELECT d, s, 1000, 1, NULL, 1 FROM generate_series(1, 5000) d, generate_series(1, 3) s",
            "ANALYZE",
        ] {
            sqlx::query(sql)
                .execute(&store.pool)
                .await
                .expect("load the fixture");
        }
        Some(store)
    }

    /// The plan of `sql` prepared with `types` and run with `args` after
    /// the statements `settings`, as Postgres would build it for each
    /// execution (`generic` false) and as it caches it after a few
    /// (`generic` true).
    pub(crate) async fn plan(
        store: &super::PgStore,
        settings: &str,
        sql: &str,
        types: &str,
        args: &str,
        generic: bool,
    ) -> String {
        let mode = if generic {
            "force_generic_plan"
        } else {
            "force_custom_plan"
        };
        let mut tx = store.pool.begin().await.expect("transaction");
        for setup in [
            format!("SET LOCAL plan_cache_mode = {mode}"),
            settings.to_owned(),
            format!("PREPARE planned ({types}) AS {sql}"),
        ] {
            sqlx::raw_sql(&setup)
                .execute(&mut *tx)
                .await
                .expect("prepare");
        }
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE planned ({args})"))
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .expect("explain");
        sqlx::raw_sql("DEALLOCATE planned")
            .execute(&mut *tx)
            .await
            .expect("deallocate");
        tx.rollback().await.expect("rollback");
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_level_codes_are_unavailable() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "57014", "40P01",
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "22003", "XX000"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn session_limits_are_added_unless_the_url_sets_them() {
        let options = with_session_limits(
            PgConnectOptions::from_str("postgres://u@localhost/db").expect("url"),
        );
        let given = options.get_options().expect("options");
        assert!(given.contains("statement_timeout=30000ms"), "{given}");
        assert!(given.contains("lock_timeout=10000ms"), "{given}");
        let options = with_session_limits(
            PgConnectOptions::from_str(
                "postgres://u@localhost/db?options=-c%20statement_timeout%3D5s",
            )
            .expect("url"),
        );
        let given = options.get_options().expect("options");
        assert!(given.contains("statement_timeout=5s"), "{given}");
        assert!(!given.contains("statement_timeout=30000ms"), "{given}");
        assert!(given.contains("lock_timeout"), "{given}");
    }
}
