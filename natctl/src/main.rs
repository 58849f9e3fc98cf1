//! `natctl`: the user's command line for nat-orchestrator.
//!
//! `natctl arch …` works offline on architectures; every other command talks to a coordinator.

use clap::{Parser, Subcommand};

mod arch;
mod client;
mod jobfile;

#[derive(Debug, Parser)]
#[command(
    name = "natctl",
    version,
    about = "Command-line client for nat-orchestrator"
)]
struct Cli {
    /// Coordinator gRPC URL (commands other than `arch`).
    #[arg(
        long,
        global = true,
        env = "NAT_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
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
        Command::Client(cmd) => client::run(cmd, &cli.coordinator),
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
