//! The `callbox` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use callbox::device::control::Request;
use clap::{Parser, Subcommand};

mod cli;
mod demo;
mod peer;

/// Room-based real-time calls for Linux single-board computers.
#[derive(Parser)]
#[command(name = "callbox", version = callbox::BUILD, about)]
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
        /// Development mode: adds the dev app (1234, the public demo secret) and lets the
        /// browser page fetch its tokens from /dev/token. Never on a reachable server.
        #[arg(long)]
        dev: bool,
        /// Allow --dev on a non-loopback listen address (a lab network, never the internet).
        #[arg(long, requires = "dev")]
        dev_public: bool,
    },
    /// Print a token signed with an app secret.
    Token(cli::TokenArgs),
    /// Read a desk's password from stdin and print its hash for `[[desks]] password`.
    DeskPassword,
    /// Webhook tools for receivers.
    Webhook {
        #[command(subcommand)]
        command: cli::WebhookCommand,
    },
    /// Validate a config file and exit (0 valid, 78 invalid).
    CheckConfig {
        /// The file.
        file: PathBuf,
        /// Which kind of config it is (default: a file with a `[room]` table is a device config).
        #[arg(long, value_enum)]
        kind: Option<cli::ConfigKind>,
    },
    /// Run the device daemon (what runs on the board, normally under systemd).
    Device {
        /// Device config (default /etc/callbox/device.toml).
        #[arg(long, env = "CALLBOX_DEVICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show the running device's status (room, call, streams, encoder, GPIO, errors).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Control the running device's call.
    Call {
        /// join, leave, mute, unmute; camera on|off, speaker on|off, volume 0..=200.
        #[arg(value_enum)]
        action: callbox::device::control::CallAction,
        /// `on`/`off` for camera and speaker, percent for volume.
        value: Option<String>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Simulated GPIO (backend "sim"): press a button of the running device.
    Gpio {
        #[command(subcommand)]
        command: GpioCommand,
    },
    /// Check this board for what callbox needs: one PASS/WARN/FAIL line per check.
    Doctor {
        /// Device config (default /etc/callbox/device.toml).
        #[arg(long, env = "CALLBOX_DEVICE_CONFIG")]
        config: Option<PathBuf>,
        /// One JSON object: every check and the counts.
        #[arg(long)]
        json: bool,
    },
    /// A scriptable room member (tests, field checks): publishes a test pattern, plays the
    /// others, prints JSON lines.
    Peer(peer::PeerArgs),
    /// Run the demo: a local server and engines in room `demo`.
    Demo(demo::DemoArgs),
}

/// Where the running device's control socket is.
#[derive(clap::Args)]
struct SocketArgs {
    /// The control socket (default: the one named in the device config).
    #[arg(long, env = "CALLBOX_SOCKET")]
    socket: Option<PathBuf>,
    /// The device config naming the socket (default /etc/callbox/device.toml).
    #[arg(long, env = "CALLBOX_DEVICE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum GpioCommand {
    /// Press a button: call, leave, mute or door.
    Press {
        /// The button.
        button: String,
        /// Hold it for a long press.
        #[arg(long)]
        long: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that print their own lines keep their logs quiet unless RUST_LOG asks.
    let quiet = matches!(
        cli.command,
        Command::Demo(_)
            | Command::Doctor { .. }
            | Command::Status { .. }
            | Command::Call { .. }
            | Command::Gpio { .. }
            | Command::Peer(_)
    );
    cli::init_logging(if quiet { "warn" } else { "info" });
    let result = match cli.command {
        Command::Server { config, listen, dev, dev_public } => cli::server(config, listen, dev, dev_public),
        Command::Token(args) => cli::token(args),
        Command::Webhook { command } => cli::webhook(command),
        Command::CheckConfig { file, kind } => cli::check_config(&file, kind),
        Command::Device { config } => cli::device(config),
        Command::DeskPassword => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("callbox desk-password: {e}");
                return ExitCode::from(2);
            }
            let password = line.trim_end_matches(['\n', '\r']);
            if password.len() < 8 {
                eprintln!("callbox desk-password: a password of at least 8 characters, on stdin");
                return ExitCode::from(2);
            }
            println!("{}", callbox::server::desk_password_hash(password));
            return ExitCode::SUCCESS;
        }
        Command::Status { json, socket } => {
            cli::control(&cli::control_socket(socket.socket, socket.config), Request::Status, json)
        }
        Command::Call { action, value, socket } => match cli::call_request(action, value.as_deref()) {
            Ok(req) => cli::control(&cli::control_socket(socket.socket, socket.config), req, false),
            Err(e) => {
                eprintln!("callbox call: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Gpio { command: GpioCommand::Press { button, long, socket } } => {
            cli::control(&cli::control_socket(socket.socket, socket.config), Request::GpioPress { button, long }, false)
        }
        Command::Doctor { config, json } => cli::doctor(config, json),
        Command::Peer(args) => peer::run(args),
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
