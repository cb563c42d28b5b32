//! The `callbox` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod cli;
mod demo;

/// Room-based real-time calls for Linux single-board computers.
#[derive(Parser)]
#[command(name = "callbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the room server.
    Server {
        /// Config file (TOML); defaults apply when absent.
        #[arg(long, env = "CALLBOX_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overrides the config's `listen`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Print a token signed with an app secret.
    Token(cli::TokenArgs),
    /// Validate a config file and exit (0 valid, 78 invalid).
    CheckConfig {
        /// The file.
        file: PathBuf,
        /// Which kind of config it is (default: a file with a `[room]` table is a device config).
        #[arg(long, value_enum)]
        kind: Option<cli::ConfigKind>,
    },
    /// Print benchmark figures (login time on loopback).
    Bench(bench::BenchArgs),
    /// Run the demo: a local server and engines in room `demo`.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and bench print their own lines; their logs stay quiet unless RUST_LOG asks.
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Bench(_));
    cli::init_logging(if quiet { "warn" } else { "info" });
    let result = match cli.command {
        Command::Server { config, listen } => cli::server(config, listen),
        Command::Token(args) => cli::token(args),
        Command::CheckConfig { file, kind } => cli::check_config(&file, kind),
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("callbox: {e:#}");
            ExitCode::from(1)
        }
    }
}
