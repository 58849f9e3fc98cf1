//! `natctl`: the user's command line for nat-orchestrator.
//!
//! `natctl arch …` (architectures) and `natctl dataset …` (dataset folders) work offline; every
//! other command talks to a coordinator, over TLS for an `https://` URL and with a bearer token
//! when one is given (`nat_client::ConnectArgs`: `--ca-cert`, `--cert`/`--key`, `--token`,
//! `--token-file`; docs/CLI.md, "Connecting securely").
//! Every command that prints data takes `-o json|yaml|table` (docs/CLI.md documents each JSON
//! shape); `natctl completions SHELL` prints a shell completion script.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod arch;
mod client;
mod dataset;
mod jobfile;
mod output;
mod policy; // optimize (h8)
mod report;
mod result;
mod submit;
mod token;
mod view;
mod watch;

use output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "natctl",
    version,
    about = "Command-line client for nat-orchestrator"
)]
struct Cli {
    /// Coordinator gRPC URL (commands other than `arch`); several, comma-separated, are tried in
    /// order until one connects.
    #[arg(
        long,
        global = true,
        env = "NAT_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    #[command(flatten)]
    connect: nat_client::ConnectArgs,
    /// Output format of commands that print data: a table for people, or JSON / YAML whose
    /// field names are stable (docs/CLI.md). `watch -o json` prints JSON Lines.
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "NAT_OUTPUT",
        value_enum,
        default_value_t = Output::Table
    )]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline commands on architectures (no coordinator needed).
    #[command(subcommand)]
    Arch(arch::ArchCommand),
    /// Check a dataset folder before training on it (no coordinator needed).
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    #[command(flatten)]
    Client(client::ClientCommand),
    /// List stored NAT policies (id, space, version, rewards, source job).
    Policies {
        /// Same as `-o json`.
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Print a stored policy's transformation of an architecture as a DARTS string (no training).
    Transform(policy::TransformArgs),
    /// API tokens (admin role): create, list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Print a shell completion script to stdout.
    ///
    /// E.g. `natctl completions bash > /etc/bash_completion.d/natctl` (docs/CLI.md).
    Completions {
        /// bash | zsh | fish | elvish | powershell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let output = cli.output;
    let remote = client::Remote {
        urls: &cli.coordinator,
        connect: &cli.connect,
    };
    let result = match cli.command {
        Command::Arch(cmd) => arch::run(cmd, output),
        Command::Dataset(cmd) => dataset::run(cmd, output),
        Command::Client(cmd) => client::run(cmd, remote, output),
        // optimize (h8)
        Command::Policies { json } => {
            policy::run(policy::PolicyCommand::List, remote, output.or_json(json))
        }
        Command::Transform(a) => policy::run(policy::PolicyCommand::Transform(a), remote, output),
        Command::Token(cmd) => token::run(cmd, remote, output),
        Command::Completions { shell } => completions(shell),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One clear line with the whole cause chain, never a panic.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the completion script of `shell` to stdout.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "natctl", &mut script);
    output::emit(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}
