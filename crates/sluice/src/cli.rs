//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Sluice: an API gateway and reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default command).
    Run(RunArgs),
    /// Check a configuration file and exit: 0 when valid, 1 with one line per problem.
    Validate(ValidateArgs),
    /// Print the version.
    Version,
}

impl Default for Command {
    fn default() -> Self {
        Command::Run(RunArgs {
            config: None,
            log_format: LogFormat::Pretty,
            upgrade: false,
        })
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file; without one, the built-in default runs.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Take the listening sockets over from the sluice running on this configuration's
    /// `server.upgrade_socket`; once this process accepts, the old one drains and exits.
    #[arg(long)]
    pub upgrade: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Configuration file to check.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}
