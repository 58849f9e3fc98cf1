//! Commands that talk to a coordinator over gRPC (owned by the coordinator work).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List jobs.
    Jobs,
}

pub fn run(cmd: ClientCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        ClientCommand::Jobs => anyhow::bail!("not built yet"),
    }
}
