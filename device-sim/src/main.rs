//! `device-sim`: many simulated devices streaming telemetry to a hub, or
//! (`device-sim watch`) many browser-stream clients watching them, or
//! (`device-sim connections`) many idle device connections held open.
//!
//! Parses the command line, sets up logging, runs the simulation or the
//! watchers and turns their summary into output and an exit code.
//! Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use device_sim::args::{Args, Command};
use device_sim::{connections, driver, report, watch};

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = match &args.command {
        Some(Command::Connections(conn_args)) => conn_args.runtime(),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("device-sim: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match &args.command {
        Some(Command::Watch(watch_args)) => match runtime.block_on(watch::run(watch_args)) {
            Ok(summary) => {
                watch::summary::print(&summary, watch_args.json);
                summary.exit_code()
            }
            Err(err) => {
                eprintln!("device-sim watch: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Connections(conn_args)) => {
            match runtime.block_on(connections::run(conn_args)) {
                Ok(connections::Outcome::Ran(summary)) => {
                    connections::summary::print(&summary, conn_args.json);
                    summary.exit_code()
                }
                Ok(connections::Outcome::Provisioned {
                    devices,
                    tokens_out,
                }) => {
                    eprintln!(
                        "device-sim connections: {devices} device tokens written to {}",
                        tokens_out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("device-sim connections: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        None => match runtime.block_on(driver::run(&args)) {
            Ok(summary) => {
                report::print_summary(&summary, args.json);
                summary.exit_code()
            }
            Err(err) => {
                eprintln!("device-sim: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}
