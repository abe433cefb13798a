//! The `sluice` command: `run`, `validate`, `version`.

mod cli;
mod log_writer;
mod run;
mod upgrade;

use clap::Parser;
use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command.unwrap_or_default() {
        cli::Command::Run(args) => run::run(args),
        cli::Command::Validate(args) => run::validate(&args),
        cli::Command::Version => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
