//! `hub apikey add | list | revoke`.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::open_store;
use super::output::{json_line, table, time_or_dash};
use crate::api::time::format_ms;
use crate::config::DatabaseArgs;
use crate::store::{ApiKeyRecord, NewApiKey, Store};

/// `hub apikey` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key and print it (shown only this once).
    Add {
        /// Who or what uses the key, 1 to 64 characters.
        name: String,
        /// Where the database is.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every API key.
    List {
        /// Where the database is.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key; it stops working at once.
    Revoke {
        /// The key id (the 16 hex characters before the dot).
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
pub(super) async fn execute(cmd: ApiKeyCommand) -> anyhow::Result<String> {
    let database = match &cmd {
        ApiKeyCommand::Add { database, .. }
        | ApiKeyCommand::List { database, .. }
        | ApiKeyCommand::Revoke { database, .. } => database.clone(),
    };
    let store = open_store(&database).await?;
    let result = execute_on(&store, cmd).await;
    store.close().await;
    result
}

async fn execute_on(store: &Store, cmd: ApiKeyCommand) -> anyhow::Result<String> {
    match cmd {
        ApiKeyCommand::Add { name, json, .. } => {
            let key = store
                .create_api_key(&name)
                .await
                .context("cannot create the API key")?;
            Ok(render_added(&key, json))
        }
        ApiKeyCommand::List { json, .. } => {
            let keys = store
                .list_api_keys()
                .await
                .context("cannot list API keys")?;
            Ok(render_list(&keys, json))
        }
        ApiKeyCommand::Revoke { id, json, .. } => {
            let found = store
                .revoke_api_key(&id)
                .await
                .context("cannot revoke the API key")?;
            if !found {
                anyhow::bail!("no API key with id {id:?}");
            }
            Ok(render_revoked(&id, json))
        }
    }
}

/// Output of `apikey add`: the key with a warning that it is shown once.
pub(crate) fn render_added(key: &NewApiKey, json: bool) -> String {
    if json {
        return json_line(&json!({
            "id": key.id,
            "name": key.name,
            "key": key.key,
            "created_at": format_ms(key.created_at_ms),
        }));
    }
    format!(
        "API key created.\n\
         \x20 id:   {}\n\
         \x20 name: {}\n\
         \x20 key:  {}\n\
         The key will not be shown again. Send it as `Authorization: Bearer <key>`.\n",
        key.id, key.name, key.key
    )
}

/// Output of `apikey list`.
pub(crate) fn render_list(keys: &[ApiKeyRecord], json: bool) -> String {
    if json {
        let keys: Vec<_> = keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.id,
                    "name": k.name,
                    "created_at": format_ms(k.created_at_ms),
                    "revoked": k.revoked_at_ms.is_some(),
                    "last_used_at": k.last_used_at_ms.map(format_ms),
                })
            })
            .collect();
        return json_line(&json!({ "api_keys": keys }));
    }
    if keys.is_empty() {
        return "No API keys.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                if k.revoked_at_ms.is_some() {
                    "revoked".to_owned()
                } else {
                    "active".to_owned()
                },
                time_or_dash(k.last_used_at_ms),
                format_ms(k.created_at_ms),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATUS", "LAST USED", "CREATED"], &rows)
}

/// Output of `apikey revoke`.
pub(crate) fn render_revoked(id: &str, json: bool) -> String {
    if json {
        return json_line(&json!({ "id": id, "revoked": true }));
    }
    format!("API key {id} revoked: it no longer works.\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &tempfile::TempDir) -> DatabaseArgs {
        DatabaseArgs {
            database_url: format!("sqlite://{}", dir.path().join("cli.db").display()),
        }
    }

    #[tokio::test]
    async fn add_list_revoke_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let added = execute(ApiKeyCommand::Add {
            name: "grafana".into(),
            database: database(&dir),
            json: true,
        })
        .await
        .expect("add");
        let added: serde_json::Value = serde_json::from_str(&added).expect("JSON");
        let id = added["id"].as_str().expect("id").to_owned();
        assert!(added["key"].as_str().expect("key").starts_with(&id));

        let text = execute(ApiKeyCommand::List {
            database: database(&dir),
            json: false,
        })
        .await
        .expect("list");
        assert!(text.contains(&id) && text.contains("active"), "{text}");
        assert!(!text.contains(added["key"].as_str().expect("key")));

        let revoked = execute(ApiKeyCommand::Revoke {
            id: id.clone(),
            database: database(&dir),
            json: true,
        })
        .await
        .expect("revoke");
        assert_eq!(revoked, format!("{{\"id\":\"{id}\",\"revoked\":true}}\n"));

        let listed = execute(ApiKeyCommand::List {
            database: database(&dir),
            json: true,
        })
        .await
        .expect("list");
        let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
        assert_eq!(listed["api_keys"][0]["revoked"], true);

        let err = execute(ApiKeyCommand::Revoke {
            id: "ffffffffffffffff".into(),
            database: database(&dir),
            json: false,
        })
        .await
        .expect_err("unknown id");
        assert!(err.to_string().contains("no API key"), "{err}");
    }
}
