//! `device-sim`: many simulated devices streaming telemetry to a hub.
//!
//! Parses the command line, sets up logging, runs the simulation and turns
//! its summary into output and an exit code. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use device_sim::args::Args;
use device_sim::{driver, report};

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("device-sim: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(driver::run(&args)) {
        Ok(summary) => {
            report::print_summary(&summary, args.json);
            summary.exit_code()
        }
        Err(err) => {
            eprintln!("device-sim: {err:#}");
            ExitCode::FAILURE
        }
    }
}
