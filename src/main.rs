//! The `pgshard` binary: parses the command line and hands over to [`pgshard::cli`].

use clap::Parser;

fn main() -> anyhow::Result<()> {
    pgshard::cli::run(pgshard::cli::Cli::parse())
}
