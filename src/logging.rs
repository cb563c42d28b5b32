//! Where logs go. Under systemd (stderr connected to the journal, `JOURNAL_STREAM` set) each
//! event goes to journald natively with its fields as journal fields: `ROOM_ID`, `USER_ID`,
//! `STREAM_ID`, `STATE`, `ERROR_CODE`, `CALLBOX_EVENT`, ... (`journalctl -u callbox
//! CALLBOX_EVENT=room_state`). Elsewhere, readable lines on stderr. `CALLBOX_LOG=stderr` or
//! `journald` forces one. The level of callbox's own lines is `[log] level` in the config,
//! applied at start and on SIGHUP ([`set_level`]); `RUST_LOG` replaces the whole filter.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Registry, reload};

/// Where the logs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Native journald.
    Journald,
    /// Text on stderr.
    Stderr,
}

/// Which target to use, given `CALLBOX_LOG` and `JOURNAL_STREAM`.
pub fn choose(callbox_log: Option<&str>, journal_stream: bool) -> LogTarget {
    match callbox_log {
        Some("journald") => LogTarget::Journald,
        Some("stderr") => LogTarget::Stderr,
        _ if journal_stream => LogTarget::Journald,
        _ => LogTarget::Stderr,
    }
}

/// The filter when `RUST_LOG` is not set: callbox at `level`, every other crate at warn (the
/// WebRTC stack's info lines would otherwise be most of a call's journal), and two known
/// harmless warnings off: the DTLS layer's missing server name on every connection (WebRTC
/// peers are identified by certificate fingerprints) and the SRTP handler's media written in
/// the few ms before DTLS completes.
pub fn default_filter(level: &str) -> String {
    format!("warn,callbox={level},rtc_dtls=error,rtc::peer_connection::handler=error")
}

/// The levels `[log] level` takes.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// `[log]` in the device and server configs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// callbox's own level: error, warn, info, debug or trace (other crates stay at warn).
    /// SIGHUP applies a change; `RUST_LOG` replaces the whole filter instead.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: "info".into() }
    }
}

impl LogSection {
    /// An error naming `log.level` unless the level is one of [`LEVELS`].
    pub fn validate(&self) -> Result<(), crate::config_file::ConfigError> {
        if LEVELS.contains(&self.level.as_str()) {
            Ok(())
        } else {
            Err(crate::config_file::ConfigError::value(
                "log.level",
                format!("{:?}: must be one of {}", self.level, LEVELS.join(", ")),
            ))
        }
    }

    /// Applies the level to the running filter and logs what happened.
    pub fn apply(&self) {
        match set_level(&self.level) {
            LevelChange::Applied => tracing::debug!(callbox_event = "log_level", "log level {}", self.level),
            LevelChange::RustLogWins => {
                tracing::info!(
                    callbox_event = "log_level",
                    "RUST_LOG is set: it wins over [log] level = {:?}",
                    self.level
                )
            }
            LevelChange::NotOurs => {}
        }
    }
}

/// The running filter, replaced by [`set_level`] (at start from the config, on SIGHUP).
static FILTER: std::sync::OnceLock<reload::Handle<Targets, Registry>> = std::sync::OnceLock::new();

/// A filter of `target=level` directives and a default level, comma-separated (`warn`,
/// `info,callbox=debug`, `callbox::server=trace`): a target matches its modules too. This is
/// `RUST_LOG`'s usual form; its span and field filters (`[span{field}]=level`) are not
/// taken, because they need a regex engine, and a door station's binary is smaller without
/// one (docs/benchmarks.md). An invalid filter is refused with the reason.
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    text.parse::<Targets>().map_err(|e| format!("{text:?}: {e} (use target=level directives, e.g. info,callbox=debug)"))
}

/// Installs the global subscriber, filtered by `RUST_LOG` (default [`default_filter`]).
/// Falls back to stderr when journald was chosen but its socket is missing.
pub fn init(default_level: &str) -> LogTarget {
    let ours = || parse_filter(&default_filter(default_level)).unwrap_or_default();
    let filter = || match rust_log().map(|f| parse_filter(&f)) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            eprintln!("callbox: RUST_LOG ignored: {e}");
            ours()
        }
        None => ours(),
    };
    let want = choose(std::env::var("CALLBOX_LOG").ok().as_deref(), std::env::var_os("JOURNAL_STREAM").is_some());
    if want == LogTarget::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_field_prefix(None).with_syslog_identifier("callbox".into());
                let (filter, handle) = reload::Layer::new(filter());
                if tracing_subscriber::registry().with(filter).with(layer).try_init().is_ok() {
                    let _ = FILTER.set(handle);
                    return LogTarget::Journald;
                }
            }
            Err(e) => eprintln!("callbox: journald unavailable ({e}); logging to stderr"),
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (filter, handle) = reload::Layer::new(filter());
    let text = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    if tracing_subscriber::registry().with(filter).with(text).try_init().is_ok() {
        let _ = FILTER.set(handle);
    }
    LogTarget::Stderr
}

/// `RUST_LOG` when set to something (an empty one is as if unset).
fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty())
}

/// What [`set_level`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    /// The filter is now [`default_filter`] at this level.
    Applied,
    /// `RUST_LOG` is set and wins over the config.
    RustLogWins,
    /// No subscriber of ours is installed (a library user's own, or tests).
    NotOurs,
}

/// Sets callbox's own level (one of [`LEVELS`]) in the running filter, unless `RUST_LOG`
/// chose the filter.
pub fn set_level(level: &str) -> LevelChange {
    if rust_log().is_some() {
        return LevelChange::RustLogWins;
    }
    match FILTER.get() {
        Some(h) if parse_filter(&default_filter(level)).is_ok_and(|f| h.reload(f).is_ok()) => LevelChange::Applied,
        _ => LevelChange::NotOurs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_under_systemd_stderr_elsewhere_and_overrides() {
        assert_eq!(choose(None, true), LogTarget::Journald);
        assert_eq!(choose(None, false), LogTarget::Stderr);
        assert_eq!(choose(Some("stderr"), true), LogTarget::Stderr);
        assert_eq!(choose(Some("journald"), false), LogTarget::Journald);
    }

    #[test]
    fn the_default_filter_keeps_callbox_and_quiets_the_rest() {
        use tracing::Level;
        for level in LEVELS {
            parse_filter(&default_filter(level)).unwrap();
        }
        let f = parse_filter(&default_filter("info")).unwrap();
        assert!(f.would_enable("callbox::server::hub", &Level::INFO));
        assert!(f.would_enable("callbox_core::rtc::sfu::core", &Level::INFO), "the core crate is callbox's too");
        assert!(!f.would_enable("callbox::server::hub", &Level::DEBUG));
        assert!(!f.would_enable("rtc::ice", &Level::INFO) && f.would_enable("rtc::ice", &Level::WARN));
        assert!(!f.would_enable("rtc_dtls::conn", &Level::WARN), "a known harmless warning");
        let debug = parse_filter("info,callbox=debug").unwrap();
        assert!(debug.would_enable("callbox::engine", &Level::DEBUG) && !debug.would_enable("rtc", &Level::DEBUG));
        assert!(parse_filter("callbox=loud").is_err());
    }
}
