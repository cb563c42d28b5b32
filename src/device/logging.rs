//! Where logs go. Under systemd (stderr connected to the journal, `JOURNAL_STREAM` set) each
//! event goes to journald natively with its fields as journal fields: `ROOM_ID`, `USER_ID`,
//! `STREAM_ID`, `STATE`, `ERROR_CODE`, `CALLBOX_EVENT`, ... (`journalctl -u callbox
//! CALLBOX_EVENT=room_state`). Elsewhere, readable lines on stderr. `CALLBOX_LOG=stderr` or
//! `journald` forces one.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

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

/// Installs the global subscriber, filtered by `RUST_LOG` (default [`default_filter`]).
/// Falls back to stderr when journald was chosen but its socket is missing.
pub fn init(default_level: &str) -> LogTarget {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(default_level)));
    let want = choose(std::env::var("CALLBOX_LOG").ok().as_deref(), std::env::var_os("JOURNAL_STREAM").is_some());
    if want == LogTarget::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_field_prefix(None).with_syslog_identifier("callbox".into());
                if tracing_subscriber::registry().with(filter()).with(layer).try_init().is_ok() {
                    return LogTarget::Journald;
                }
            }
            Err(e) => eprintln!("callbox: journald unavailable ({e}); logging to stderr"),
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter()).with_ansi(ansi).with_writer(std::io::stderr).try_init();
    LogTarget::Stderr
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
        use tracing::level_filters::LevelFilter;
        let f: EnvFilter = default_filter("info").parse().unwrap();
        assert_eq!(f.max_level_hint(), Some(LevelFilter::from_level(Level::INFO)));
        let text = f.to_string();
        let directives: Vec<&str> = text.split(',').collect();
        assert!(directives.contains(&"warn") && directives.contains(&"callbox=info"), "{text}");
    }
}
