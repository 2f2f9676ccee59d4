//! `hub apikey add | list | revoke`.
//!
//! `add` takes `--role viewer|operator|admin` and defaults to admin: whoever
//! runs this command can open the database, so can do anything anyway, and
//! scripts written before roles existed (`hub apikey add bench`) keep
//! working. The API's `POST /api/v1/api-keys` has no default role. Adding
//! and revoking are written to the audit log with actor `cli`.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::device::{CLI_ACTOR, record_audit, store_outcome};
use super::open_store;
use super::output::{json_line, table, time_or_dash};
use crate::api::time::format_ms;
use crate::config::DatabaseArgs;
use crate::store::{ApiKeyRecord, NewApiKey, NewAuditEntry, Role, Store};

/// `hub apikey` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key and print it (shown only this once).
    Add {
        /// Who or what uses the key, 1 to 64 characters.
        name: String,
        /// What the key may do: viewer (read), operator (also commands) or
        /// admin (also devices, API keys and the audit log).
        #[arg(long, default_value = "admin")]
        role: Role,
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
        ApiKeyCommand::Add {
            name, role, json, ..
        } => {
            let created = store.create_api_key_with_role(&name, role).await;
            let entry = NewAuditEntry::new(
                CLI_ACTOR,
                "api_key.create",
                created.as_ref().ok().map(|k| k.id.as_str()),
                store_outcome(&created),
            )
            .with_detail(json!({ "name": name, "role": role.as_str() }));
            record_audit(store, entry).await;
            let key = created.context("cannot create the API key")?;
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
            let revoked = store.revoke_api_key(&id).await;
            let outcome = match &revoked {
                Ok(false) => "not_found",
                other => store_outcome(other),
            };
            let entry = NewAuditEntry::new(CLI_ACTOR, "api_key.revoke", Some(&id), outcome);
            record_audit(store, entry).await;
            let found = revoked.context("cannot revoke the API key")?;
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
            "role": key.role.as_str(),
            "key": key.key,
            "created_at": format_ms(key.created_at_ms),
        }));
    }
    format!(
        "API key created.\n\
         \x20 id:   {}\n\
         \x20 name: {}\n\
         \x20 role: {}\n\
         \x20 key:  {}\n\
         The key will not be shown again. Send it as `Authorization: Bearer <key>`.\n",
        key.id, key.name, key.role, key.key
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
                    "role": k.role.as_str(),
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
                k.role.as_str().to_owned(),
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
    table(
        &["ID", "NAME", "ROLE", "STATUS", "LAST USED", "CREATED"],
        &rows,
    )
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
            role: Role::Viewer,
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
        assert!(text.contains("viewer"), "{text}");
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
