//! The subcommands' bodies (kept out of `main.rs` so it stays a table of contents).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use callbox::auth::{self, Claims};
use callbox::server::ServerConfig;

/// Exit code for an invalid configuration (sysexits EX_CONFIG), which systemd and
/// integrators can tell apart from a crash.
pub const EXIT_CONFIG: u8 = 78;

/// Logs to journald under systemd, else stderr, filtered by `RUST_LOG` (default
/// `default_level`).
pub fn init_logging(default_level: &str) {
    callbox::logging::init(default_level);
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// `callbox server`.
pub fn server(
    config: Option<PathBuf>,
    listen: Option<String>,
    dev: bool,
    dev_public: bool,
) -> anyhow::Result<ExitCode> {
    let load = move || server_config(config.as_deref(), listen.as_deref(), dev, dev_public);
    let cfg = match load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("callbox server: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    cfg.log.apply();
    if cfg.dev {
        tracing::warn!("dev mode: anyone who reaches this server can get tokens for app 1234 from /dev/token");
    }
    if cfg.apps.is_empty() {
        tracing::warn!("no [[apps]] configured: every login will fail with APP_ID_MISMATCH");
    }
    runtime()?.block_on(callbox::server::run(cfg, Some(Box::new(load))))?;
    Ok(ExitCode::SUCCESS)
}

/// The server's configuration: the file, the environment, `--listen` and the dev flags (at
/// start, and again at each SIGHUP).
fn server_config(
    config: Option<&Path>,
    listen: Option<&str>,
    dev: bool,
    dev_public: bool,
) -> Result<ServerConfig, callbox::config_file::ConfigError> {
    let mut cfg = ServerConfig::load(config, &callbox::config_file::callbox_env())?;
    if let Some(l) = listen {
        cfg.listen = l.to_string();
        cfg.validate()?;
    }
    if dev {
        cfg.dev = true;
        if !cfg.apps.iter().any(|a| a.app_id == callbox::server::DEV_APP_ID) {
            cfg.apps.push(callbox::server::config::AppConfig::new(
                callbox::server::DEV_APP_ID,
                callbox::server::DEV_SECRET,
            ));
        }
    }
    cfg.dev_public = dev_public;
    cfg.check_exposure()?;
    Ok(cfg)
}

/// Arguments of `callbox token`.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// The AppID.
    #[arg(long)]
    app_id: u32,
    /// The app secret, 64 hex characters.
    #[arg(long, env = "CALLBOX_APP_SECRET", hide_env_values = true)]
    secret: String,
    /// The user the token is for (`*` with the admin privilege: any).
    #[arg(long)]
    user: String,
    /// Restrict to one room.
    #[arg(long)]
    room: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Comma-separated: login, publish, play, admin, door.
    #[arg(long, value_delimiter = ',', default_value = "login,publish,play")]
    privileges: Vec<String>,
    /// Comma-separated stream IDs the token may publish or play (default: any).
    #[arg(long, value_delimiter = ',')]
    streams: Option<Vec<String>>,
}

/// `callbox token`.
/// `callbox webhook ...`.
#[derive(clap::Subcommand)]
pub enum WebhookCommand {
    /// Check a delivery's `Callbox-Signature` against its body (read from stdin): exit 0 when
    /// it checks out, 1 when not (the reason on stderr).
    Verify {
        /// The app's webhook secret.
        #[arg(long, env = "CALLBOX_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// The `Callbox-Signature` header's value.
        #[arg(long)]
        signature: String,
        /// The largest accepted distance of its timestamp from now, seconds.
        #[arg(long, default_value_t = 300)]
        tolerance: u64,
    },
}

/// Runs a `callbox webhook` command.
pub fn webhook(c: WebhookCommand) -> anyhow::Result<ExitCode> {
    match c {
        WebhookCommand::Verify { secret, signature, tolerance } => {
            use std::io::Read;
            let mut body = String::new();
            std::io::stdin().read_to_string(&mut body)?;
            let now = auth::unix_now();
            match callbox::server::webhooks::sign::verify(secret.as_bytes(), &signature, &body, now, tolerance) {
                Ok(()) => {
                    println!("ok");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("callbox webhook verify: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

pub fn token(a: TokenArgs) -> anyhow::Result<ExitCode> {
    let key = auth::parse_secret(&a.secret)?;
    auth::check_privileges(&a.privileges)?;
    if a.user != "*" {
        callbox::proto::ids::check_user_id(&a.user).map_err(|c| {
            anyhow::anyhow!(
                "--user: invalid user ID ({c}): 1 to 63 bytes of printable ASCII, no spaces (or * with admin)"
            )
        })?;
    }
    if let Some(r) = &a.room {
        callbox::proto::ids::check_room_id(r).map_err(|c| {
            anyhow::anyhow!("--room: invalid room ID ({c}): 1 to 127 bytes of printable ASCII, no spaces")
        })?;
    }
    if a.ttl == 0 {
        anyhow::bail!("--ttl must be at least 1 second");
    }
    let now = auth::unix_now();
    let claims = Claims {
        app_id: a.app_id,
        user_id: a.user,
        room_id: a.room,
        privileges: a.privileges,
        streams: a.streams,
        nbf: None,
        dk: None,
        iat: now,
        exp: now + a.ttl,
    };
    println!("{}", auth::mint(&key, &claims)?);
    Ok(ExitCode::SUCCESS)
}

/// Which config file `check-config` validates.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ConfigKind {
    /// `callbox server` config.
    Server,
    /// `callbox device` config.
    Device,
}

/// `callbox check-config`.
pub fn check_config(file: &Path, kind: Option<ConfigKind>) -> anyhow::Result<ExitCode> {
    let kind = kind.unwrap_or_else(|| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        match text.parse::<toml::Table>() {
            Ok(t) if t.contains_key("room") => ConfigKind::Device,
            _ => ConfigKind::Server,
        }
    });
    // Valid but unsafe in the field: WARN on stderr, exit 0. Invalid: the error, exit 78.
    let result = match kind {
        ConfigKind::Server => ServerConfig::load(Some(file), &callbox::config_file::callbox_env())
            .and_then(|c| c.check_exposure().map(|_| c.warnings())),
        ConfigKind::Device => {
            callbox::device::config::DeviceConfig::load(Some(file), &callbox::config_file::callbox_env())
                .map(|c| c.warnings())
        }
    };
    match result {
        Ok(warnings) => {
            for w in &warnings {
                eprintln!("WARN: {w}");
            }
            println!("{}: valid", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// `callbox device`: loads the config (exit 78 when invalid) and runs the daemon.
pub fn device(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use callbox::device::{config::DeviceConfig, daemon};
    let path = config.unwrap_or_else(|| PathBuf::from(callbox::device::config::DEFAULT_PATH));
    let cfg = match DeviceConfig::load(Some(&path), &callbox::config_file::callbox_env()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(callbox_event = "config_invalid", "{}: {e}", path.display());
            eprintln!("callbox: {}: {e}", path.display());
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    cfg.log.apply();
    runtime()?.block_on(async {
        match daemon::Daemon::start(cfg, callbox::device::systemd::Notifier::from_env()).await {
            Ok(d) => {
                d.with_config_path(path.clone()).run().await;
                Ok(ExitCode::SUCCESS)
            }
            Err(daemon::StartError::Config(e)) => {
                eprintln!("callbox: {}: {e}", path.display());
                Ok(ExitCode::from(EXIT_CONFIG))
            }
            Err(e) => Err(anyhow::anyhow!(e)),
        }
    })
}

/// Where the control socket is: `--socket`, else the one named in the device config, else
/// the default.
pub fn control_socket(socket: Option<PathBuf>, config: Option<PathBuf>) -> PathBuf {
    use callbox::device::config::{DEFAULT_PATH, DEFAULT_SOCKET, DeviceConfig};
    if let Some(s) = socket {
        return s;
    }
    let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    DeviceConfig::load(Some(&path), &callbox::config_file::callbox_env())
        .map(|c| c.control.socket_path())
        .unwrap_or_else(|_| PathBuf::from(DEFAULT_SOCKET))
}

/// The control request of `callbox call <action> [value]`, or why the value is wrong.
pub fn call_request(
    action: callbox::device::control::CallAction,
    value: Option<&str>,
) -> Result<callbox::device::control::Request, String> {
    use callbox::device::control::{CallAction as A, Request};
    let on = |what: &str| match value {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err(format!("{what} takes on or off")),
    };
    match action {
        A::Camera => Ok(Request::Camera { on: on("camera")? }),
        A::Speaker => Ok(Request::Speaker { on: on("speaker")? }),
        A::Volume => match value.and_then(|v| v.parse::<u32>().ok()) {
            Some(percent) if percent <= callbox::engine::MAX_VOLUME => Ok(Request::Volume { percent }),
            _ => Err("volume takes a percent, 0..=200".into()),
        },
        _ if value.is_some() => Err(format!("{action:?} takes no value").to_lowercase()),
        action => Ok(Request::Call { action }),
    }
}

/// Sends one control request and prints the answer (`json`: the status as JSON).
pub fn control(socket: &Path, req: callbox::device::control::Request, json: bool) -> anyhow::Result<ExitCode> {
    let resp = runtime()?.block_on(callbox::device::control::request(socket, &req))?;
    if !resp.ok {
        eprintln!(
            "callbox: {} ({})",
            resp.error.as_deref().unwrap_or("refused"),
            resp.code.as_deref().unwrap_or("error")
        );
        return Ok(ExitCode::from(1));
    }
    match (resp.status, json) {
        (Some(s), true) => println!("{}", serde_json::to_string_pretty(&s)?),
        (Some(s), false) => print!("{}", s.to_text()),
        (None, _) => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `callbox doctor`.
pub fn doctor(config: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let path = config.unwrap_or_else(|| PathBuf::from(callbox::device::config::DEFAULT_PATH));
    let ok = runtime()?.block_on(callbox::device::doctor::run(&path, json));
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
