//! A real headless Chromium for end-to-end tests of the web console, driven
//! over WebDriver (chromedriver) with `fantoccini`.
//!
//! Each [`Browser`] runs its own chromedriver on a free 127.0.0.1 port, in its
//! own process group, with a fresh Chromium profile in a temporary folder, so
//! tests share nothing and a dropped browser takes every process it started
//! with it. The binaries come from `HUB_TEST_CHROMEDRIVER` and
//! `HUB_TEST_CHROMIUM` (set by `scripts/test.sh` after
//! `scripts/chromium.sh ensure`), defaulting to Debian's `/usr/bin/chromedriver`
//! and `/usr/bin/chromium`. When they are missing the test fails (it never
//! silently skips), unless a developer opts out outside CI with
//! `HUB_TEST_SKIP_BROWSER=1` — the same rule as Postgres in `db.rs`.
//!
//! Helpers wait for the DOM to reach a state (`wait_for`, `wait_until`),
//! read it (`text_of`, `attr_of`, `count`), save screenshots under
//! `target/browser-screenshots/`, and read the browser's console log
//! (Chromium's `goog:loggingPrefs`), so tests can assert that no Content
//! Security Policy violation was reported.
//!
//! Included by the browser test files with `#[path]` (not from `mod.rs`), so
//! the other test binaries do not compile it.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as Json, json};
use tempfile::TempDir;

/// How long [`Browser::start`] waits for chromedriver to listen.
const DRIVER_STARTUP: Duration = Duration::from_secs(20);

/// How often the wait helpers look again.
const POLL: Duration = Duration::from_millis(100);

/// Chromium's flags: headless, no sandbox (CI runs as root), and nothing that
/// talks to the network behind the test's back.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// Whether browser tests should be skipped (only outside CI, only on request).
pub fn skip_browser() -> bool {
    let opted_out = std::env::var("HUB_TEST_SKIP_BROWSER").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if opted_out && ci {
        panic!("HUB_TEST_SKIP_BROWSER is not honoured under CI=true: browser tests must run");
    }
    opted_out
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `variable`, else `default`; panics with how to get it when not executable.
fn binary(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        is_executable(&path),
        "{} is not an executable file ({variable} {}): the console's browser tests need a real \
         Chromium and chromedriver and never skip under CI. Run the tests through \
         scripts/test.sh, or run scripts/chromium.sh ensure (installs Debian's chromium and \
         chromium-driver), or set HUB_TEST_SKIP_BROWSER=1 outside CI",
        path.display(),
        if std::env::var_os(variable).is_some() {
            "is set"
        } else {
            "is unset"
        },
    );
    path
}

/// The chromedriver binary: `HUB_TEST_CHROMEDRIVER`, else `/usr/bin/chromedriver`.
pub fn chromedriver_binary() -> PathBuf {
    binary("HUB_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
}

/// The Chromium binary: `HUB_TEST_CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium_binary() -> PathBuf {
    binary("HUB_TEST_CHROMIUM", "/usr/bin/chromium")
}

/// Where screenshots go: `target/browser-screenshots/` of the workspace
/// (or of `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("browser-screenshots")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, …
    pub level: String,
    /// Where it came from (`console-api`, `network`, `security`, `javascript`, …).
    pub source: String,
    /// The text, usually prefixed with the URL and line.
    pub message: String,
}

impl LogEntry {
    /// Whether this reports a Content Security Policy violation.
    pub fn is_csp_violation(&self) -> bool {
        self.message.contains("Content Security Policy")
    }
}

/// chromedriver's (non-W3C) log endpoint, which fantoccini has no method for.
#[derive(Debug)]
struct ReadLog;

impl WebDriverCompatibleCommand for ReadLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// A headless Chromium under its own chromedriver, closed on drop.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    /// chromedriver, leader of a process group that holds Chromium too.
    driver: Child,
    /// The Chromium profile (`--user-data-dir`) and chromedriver's log.
    dir: TempDir,
    /// Every console entry read so far (the log endpoint drains on read).
    log: Mutex<Vec<LogEntry>>,
}

