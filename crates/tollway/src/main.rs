//! The `tollway` command: the daemon, the operator CLI that talks to it, and the lab.

mod output;
mod speedtest;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tollway_api::Client;

const DEFAULT_CONFIG: &str = "/etc/tollway/tollway.toml";

#[derive(Parser)]
#[command(name = "tollway", version, about = "Buy and sell bandwidth with the routers next to you.")]
struct Cli {
    /// More log output (-v: debug, -vv: trace) for commands that log.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Target {
    /// The daemon's API socket. Default: the `api_socket` of --config; else $TOLLWAY_SOCKET
    /// (which `tollway lab exec` sets to the node's socket); else the `api_socket` of
    /// /etc/tollway/tollway.toml if it exists; else /run/tollway/tollway.sock.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The daemon's config file, to find its API socket.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if self.config.is_none() {
            if let Some(s) = std::env::var_os("TOLLWAY_SOCKET").filter(|s| !s.is_empty()) {
                return Ok(s.into());
            }
        }
        let config = self.config.clone().or_else(|| Path::new(DEFAULT_CONFIG).exists().then(|| DEFAULT_CONFIG.into()));
        match config {
            Some(path) => Ok(tollway_daemon::Config::load(&path)?.api_socket),
            None => Ok("/run/tollway/tollway.sock".into()),
        }
    }

    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.socket()?)?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Daemon {
        /// Config file (TOML; see docs/config.md).
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a config file and print the settings in effect.
    CheckConfig {
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show this node and its neighbors.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show or change prices at run time (no restart needed).
    Price {
        #[command(subcommand)]
        action: PriceAction,
    },
    /// Pause or resume outgoing payments.
    Payments {
        #[command(subcommand)]
        action: PaymentsAction,
        #[command(flatten)]
        target: Target,
    },
    /// Ledger history, newest first: usage per minute; payments and price changes, successive ones
    /// with a neighbor within a minute sharing a row (NOTES, "changes this minute").
    Ledger {
        #[command(flatten)]
        target: Target,
        /// Only this neighbor (its id, or a unique prefix as shown by `tollway status`).
        #[arg(long)]
        neighbor: Option<String>,
        /// At most this many rows of each kind.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Routing: how this node routes, the uplink and LAN, and every route its router knows
    /// (installed or not), with the neighbor each goes through.
    Routes {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve speed tests (foreground; for an init system) with its own key. docs/speedtest.md
    SpeedtestServer(speedtest::ServerArgs),
    /// Run one speed test against a server and print its verified receipt.
    Speedtest(speedtest::ClientArgs),
    /// Run a whole mesh on this machine in network namespaces.
    #[command(subcommand)]
    Lab(tollway_lab::LabCommand),
}

#[derive(Subcommand)]
enum PriceAction {
    /// Our prices and settings.
    Show {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Change our ask, our max price or our bid policy (decimal amounts in the currency). Kept
    /// across restarts, overriding the config file, until `price reset`.
    Set {
        #[command(flatten)]
        target: Target,
        /// Our price per MB.
        #[arg(long)]
        ask: Option<String>,
        /// The most we pay per MB.
        #[arg(long)]
        max_price: Option<String>,
        /// "ask" to pay what neighbors ask, or a fixed amount per MB for more priority.
        #[arg(long)]
        bid: Option<String>,
    },
    /// Forget the prices, bid and payment pause set at run time: back to the config file.
    Reset {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum PaymentsAction {
    Pause,
    Resume,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose > 0 && std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", if cli.verbose > 1 { "trace" } else { "debug" });
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Daemon { config } => {
            tollway_daemon::run(&config)?;
            Ok(0)
        }
        Command::CheckConfig { config } => {
            let cfg = tollway_daemon::Config::load(&config)?;
            let warnings = tollway_daemon::warnings::warnings(&cfg, &tollway_daemon::warnings::existing_interfaces());
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{config:?}: ok{}",
                if warnings.is_empty() { String::new() } else { format!(" ({} warnings)", warnings.len()) }
            );
            println!("{cfg:#?}");
            Ok(0)
        }
        Command::Status { target, json } => {
            let status = target.client()?.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", output::status_table(&status));
            }
            Ok(0)
        }
        Command::Price { action: PriceAction::Show { target, json } } => {
            let m = target.client()?.status()?.node.market;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print!("{}", output::market_table(&m));
            }
            Ok(0)
        }
        Command::Price { action: PriceAction::Set { target, ask, max_price, bid } } => {
            if ask.is_none() && max_price.is_none() && bid.is_none() {
                anyhow::bail!("nothing to set: give --ask, --max-price and/or --bid");
            }
            let m: tollway_api::MarketStatus =
                target.client()?.call_typed(&tollway_api::Request::PriceSet { ask, max_price, bid })?;
            print!("{}", output::market_table(&m));
            Ok(0)
        }
        Command::Price { action: PriceAction::Reset { target } } => {
            let m: tollway_api::MarketStatus = target.client()?.call_typed(&tollway_api::Request::PriceReset)?;
            print!("{}", output::market_table(&m));
            Ok(0)
        }
        Command::Payments { action, target } => {
            let paused = matches!(action, PaymentsAction::Pause);
            let m: tollway_api::MarketStatus =
                target.client()?.call_typed(&tollway_api::Request::Payments { paused })?;
            println!("outgoing payments {}", if m.payments_paused { "paused" } else { "running" });
            Ok(0)
        }
        Command::Ledger { target, neighbor, limit, json } => {
            let l = target.client()?.ledger(neighbor, Some(limit), None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                print!("{}", output::ledger_tables(&l));
            }
            Ok(0)
        }
        Command::Routes { target, json } => {
            let r = target.client()?.routes()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", output::routes_table(&r.routing, &r.routes));
            }
            Ok(0)
        }
        Command::SpeedtestServer(args) => speedtest::serve(args),
        Command::Speedtest(args) => speedtest::test(args),
        Command::Lab(cmd) => {
            let exe = std::env::current_exe().context("finding the tollway executable")?;
            let code = tollway_lab::run(cmd, &exe)?;
            Ok(code.clamp(0, 255) as u8)
        }
    }
}
