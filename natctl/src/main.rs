//! `natctl`: the user's command line for nat-orchestrator.
//!
//! `natctl arch …` works offline on architectures; every other command talks to a coordinator.

use clap::{Parser, Subcommand};

mod arch;
mod client;
mod jobfile;
mod policy; // optimize (h8)
mod report;
mod watch;

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
    /// List stored NAT policies (id, space, version, rewards, source job).
    Policies {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a stored policy's transformation of an architecture as a DARTS string (no training).
    Transform(policy::TransformArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Arch(cmd) => arch::run(cmd),
        Command::Client(cmd) => client::run(cmd, &cli.coordinator),
        // optimize (h8)
        Command::Policies { json } => {
            policy::run(policy::PolicyCommand::list(json), &cli.coordinator)
        }
        Command::Transform(a) => policy::run(policy::PolicyCommand::Transform(a), &cli.coordinator),
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
