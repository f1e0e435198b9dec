//! `berqenas-device`: enrolls an edge device with a one-time token, keeps its WireGuard tunnel to
//! the tenant's gateway up, heartbeats and renews its certificate, and relays events from local
//! programs to the tenant's realtime ingest. Linux (x86_64, aarch64 musl) and Windows
//! (x86_64-pc-windows-gnu); see ARCHITECTURE.md, "The device client".

mod connect;
mod enroll;
mod events;
mod exec;
mod export;
mod fingerprint;
mod keys;
mod run;
mod state;
mod status;
mod tunnel;
#[cfg(windows)]
mod windows;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "berqenas-device", version, about = "Berqenas device client: enroll, tunnel, events")]
struct Cli {
    /// Where the device keeps its keys, certificate and configuration.
    #[arg(long, global = true, env = "BERQENAS_DEVICE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrolls this device with a device token: makes its keys here, sends only public halves.
    Enroll {
        /// https://HOST:PORT of a coordinator's node listener.
        #[arg(long)]
        coordinator: String,
        /// The device token (bqd_…), as printed by `device token create`.
        #[arg(long, env = "BERQENAS_DEVICE_TOKEN", hide_env_values = true)]
        token: String,
        /// sha256:<hex> of the cluster CA, as printed by `device token create`.
        #[arg(long)]
        ca_pin: Option<String>,
        /// Device name when the token names none.
        #[arg(long)]
        name: Option<String>,
        /// WireGuard interface (tunnel) name.
        #[arg(long, default_value = "bqd0")]
        interface: String,
    },
    /// Brings the tunnel up (WireGuard to the tenant's gateway).
    Up,
    /// Takes the tunnel down.
    Down,
    /// Tunnel, last handshake, coordinator reachability, certificate expiry, device state.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Service mode: heartbeats, certificate renewal, tunnel upkeep, event relay.
    Run {
        /// Started by the Windows service control manager.
        #[arg(long, hide = true)]
        service: bool,
    },
    /// Publishes one event (through `run` when it is up, else directly).
    Send {
        /// Event type (at most 100 characters).
        #[arg(long = "type")]
        kind: String,
        /// A JSON document.
        #[arg(long)]
        payload: String,
    },
    /// Prints the tunnel as a WireGuard configuration (for the official apps) or its QR code.
    Export {
        #[arg(long, value_enum)]
        format: ExportFormat,
    },
    /// Renews the device's certificate now (`run` does it at two thirds of its life).
    Renew,
    /// Prints what the device reports about itself (hashed MACs and machine id, OS, arch).
    Fingerprint,
    /// Windows: installs or removes the `run` service (restarts on failure).
    #[cfg(windows)]
    Service {
        #[arg(value_enum)]
        action: windows::service::Action,
    },
    /// Prints the shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(berqenas_common::manual::CompletionsArgs),
    /// Prints the man page, or writes every page (one per subcommand) with --dir.
    Man(berqenas_common::manual::ManArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    #[value(name = "wg-quick")]
    WgQuick,
    Qr,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("berqenas-device: {e:#}");
        std::process::exit(1);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the async runtime")
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Completions(a) => {
            berqenas_common::manual::completions(<Cli as clap::CommandFactory>::command(), a, &mut std::io::stdout());
            return Ok(());
        }
        Command::Man(a) => {
            berqenas_common::manual::man(<Cli as clap::CommandFactory>::command(), a, &mut std::io::stdout())
                .context("write the man pages")?;
            return Ok(());
        }
        _ => {}
    }
    let dir = state::StateDir::new(cli.state_dir.unwrap_or_else(state::default_dir));
    match cli.command {
        Command::Fingerprint => {
            let fp = fingerprint::collect();
            println!("{}", serde_json::to_string_pretty(&fp)?);
            Ok(())
        }
        Command::Export { format } => {
            let text = export::wg_quick(&dir.load()?, &dir.wg_private_key()?)?;
            match format {
                ExportFormat::WgQuick => print!("{text}"),
                ExportFormat::Qr => print!("{}", export::qr(&text)?),
            }
            Ok(())
        }
        Command::Enroll { coordinator, token, ca_pin, name, interface } => {
            let args = enroll::EnrollArgs { coordinator, token, ca_pin, name, interface };
            let enrolled = runtime()?.block_on(enroll::enroll(&dir, args))?;
            println!("{}", enroll::summary(&enrolled));
            Ok(())
        }
        Command::Up => runtime()?.block_on(tunnel::up_command(&dir)),
        Command::Down => runtime()?.block_on(tunnel::down_command(&dir)),
        Command::Status { json } => runtime()?.block_on(status::print(&dir, json)),
        Command::Renew => runtime()?.block_on(run::renew_command(&dir)),
        Command::Send { kind, payload } => runtime()?.block_on(events::send_command(&dir, &kind, &payload)),
        #[cfg(windows)]
        Command::Run { service: true } => windows::service::run_as_service(dir),
        Command::Run { .. } => runtime()?.block_on(run::run(dir, run::shutdown_signal())),
        #[cfg(windows)]
        Command::Service { action } => windows::service::manage(&dir, action),
        Command::Completions(_) | Command::Man(_) => Ok(()),
    }
}
