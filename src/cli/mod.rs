//! The `pgshard` command line: one file per subcommand. Glue only: no protocol or routing logic here.

pub mod check;
pub mod demo;
pub mod locate;
pub mod map;
mod moves;
pub mod rebalance;
pub mod serve;

use clap::{Parser, Subcommand};

/// pgshard: sharding router and connection pooler for PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "pgshard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(serve::ServeArgs),
    /// Validate a config file; exits non-zero with a message naming the key at fault.
    Check(check::CheckArgs),
    /// Print the slot and owning shard of a shard key.
    Locate(locate::LocateArgs),
    /// The live shard map kept in the catalog: `map show`.
    Map(map::MapArgs),
    /// Move slots between shards: `rebalance plan | move | apply | status | resume | abort`.
    Rebalance(rebalance::RebalanceArgs),
    /// Start two local shards (each a PostgreSQL primary + replica) with pgshard in front of them.
    Demo(demo::DemoArgs),
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::Locate(args) => locate::run(args),
        Command::Map(args) => map::run(args),
        Command::Rebalance(args) => rebalance::run(args),
        Command::Demo(args) => demo::run(args),
    }
}
