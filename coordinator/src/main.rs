//! `berqenas-coordinator`: runs a coordinator (`init`, `serve`) and is the admin CLI.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = berqenas_coordinator::cli::Cli::parse();
    let serving = matches!(cli.command, berqenas_coordinator::cli::Command::Serve(_));
    let default_level = if serving { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default_level},openraft=warn"))),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(berqenas_coordinator::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
