//! The `tollway lab` subcommands as a standalone program, for trying the lab before (or
//! without) the `tollway` binary:
//!
//! ```text
//! cargo run -p tollway-lab --example lab -- --daemon target/debug/tollway up examples/lab/chain3.toml
//! ```

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
struct Cli {
    /// The daemon executable (run as `<daemon> daemon --config <file>`).
    #[arg(long, default_value = "tollway")]
    daemon: PathBuf,
    /// More log output.
    #[arg(short, long)]
    verbose: bool,
    #[command(subcommand)]
    cmd: tollway_lab::LabCommand,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = if cli.verbose { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TOLLWAY_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .init();
    let code = tollway_lab::run(cli.cmd, &cli.daemon)?;
    std::process::exit(code)
}
