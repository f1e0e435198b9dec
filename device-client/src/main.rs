//! `berqenas-device`: enrolls an edge device and keeps its tunnel up. This release only
//! identifies itself; enrollment arrives with the device work (see ARCHITECTURE.md).

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "berqenas-device", version, about = "Berqenas device client (enrollment is not in this release yet)")]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("berqenas-device {}: no subcommands in this release; see --help", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
