//! Fresh databases for tests, on either backend.
//!
//! SQLite: a file in a temporary folder. Postgres: a new database on the
//! throwaway cluster that `scripts/test.sh` starts and names in
//! `HUB_TEST_POSTGRES_URL`. When that variable is missing the test fails (it
//! never silently skips), unless a developer opts out outside CI with
//! `HUB_TEST_SKIP_POSTGRES=1`.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;
use tempfile::TempDir;

/// The storage backends every backend-generic test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// Postgres on the test cluster.
    Postgres,
}

/// A database that lives as long as this value (SQLite: its folder).
pub struct TestDatabase {
    /// URL for `Store::open` / `--database-url`.
    pub url: String,
    /// Which backend.
    pub backend: Backend,
    _dir: Option<TempDir>,
}

impl TestDatabase {
    /// A database the test manages itself (for example on its own cluster).
    pub fn external(url: String, backend: Backend) -> TestDatabase {
        TestDatabase {
            url,
            backend,
            _dir: None,
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for test servers).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private PostgreSQL cluster that a test may stop and start, run by
/// `scripts/postgres.sh` in a temporary folder.
pub struct PrivateCluster {
    dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn postgres_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh")
}

fn run_script(args: &[&str]) {
    let status = std::process::Command::new(postgres_script())
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/postgres.sh {args:?} failed");
}

impl PrivateCluster {
    /// Initialises and starts a cluster.
    pub fn start() -> PrivateCluster {
        let dir = tempfile::Builder::new()
            .prefix("hub-pg-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let cluster = PrivateCluster { dir, port };
        cluster.resume();
        cluster
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        run_script(&["stop", self.path()]);
    }

    /// Starts the stopped server again on the same port and data.
    pub fn resume(&self) {
        run_script(&["start", self.path(), &self.port.to_string()]);
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// URL of the `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a database and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url())
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        with_database(&self.admin_url(), name)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(postgres_script())
            .args(["stop", self.path()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether Postgres tests should be skipped (only outside CI, only on request).
pub fn skip_postgres() -> bool {
    let opted_out = std::env::var("HUB_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if opted_out && ci {
        panic!("HUB_TEST_SKIP_POSTGRES is not honoured under CI=true: Postgres tests must run");
    }
    opted_out
}

fn postgres_admin_url() -> String {
    std::env::var("HUB_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "HUB_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh, which starts \
             a throwaway PostgreSQL cluster (or set HUB_TEST_SKIP_POSTGRES=1 outside CI)"
        )
    })
}

/// Replaces the database name (the path) of a Postgres URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base.rfind('/').unwrap();
    let mut out = format!("{}/{name}", &base[..cut]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A new, empty database on `backend`.
pub async fn fresh_database(backend: Backend) -> TestDatabase {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("hub.db").display());
            TestDatabase {
                url,
                backend,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let admin = postgres_admin_url();
            let name = format!(
                "hub_test_{}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                rand::random::<u32>()
            );
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            TestDatabase {
                url: with_database(&admin, &name),
                backend,
                _dir: None,
            }
        }
    }
}

/// Defines one test per backend from one body: `backend_test!(name, |backend| async move { ... })`
/// expands to `mod name { sqlite(), postgres() }`.
#[macro_export]
macro_rules! backend_test {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let run = $body;
                run($crate::common::db::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::common::db::skip_postgres() {
                    eprintln!("skipped: HUB_TEST_SKIP_POSTGRES=1");
                    return;
                }
                let run = $body;
                run($crate::common::db::Backend::Postgres).await;
            }
        }
    };
}
