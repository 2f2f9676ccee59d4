//! `hub device add | list | revoke | rotate`.
//!
//! Adding, revoking and rotating are written to the audit log with actor
//! `cli` (refusals included); a failed audit write is reported on stderr
//! and does not undo or fail the action.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::open_store;
use super::output::{json_line, table, time_or_dash};
use crate::api::time::format_ms;
use crate::config::DatabaseArgs;
use crate::store::{
    DeviceQuery, DeviceRecord, NewAuditEntry, NewDevice, RotateRefusal, RotatedToken, Store,
    StoreError,
};

/// The audit log's actor for everything the CLI does.
pub(super) const CLI_ACTOR: &str = "cli";

/// Devices fetched per query while listing all of them.
const LIST_PAGE: u32 = 1000;

/// `hub device` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create a device and print its token (shown only this once).
    Add {
        /// Name for people, 1 to 64 characters.
        name: String,
        /// Where the database is.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every device.
    List {
        /// Where the database is.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device's credentials; a running hub closes its connection.
    Revoke {
        /// The device id (16 hex characters).
        id: String,
        /// Where the database is.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Give a device a new token and print it (shown only this once); the old
    /// token stops working and a running hub closes the connection that used it.
    Rotate {
        /// The device id (16 hex characters).
        id: String,
        /// Where the database is.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Appends an audit entry by the CLI; a failure is reported on stderr, not
/// returned: the action it describes already happened.
pub(super) async fn record_audit(store: &Store, entry: NewAuditEntry) {
    if let Err(err) = store.record_audit(&entry).await {
        eprintln!(
            "warning: could not write the audit log entry for {} ({}): {err}",
            entry.action, entry.outcome
        );
    }
}

/// The audit outcome of a store call: `ok`, `invalid` for a bad name, else `error`.
pub(super) fn store_outcome<T>(result: &Result<T, StoreError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::InvalidName(_)) => "invalid",
        Err(_) => "error",
    }
}

/// Runs the command and returns what to print.
pub(super) async fn execute(cmd: DeviceCommand) -> anyhow::Result<String> {
    let database = match &cmd {
        DeviceCommand::Add { database, .. }
        | DeviceCommand::List { database, .. }
        | DeviceCommand::Revoke { database, .. }
        | DeviceCommand::Rotate { database, .. } => database.clone(),
    };
    let store = open_store(&database).await?;
    let result = execute_on(&store, cmd).await;
    store.close().await;
    result
}

async fn execute_on(store: &Store, cmd: DeviceCommand) -> anyhow::Result<String> {
    match cmd {
        DeviceCommand::Add { name, json, .. } => {
            let created = store.create_device(&name).await;
            let entry = NewAuditEntry::new(
                CLI_ACTOR,
                "device.create",
                created.as_ref().ok().map(|d| d.id.as_str()),
                store_outcome(&created),
            )
            .with_detail(json!({ "name": name }));
            record_audit(store, entry).await;
            let device = created.context("cannot create the device")?;
            Ok(render_added(&device, json))
        }
        DeviceCommand::List { json, .. } => {
            let devices = all_devices(store).await?;
            Ok(render_list(&devices, json))
        }
        DeviceCommand::Revoke { id, json, .. } => {
            let revoked = store.revoke_device(&id).await;
            let outcome = match &revoked {
                Ok(None) => "not_found",
                other => store_outcome(other),
            };
            let entry = NewAuditEntry::new(CLI_ACTOR, "device.revoke", Some(&id), outcome);
            record_audit(store, entry).await;
            match revoked.context("cannot revoke the device")? {
                Some(_) => Ok(render_revoked(&id, json)),
                None => anyhow::bail!("no device with id {id:?}"),
            }
        }
        DeviceCommand::Rotate { id, json, .. } => {
            let rotated = store.rotate_device_token(&id).await;
            let outcome = match &rotated {
                Ok(Err(RotateRefusal::UnknownDevice)) => "not_found",
                Ok(Err(RotateRefusal::Revoked)) => "device_revoked",
                Ok(Ok(_)) => "ok",
                Err(_) => "error",
            };
            let generation = match &rotated {
                Ok(Ok(r)) => Some(r.token_generation),
                _ => None,
            };
            let entry = NewAuditEntry::new(CLI_ACTOR, "device.rotate_token", Some(&id), outcome)
                .with_detail(json!({ "token_generation": generation }));
            record_audit(store, entry).await;
            match rotated.context("cannot rotate the device token")? {
                Ok(rotated) => Ok(render_rotated(&rotated, json)),
                Err(RotateRefusal::UnknownDevice) => anyhow::bail!("no device with id {id:?}"),
                Err(RotateRefusal::Revoked) => {
                    anyhow::bail!("device {id:?} is revoked; a revoked device gets no new token")
                }
            }
        }
    }
}

async fn all_devices(store: &Store) -> anyhow::Result<Vec<DeviceRecord>> {
    let mut devices = Vec::new();
    let mut query = DeviceQuery {
        limit: LIST_PAGE,
        ..DeviceQuery::default()
    };
    loop {
        let page = store
            .list_devices(&query)
            .await
            .context("cannot list devices")?;
        devices.extend(page.devices);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(devices),
        }
    }
}

/// Output of `device add`: the token with a warning that it is shown once.
pub(crate) fn render_added(device: &NewDevice, json: bool) -> String {
    if json {
        return json_line(&json!({
            "id": device.id,
            "name": device.name,
            "token": device.token,
            "created_at": format_ms(device.created_at_ms),
        }));
    }
    format!(
        "Device created.\n\
         \x20 id:    {}\n\
         \x20 name:  {}\n\
         \x20 token: {}\n\
         The token will not be shown again: put it on the device now. \
         If it is lost, give the device a new one with `hub device rotate {}`.\n",
        device.id, device.name, device.token, device.id
    )
}

/// Output of `device rotate`: the new token with a warning that it is shown once.
pub(crate) fn render_rotated(rotated: &RotatedToken, json: bool) -> String {
    if json {
        return json_line(&json!({
            "id": rotated.id,
            "token": rotated.token,
            "token_generation": rotated.token_generation,
            "rotated_at": format_ms(rotated.rotated_at_ms),
        }));
    }
    format!(
        "Device token rotated.\n\
         \x20 id:    {}\n\
         \x20 token: {}\n\
         The old token no longer works; a running hub closes the connection \
         that used it within about a second. The new token will not be shown again.\n",
        rotated.id, rotated.token
    )
}

fn status(device: &DeviceRecord) -> &'static str {
    if device.is_revoked() {
        "revoked"
    } else if device.online {
        "online"
    } else {
        "offline"
    }
}

