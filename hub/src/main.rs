//! The `hub` binary: parses the command line and hands over to the library.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use hub::config::{LogFormat, ServeArgs};

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
    #[command(after_help = hub::config::PRECEDENCE_HELP)]
    Serve(Box<ServeArgs>),
    /// Manage devices (add, list, revoke, rotate).
    #[command(subcommand)]
    Device(hub::cli::DeviceCommand),
    /// Manage operator API keys and their roles (add, list, revoke).
    #[command(subcommand)]
    Apikey(hub::cli::ApiKeyCommand),
    /// Show the configuration `hub serve` would run with.
    #[command(subcommand)]
    Config(hub::cli::ConfigCommand),
    /// Ask a running hub for its devices, rates and queues (GET /api/v1/status).
    Status(hub::cli::status::StatusArgs),
    /// Write a local CA, a server certificate and device certificates (PEM)
    /// for development and tests.
    DevCerts(hub::cli::DevCertsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The matches are kept beside the parsed Cli: they tell which settings
    // came from flags or the environment, so the config file can fill the rest.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    match cli.command {
        Command::Serve(_) => serve(leaf(&matches)).await,
        Command::Config(cmd) => hub::cli::run_config(&cmd, leaf(&matches)),
        Command::Device(cmd) => hub::cli::run_device(cmd).await,
        Command::Apikey(cmd) => hub::cli::run_apikey(cmd).await,
        Command::Status(args) => hub::cli::status::run(args).await,
        Command::DevCerts(args) => hub::cli::run_dev_certs(&args),
    }
}

/// The matches of the innermost subcommand (`serve`, `config print`).
fn leaf(matches: &ArgMatches) -> &ArgMatches {
    let mut leaf = matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    leaf
}

async fn serve(matches: &ArgMatches) -> anyhow::Result<()> {
    let loaded = hub::config::load(matches)?;
    init_tracing(loaded.log_format());
    let mut config = loaded.config()?;
    config.limits.max_connections = fit_fd_limit(
        hub::fd_limit::raise_to_hard(),
        config.limits.max_connections,
    );
    let listener = hub::listener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    hub::server::run(config, listener, shutdown).await?;
    Ok(())
}

/// Says how many connections the open-file limit allows and returns the
/// connection cap to use: `--max-connections`, or lower when the limit is
/// (a newcomer past it is then refused cleanly, not failed with EMFILE).
fn fit_fd_limit(limit: hub::fd_limit::FdLimit, max_connections: usize) -> usize {
    let ceiling = limit.connection_ceiling();
    tracing::info!(
        soft = ?limit.soft,
        hard = ?limit.hard,
        raised_from = ?limit.raised_from,
        connections = ?ceiling,
        "open-file limit"
    );
    match ceiling.and_then(|c| usize::try_from(c).ok()) {
        Some(ceiling) if ceiling < max_connections => {
            tracing::warn!(
                max_connections,
                connections = ceiling,
                hard = ?limit.hard,
                "the open-file limit allows fewer connections than --max-connections: capping \
                 connections there; raise the hard limit (systemd LimitNOFILE=, ulimit -Hn, the \
                 container's nofile ulimit) to hold more"
            );
            ceiling.max(1)
        }
        _ => max_connections,
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // One JSON object per line; the current span and the span list put
        // the `device` id of a connection's span on every event inside it.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
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
