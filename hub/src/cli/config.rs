//! `hub config print`: the settings `hub serve` would run with.
//!
//! It takes exactly the flags of `hub serve` (and reads the same environment
//! and `--config` file), so an operator can see what a start-up would use, and
//! why, before starting: every setting as TOML, secrets masked, each with its
//! source. It is also a check: an invalid setting makes it exit non-zero with
//! the same message as `hub serve`.

use clap::{ArgMatches, Subcommand};

use crate::config::{ServeArgs, load};

/// `hub config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration of `hub serve` as TOML: every
    /// setting (defaults included), secrets masked, each line ending with
    /// where its value came from (flag, env, file or default). Exits
    /// non-zero when a setting is invalid.
    #[command(after_help = crate::config::PRECEDENCE_HELP)]
    Print(Box<ServeArgs>),
}

/// Runs `hub config <cmd>`; `matches` are those of the subcommand itself
/// (they tell which settings came from flags or the environment).
pub fn run_config(cmd: &ConfigCommand, matches: &ArgMatches) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Print(_) => {
            let loaded = load(matches)?;
            print!("{}", loaded.to_toml());
            loaded.config()?;
            Ok(())
        }
    }
}
