//! The `hub` binary: parses the command line and hands over to the library.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hub::config::{ServeArgs, ServeConfig};

/// IoT telemetry and control hub.
#[derive(Debug, Parser)]
#[command(name = "hub", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: device WebSocket endpoint and HTTP API.
    Serve(Box<ServeArgs>),
    /// Manage devices (add, list, revoke).
    #[command(subcommand)]
    Device(hub::cli::DeviceCommand),
    /// Manage operator API keys (add, list, revoke).
    #[command(subcommand)]
    Apikey(hub::cli::ApiKeyCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Device(cmd) => hub::cli::run_device(cmd).await,
        Command::Apikey(cmd) => hub::cli::run_apikey(cmd).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = ServeConfig::try_from(args)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    hub::server::run(config, listener, shutdown).await?;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}
