//! `berqenas-node-agent`: reconciles a gateway or database host to the desired state its
//! coordinators send. This release only identifies itself; joining and reconciling arrive with
//! the node-join work (see ARCHITECTURE.md, "What exists").

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "berqenas-node-agent",
    version,
    about = "Berqenas node agent (joining and reconciling are not in this release yet)"
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("berqenas-node-agent {}: no subcommands in this release; see --help", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