impl Browser {
    /// Starts chromedriver and a browser session, or returns None when the
    /// developer opted out with `HUB_TEST_SKIP_BROWSER=1` (never under CI).
    pub async fn start_or_skip() -> Option<Browser> {
        if skip_browser() {
            eprintln!("skipped: HUB_TEST_SKIP_BROWSER=1");
            return None;
        }
        Some(Browser::start().await)
    }

    /// Starts chromedriver on a free port and opens a session with a fresh
    /// profile. Panics when the binaries are missing, or when three attempts
    /// failed. Tests start browsers in parallel and a "free" port is only
    /// free when it is picked: another test's chromedriver may take it in
    /// between (then this one exits, the port still answers, and the session
    /// request fails), so a failed start is retried on a new port.
    pub async fn start() -> Browser {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            match Browser::try_start().await {
                Ok(browser) => return browser,
                Err(reason) if attempt < ATTEMPTS => {
                    eprintln!("browser start attempt {attempt} failed, retrying: {reason}");
                    attempt += 1;
                }
                Err(reason) => panic!("{reason}"),
            }
        }
    }

    /// One attempt of [`Browser::start`].
    async fn try_start() -> Result<Browser, String> {
        let chromedriver = chromedriver_binary();
        let chromium = chromium_binary();
        let dir = tempfile::Builder::new()
            .prefix("hub-browser-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let driver_log = dir.path().join("chromedriver.log");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop can end Chromium as well.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", chromedriver.display()));
        let mut browser_dir = Some(dir);
        let mut driver = Some(driver);
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + DRIVER_STARTUP;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(Ok(Some(status))) = driver.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "chromedriver exited at start-up ({status}); its log:\n{}",
                    std::fs::read_to_string(&driver_log).unwrap_or_default()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                if let Some(mut child) = driver.take() {
                    kill_group(&mut child);
                }
                return Err(format!(
                    "chromedriver did not listen on port {port} within {DRIVER_STARTUP:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = browser_dir.as_ref().unwrap().path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": args,
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Json::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&webdriver)
            .await;
        let client = match client {
            Ok(client) => client,
            Err(err) => {
                let log = std::fs::read_to_string(&driver_log).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                if let Some(mut child) = driver.take() {
                    kill_group(&mut child);
                }
                return Err(format!(
                    "no WebDriver session from chromedriver on port {port}: {err}; its log ends:\n{tail}"
                ));
            }
        };
        Ok(Browser {
            client,
            driver: driver.take().unwrap(),
            dir: browser_dir.take().unwrap(),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Navigates to `url` and waits for the load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("navigate to {url}: {err}"));
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub async fn eval(&self, script: &str) -> Json {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Runs `script` with `arguments[0..]` = `args`.
    pub async fn eval_with(&self, script: &str, args: Vec<Json>) -> Json {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Polls `check` until it returns Some, for up to `timeout`; on timeout
    /// saves a screenshot named after `what` and panics.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                let name = format!("timeout-{}.png", sanitize(what));
                self.try_screenshot_to(&name).await;
                let log = self.console_log_text().await;
                panic!("timed out after {timeout:?} waiting for: {what}\nbrowser console:\n{log}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until an element matches `css` and returns it.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        self.wait_until(&format!("element {css}"), timeout, || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    /// Waits until `script` (a function body) returns `true`.
    pub async fn wait_js(&self, what: &str, timeout: Duration, script: &str) {
        self.wait_until(what, timeout, || async {
            match self.client.execute(script, Vec::new()).await {
                Ok(Json::Bool(true)) => Some(()),
                _ => None,
            }
        })
        .await
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Some(element),
            Err(err) if err.is_no_such_element() => None,
            Err(err) => panic!("find {css}: {err}"),
        }
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("find_all {css}: {err}"))
            .len()
    }

    /// The `textContent` of the first element matching `css` (None when
    /// there is none). textContent, not the rendered text: hidden and
    /// off-screen text counts too, and whitespace is kept.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let value = self
            .eval_with(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![Json::from(css)],
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// An attribute of the first element matching `css` (None when the
    /// element or the attribute is missing).
    pub async fn attr_of(&self, css: &str, attribute: &str) -> Option<String> {
        let value = self
            .eval_with(
                "const e = document.querySelector(arguments[0]); \
                 return e ? e.getAttribute(arguments[1]) : null;",
                vec![Json::from(css), Json::from(attribute)],
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// Waits until the first element matching `css` has `attribute` = `value`.
    pub async fn wait_attr(&self, css: &str, attribute: &str, value: &str, timeout: Duration) {
        let what = format!("{css} with {attribute}={value:?}");
        self.wait_until(&what, timeout, || async {
            (self.attr_of(css, attribute).await.as_deref() == Some(value)).then_some(())
        })
        .await
    }

    /// Waits until the first element matching `css` has text (trimmed) `value`.
    pub async fn wait_text(&self, css: &str, value: &str, timeout: Duration) {
        let what = format!("{css} with text {value:?}");
        self.wait_until(&what, timeout, || async {
            (self.text_of(css).await.as_deref().map(str::trim) == Some(value)).then_some(())
        })
        .await
    }

    /// The page's location hash (`#/…`).
    pub async fn hash(&self) -> String {
        self.eval("return location.hash;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Saves a PNG of the viewport as `target/browser-screenshots/<name>`,
    /// prints and returns its path.
    pub async fn screenshot_to(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|err| panic!("screenshot {name}: {err}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        let shown = path.canonicalize().unwrap_or(path);
        eprintln!("screenshot: {}", shown.display());
        shown
    }

    /// Like [`Browser::screenshot_to`], but only reports a failure (for use
    /// while already failing).
    async fn try_screenshot_to(&self, name: &str) {
        match self.client.screenshot().await {
            Ok(png) => {
                let dir = screenshot_dir();
                let path = dir.join(name);
                if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&path, png).is_ok() {
                    eprintln!("screenshot: {}", path.display());
                }
            }
            Err(err) => eprintln!("no screenshot {name}: {err}"),
        }
    }

    /// Reads the browser console entries logged since the last read and
    /// returns every entry so far. Empty (with a note on stderr) when this
    /// chromedriver has no log endpoint.
    pub async fn console_log(&self) -> Vec<LogEntry> {
        let fresh = self.read_log().await;
        let mut log = self.log.lock().unwrap();
        log.extend(fresh);
        log.clone()
    }

    async fn read_log(&self) -> Vec<LogEntry> {
        match self.client.issue_cmd(ReadLog).await {
            Ok(Json::Array(entries)) => entries
                .iter()
                .map(|entry| LogEntry {
                    level: entry["level"].as_str().unwrap_or_default().to_owned(),
                    source: entry["source"].as_str().unwrap_or_default().to_owned(),
                    message: entry["message"].as_str().unwrap_or_default().to_owned(),
                })
                .collect(),
            Ok(other) => {
                eprintln!("browser log: unexpected answer {other}");
                Vec::new()
            }
            Err(err) => {
                eprintln!("browser log unavailable: {err}");
                Vec::new()
            }
        }
    }

    /// The console entries so far as text, one per line (for failure messages).
    async fn console_log_text(&self) -> String {
        self.console_log()
            .await
            .iter()
            .map(|e| format!("  [{} {}] {}", e.level, e.source, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Asserts that the console holds no Content Security Policy violation,
    /// and prints every SEVERE entry (for the report).
    pub async fn assert_no_csp_violations(&self) {
        let log = self.console_log().await;
        for entry in log.iter().filter(|e| e.level == "SEVERE") {
            eprintln!(
                "browser console SEVERE [{}]: {}",
                entry.source, entry.message
            );
        }
        let violations: Vec<&LogEntry> = log.iter().filter(|e| e.is_csp_violation()).collect();
        assert!(
            violations.is_empty(),
            "Content Security Policy violations in the browser console: {violations:#?}"
        );
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver.
    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        kill_group(&mut self.driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The profile folder goes with `dir`, after the processes using it.
        kill_group(&mut self.driver);
    }
}

/// Ends chromedriver and everything in its process group (Chromium and its
/// helpers), by the group id this test started.
fn kill_group(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let group = child.id();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// `what` as a file-name-safe stem.
fn sanitize(what: &str) -> String {
    let stem: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    stem.chars().take(60).collect()
}
