//! Configuration of `hub serve` as an operator meets it: the built binary run
//! with a TOML file, `HUB_*` variables and flags; `hub config print` to see
//! the result; start-up errors that name the setting; JSON logs; and the
//! table in docs/CONFIGURATION.md checked against the flags.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The `hub` binary in `dir`, with no `HUB_*` variable inherited from the
/// test's own environment.
fn hub(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hub"));
    command.current_dir(dir).env("RUST_BACKTRACE", "0");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HUB_") {
            command.env_remove(name);
        }
    }
    command
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line of `hub config print` output that sets `key`.
fn printed<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|line| line.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{text}"))
}

/// Runs `hub serve` with `args`, expecting it to stop at once with an error.
fn serve_fails(dir: &Path, args: &[&str]) -> String {
    let output = hub(dir)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "hub serve {args:?} started; stderr: {}",
        stderr(&output)
    );
    stderr(&output)
}

#[test]
fn flags_win_over_environment_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "hub.toml",
        "# retention\nretention_days = 10\nmqtt_prefix = \"site-a\"\n",
    );
    let file = file.to_str().unwrap();
    let print = |env: Option<&str>, flag: Option<&str>| {
        let mut command = hub(dir.path());
        command.args(["config", "print", "--config", file]);
        if let Some(days) = env {
            command.env("HUB_RETENTION_DAYS", days);
        }
        if let Some(days) = flag {
            command.args(["--retention-days", days]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };

    let from_file = print(None, None);
    let line = printed(&from_file, "retention_days");
    assert!(
        line.starts_with("retention_days = 10 ") && line.ends_with("# file, line 2"),
        "{from_file}"
    );
    assert!(
        printed(&from_file, "mqtt_prefix").contains("\"site-a\""),
        "{from_file}"
    );
    assert!(
        printed(&from_file, "listen").contains("\"127.0.0.1:8080\"")
            && printed(&from_file, "listen").ends_with("# default"),
        "{from_file}"
    );

    let from_env = print(Some("20"), None);
    let line = printed(&from_env, "retention_days");
    assert!(
        line.starts_with("retention_days = 20 ") && line.ends_with("# env HUB_RETENTION_DAYS"),
        "{from_env}"
    );

    let from_flag = print(Some("20"), Some("30"));
    let line = printed(&from_flag, "retention_days");
    assert!(
        line.starts_with("retention_days = 30 ") && line.ends_with("# flag --retention-days"),
        "{from_flag}"
    );
    // The other file setting is still the file's.
    assert!(printed(&from_flag, "mqtt_prefix").contains("\"site-a\""));
}

#[test]
fn printed_configuration_is_a_valid_file_for_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let output = hub(dir.path())
        .args(["config", "print", "--retention-days", "7"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let file = write_file(dir.path(), "printed.toml", &stdout(&output));
    let again = hub(dir.path())
        .args(["config", "print", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(printed(&stdout(&again), "retention_days").starts_with("retention_days = 7 "));
}

#[test]
fn example_file_in_deploy_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hub.example.toml");
    let output = hub(dir.path())
        .args(["config", "print", "--config", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        printed(&text, "retention_days").contains("# file, line"),
        "{text}"
    );
}

#[test]
fn unknown_key_in_the_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "hub.toml",
        "listen = \"127.0.0.1:0\"\nretension_days = 30\n",
    );
    let message = serve_fails(dir.path(), &["--config", file.to_str().unwrap()]);
    assert!(
        message.contains("unknown setting `retension_days`") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn wrong_type_in_the_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("retention_days = \"thirty\"\n", "`retention_days`"),
        ("listen = 8080\n", "`listen`"),
        ("max_declared = [1, 2]\n", "`max_declared`"),
        ("[mqtt]\nurl = \"mqtt://broker:1883\"\n", "`mqtt`"),
        ("log_format = \"xml\"\n", "`log_format`"),
    ] {
        let file = write_file(dir.path(), "hub.toml", text);
        let message = serve_fails(dir.path(), &["--config", file.to_str().unwrap()]);
        assert!(message.contains(key), "{text:?} gave: {message}");
        assert!(message.contains("hub.toml"), "{text:?} gave: {message}");
    }
}

#[test]
fn invalid_value_from_the_file_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "hub.toml", "idle_timeout_secs = 1\n");
    let message = serve_fails(dir.path(), &["--config", file.to_str().unwrap()]);
    assert!(
        message.contains("--idle-timeout-secs")
            && message.contains("ping interval")
            && message.contains("`idle_timeout_secs` in")
            && message.contains("line 1"),
        "{message}"
    );
    // `hub config print` is a check too.
    let output = hub(dir.path())
        .args(["config", "print", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--idle-timeout-secs"));
}

#[test]
fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let message = serve_fails(dir.path(), &["--config", "no-such-hub.toml"]);
    assert!(message.contains("no-such-hub.toml"), "{message}");
    let output = hub(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HUB_CONFIG", "also-missing.toml")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("also-missing.toml"));
}

#[test]
fn passwords_are_masked_in_print_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let output = hub(dir.path())
        .args(["config", "print"])
        .env(
            "HUB_DATABASE_URL",
            "postgres://hub:s3cret@db.internal:5432/hub",
        )
        .args(["--mqtt-url", "mqtt://bridge:pw0rd@broker:1883"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        printed(&text, "database_url").contains("\"postgres://hub:****@db.internal:5432/hub\""),
        "{text}"
    );
    assert!(
        printed(&text, "database_url").ends_with("# env HUB_DATABASE_URL"),
        "{text}"
    );
    assert!(printed(&text, "mqtt_url").contains("\"mqtt://bridge:****@broker:1883\""));
    assert!(
        !text.contains("s3cret") && !text.contains("pw0rd"),
        "{text}"
    );

    let message = serve_fails(dir.path(), &["--mqtt-url", "http://bridge:pw0rd@broker"]);
    assert!(message.contains("--mqtt-url"), "{message}");
    assert!(!message.contains("pw0rd"), "{message}");
}

/// Every `hub serve` flag has a row in the table of docs/CONFIGURATION.md
/// with its TOML key, variable and default, and every row is a real flag.
#[test]
fn configuration_table_lists_every_serve_setting() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIGURATION.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let rows: Vec<Vec<String>> = doc
        .lines()
        .filter(|line| line.starts_with("| ") && line.contains("`--"))
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    let command = hub::config::serve_command();
    let mut flags = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let flag = format!("`--{}`", arg.get_long().unwrap());
        let row = rows
            .iter()
            .find(|row| row.get(1) == Some(&flag))
            .unwrap_or_else(|| panic!("{flag} is missing from the table in docs/CONFIGURATION.md"));
        if id != "config" {
            assert_eq!(row[0], format!("`{id}`"), "TOML key of {flag}");
        }
        let env = arg.get_env().unwrap().to_string_lossy();
        assert_eq!(row[2], format!("`{env}`"), "variable of {flag}");
        let default = match arg.get_default_values() {
            [] => "(unset)".to_owned(),
            values => format!(
                "`{}`",
                values
                    .iter()
                    .map(|v| v.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        assert_eq!(row[3], default, "default of {flag}");
        assert!(
            row.get(4).is_some_and(|meaning| !meaning.is_empty()),
            "meaning of {flag}"
        );
        flags.push(flag);
    }
    for row in &rows {
        assert!(
            flags.contains(&row[1]),
            "docs/CONFIGURATION.md lists {}, which `hub serve` does not have",
            row[1]
        );
    }
}

/// A running `hub serve` child, killed when dropped.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Next stderr line that is a JSON object satisfying `wanted`.
fn next_json(
    lines: &mpsc::Receiver<String>,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line with {what}"));
        let value: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(value["timestamp"].is_string() && value["level"].is_string());
        if wanted(&value) {
            return value;
        }
    }
}

#[tokio::test]
async fn json_logs_carry_the_device_id_of_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let added = hub(dir.path())
        .args([
            "device",
            "add",
            "json-logger",
            "--json",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", stderr(&added));
    let added: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    let id = added["id"].as_str().unwrap().to_owned();
    let token = added["token"].as_str().unwrap().to_owned();

    let mut child = hub(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env("HUB_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _serving = Serving(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let listening = next_json(&lines, "the listening address", |v| {
        v["fields"]["message"] == "hub listening"
    });
    let addr = listening["fields"]["addr"].as_str().unwrap().to_owned();

    let mut request = format!("ws://{addr}/ws/device")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.headers_mut().insert(
        "sec-websocket-protocol",
        schema::SUBPROTOCOL.parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::Binary(common::hello_frame(1).into()))
        .await
        .unwrap();
    let welcome = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap();
    assert!(
        matches!(welcome, Some(Ok(Message::Binary(_)))),
        "{welcome:?}"
    );
    socket.close(None).await.unwrap();

    let event = tokio::task::spawn_blocking(move || {
        next_json(&lines, "the device span", |v| {
            v["span"]["name"] == "device" && v["spans"].is_array()
        })
    })
    .await
    .unwrap();
    assert_eq!(event["span"]["device"], id.as_str(), "{event}");
    assert!(
        event["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|span| span["device"] == id.as_str()),
        "{event}"
    );
}
