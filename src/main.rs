//! The `pgshard` binary: parses the command line and hands over to [`pgshard::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match pgshard::cli::run(pgshard::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            eprintln!("pgshard: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
