//! Admin subcommands: `hub device ...`, `hub apikey ...`, and
//! `hub dev-certs` (certificates for development, no database).
//!
//! They open the database directly (the same URL as `hub serve`), so they
//! work with or without a running hub; a running hub notices revocations by
//! polling. Each command prints text for people or, with `--json`, exactly one
//! JSON object for scripts. Rendering is plain functions of the data, kept
//! apart from the database work so both can be tested.

mod apikey;
mod config;
pub mod dev_certs;
mod device;
mod output;
pub mod status;

pub use apikey::ApiKeyCommand;
pub use config::{ConfigCommand, run_config};
pub use dev_certs::DevCertsArgs;
pub use device::DeviceCommand;

use anyhow::Context;

use crate::config::DatabaseArgs;
use crate::store::Store;

/// Runs `hub device <cmd>`, printing its output on stdout.
pub async fn run_device(cmd: DeviceCommand) -> anyhow::Result<()> {
    let output = device::execute(cmd).await?;
    print!("{output}");
    Ok(())
}

/// Runs `hub dev-certs DIR ...`, printing what it wrote on stdout.
pub fn run_dev_certs(args: &DevCertsArgs) -> anyhow::Result<()> {
    let output = dev_certs::execute(args)?;
    print!("{output}");
    Ok(())
}

/// Runs `hub apikey <cmd>`, printing its output on stdout.
pub async fn run_apikey(cmd: ApiKeyCommand) -> anyhow::Result<()> {
    let output = apikey::execute(cmd).await?;
    print!("{output}");
    Ok(())
}

async fn open_store(database: &DatabaseArgs) -> anyhow::Result<Store> {
    Store::open(&database.database_url)
        .await
        .with_context(|| format!("cannot open the database {}", database.database_url))
}
