//! The `hub` binary's admin subcommands, run as a user would: against a
//! database file, printing one JSON object with `--json`; and revocation from
//! the CLI closing a live connection on a running hub.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use schema::close;

fn hub_cli(database_url: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(args)
        .args(["--json", "--database-url", database_url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "hub {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "hub {args:?} printed no single JSON object ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test]
async fn device_add_list_revoke_through_the_cli_closes_the_live_connection() {
    let hub = TestHub::start().await;
    let added = hub_cli(&hub.database_url, &["device", "add", "boiler-1"]);
    let id = added["id"].as_str().unwrap().to_string();
    let token = added["token"].as_str().unwrap().to_string();
    assert!(
        token.starts_with(&format!("{id}.")),
        "token is <device-id>.<secret>"
    );
    assert_eq!(added["name"], "boiler-1");

    let listed = hub_cli(&hub.database_url, &["device", "list"]);
    let devices = listed["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["id"], id.as_str());
    assert!(devices[0].get("token").is_none(), "list never shows tokens");

    let (mut socket, _) = open_session(&hub, &token).await;
    let revoked = hub_cli(&hub.database_url, &["device", "revoke", &id]);
    assert_eq!(revoked["revoked"], true);
    expect_close(&mut socket, close::CREDENTIALS_REVOKED).await;
}

#[tokio::test]
async fn unknown_ids_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let output = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args([
            "device",
            "revoke",
            "0000000000000000",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!output.stderr.is_empty(), "the failure says why");
}

#[tokio::test]
async fn apikey_add_prints_a_key_once_and_list_hides_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let added = hub_cli(&url, &["apikey", "add", "ops"]);
    let key = added["key"].as_str().unwrap();
    assert!(key.contains('.'));
    let listed = hub_cli(&url, &["apikey", "list"]).to_string();
    assert!(
        !listed.contains(key.split('.').nth(1).unwrap()),
        "the secret never appears again"
    );
}