/// Output of `device list`.
pub(crate) fn render_list(devices: &[DeviceRecord], json: bool) -> String {
    if json {
        let devices: Vec<_> = devices
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "name": d.name,
                    "online": d.online,
                    "last_seen": d.last_seen_ms.map(format_ms),
                    "created_at": format_ms(d.created_at_ms),
                    "revoked": d.is_revoked(),
                    "firmware": d.firmware,
                    "last_seq": d.last_seq,
                })
            })
            .collect();
        return json_line(&json!({ "devices": devices }));
    }
    if devices.is_empty() {
        return "No devices.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.name.clone(),
                status(d).to_owned(),
                time_or_dash(d.last_seen_ms),
                d.firmware.clone().unwrap_or_else(|| "-".to_owned()),
                format_ms(d.created_at_ms),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "STATUS", "LAST SEEN", "FIRMWARE", "CREATED"],
        &rows,
    )
}

/// Output of `device revoke`.
pub(crate) fn render_revoked(id: &str, json: bool) -> String {
    if json {
        return json_line(&json!({ "id": id, "revoked": true }));
    }
    format!(
        "Device {id} revoked: its token no longer works. A running hub closes \
         its live connection within about a second.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &tempfile::TempDir) -> DatabaseArgs {
        DatabaseArgs {
            database_url: format!("sqlite://{}", dir.path().join("cli.db").display()),
        }
    }

    fn parse(output: &str) -> serde_json::Value {
        assert_eq!(output.lines().count(), 1, "one JSON line: {output:?}");
        serde_json::from_str(output).expect("valid JSON")
    }

    #[tokio::test]
    async fn add_list_revoke_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let added = execute(DeviceCommand::Add {
            name: "boiler".into(),
            database: database(&dir),
            json: true,
        })
        .await
        .expect("add");
        let added = parse(&added);
        let id = added["id"].as_str().expect("id").to_owned();
        let token = added["token"].as_str().expect("token");
        assert!(token.starts_with(&format!("{id}.")));
        assert_eq!(added["name"], "boiler");

        let listed = execute(DeviceCommand::List {
            database: database(&dir),
            json: true,
        })
        .await
        .expect("list");
        let listed = parse(&listed);
        assert_eq!(listed["devices"][0]["id"], id.as_str());
        assert_eq!(listed["devices"][0]["revoked"], false);
        assert!(listed["devices"][0].get("token").is_none());

        let revoked = execute(DeviceCommand::Revoke {
            id: id.clone(),
            database: database(&dir),
            json: true,
        })
        .await
        .expect("revoke");
        assert_eq!(parse(&revoked), json!({"id": id, "revoked": true}));

        let text = execute(DeviceCommand::List {
            database: database(&dir),
            json: false,
        })
        .await
        .expect("list");
        assert!(text.contains(&id) && text.contains("revoked"), "{text}");
    }

    #[tokio::test]
    async fn rotate_replaces_the_token_and_is_audited() {
        let dir = tempfile::tempdir().expect("temp dir");
        let added = parse(
            &execute(DeviceCommand::Add {
                name: "boiler".into(),
                database: database(&dir),
                json: true,
            })
            .await
            .expect("add"),
        );
        let id = added["id"].as_str().expect("id").to_owned();
        let old = added["token"].as_str().expect("token").to_owned();
        let rotated = parse(
            &execute(DeviceCommand::Rotate {
                id: id.clone(),
                database: database(&dir),
                json: true,
            })
            .await
            .expect("rotate"),
        );
        let new = rotated["token"].as_str().expect("token");
        assert!(new.starts_with(&format!("{id}.")) && new != old);
        assert_eq!(rotated["token_generation"], 1);

        let store = Store::open(&database(&dir).database_url)
            .await
            .expect("open");
        assert!(
            store
                .authenticate_device(&old)
                .await
                .expect("auth")
                .is_none()
        );
        assert!(
            store
                .authenticate_device(new)
                .await
                .expect("auth")
                .is_some()
        );
        let page = store
            .list_audit(&crate::store::AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("audit");
        let actions: Vec<(&str, &str, &str)> = page
            .entries
            .iter()
            .map(|e| (e.actor.as_str(), e.action.as_str(), e.outcome.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("cli", "device.rotate_token", "ok"),
                ("cli", "device.create", "ok")
            ]
        );
        store.close().await;

        let err = execute(DeviceCommand::Rotate {
            id: "0123456789abcdef".into(),
            database: database(&dir),
            json: false,
        })
        .await
        .expect_err("unknown id");
        assert!(err.to_string().contains("no device"), "{err}");
    }

    #[tokio::test]
    async fn unknown_id_and_bad_name_are_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = execute(DeviceCommand::Revoke {
            id: "0123456789abcdef".into(),
            database: database(&dir),
            json: false,
        })
        .await
        .expect_err("unknown id");
        assert!(err.to_string().contains("no device"), "{err}");
        let err = execute(DeviceCommand::Add {
            name: " ".into(),
            database: database(&dir),
            json: false,
        })
        .await
        .expect_err("blank name");
        assert!(format!("{err:#}").contains("invalid name"), "{err:#}");
    }

    #[test]
    fn text_output_shows_the_token_once_with_a_warning() {
        let device = NewDevice {
            id: "0123456789abcdef".into(),
            name: "boiler".into(),
            token: "0123456789abcdef.secret".into(),
            created_at_ms: 0,
        };
        let text = render_added(&device, false);
        assert_eq!(text.matches("0123456789abcdef.secret").count(), 1);
        assert!(text.contains("will not be shown again"));
        let json = render_added(&device, true);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).expect("JSON"),
            json!({
                "id": "0123456789abcdef",
                "name": "boiler",
                "token": "0123456789abcdef.secret",
                "created_at": "1970-01-01T00:00:00.000Z",
            })
        );
        assert_eq!(render_list(&[], false), "No devices.\n");
        assert_eq!(render_list(&[], true), "{\"devices\":[]}\n");
        assert!(render_revoked("x", false).contains("within about a second"));
    }
}
