//! `hub device add | list | revoke`.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::open_store;
use super::output::{json_line, table, time_or_dash};
use crate::api::time::format_ms;
use crate::config::DatabaseArgs;
use crate::store::{DeviceQuery, DeviceRecord, NewDevice, Store};

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
}

/// Runs the command and returns what to print.
pub(super) async fn execute(cmd: DeviceCommand) -> anyhow::Result<String> {
    let database = match &cmd {
        DeviceCommand::Add { database, .. }
        | DeviceCommand::List { database, .. }
        | DeviceCommand::Revoke { database, .. } => database.clone(),
    };
    let store = open_store(&database).await?;
    let result = execute_on(&store, cmd).await;
    store.close().await;
    result
}

async fn execute_on(store: &Store, cmd: DeviceCommand) -> anyhow::Result<String> {
    match cmd {
        DeviceCommand::Add { name, json, .. } => {
            let device = store
                .create_device(&name)
                .await
                .context("cannot create the device")?;
            Ok(render_added(&device, json))
        }
        DeviceCommand::List { json, .. } => {
            let devices = all_devices(store).await?;
            Ok(render_list(&devices, json))
        }
        DeviceCommand::Revoke { id, json, .. } => {
            let revoked = store
                .revoke_device(&id)
                .await
                .context("cannot revoke the device")?;
            match revoked {
                Some(_) => Ok(render_revoked(&id, json)),
                None => anyhow::bail!("no device with id {id:?}"),
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
         If it is lost, revoke the device and add a new one.\n",
        device.id, device.name, device.token
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
