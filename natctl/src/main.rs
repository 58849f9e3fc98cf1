//! `natctl`: the user's command line for nat-orchestrator.
//!
//! `natctl arch …` works offline on architectures; every other command talks to a coordinator.

use clap::{Parser, Subcommand};

mod arch;
mod client;

#[derive(Debug, Parser)]
#[command(name = "natctl", version, about = "Command-line client for nat-orchestrator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline commands on architectures (no coordinator needed).
    #[command(subcommand)]
    Arch(arch::ArchCommand),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Arch(cmd) => arch::run(cmd),
        Command::Client(cmd) => client::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One clear line with the whole cause chain, never a panic.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
