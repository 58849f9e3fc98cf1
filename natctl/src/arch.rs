//! `natctl arch …`: offline architecture commands (owned by the nat-arch work).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ArchCommand {
    /// List the preset architectures, one a line.
    List,
}

pub fn run(cmd: ArchCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        ArchCommand::List => anyhow::bail!("not built yet"),
    }
}
