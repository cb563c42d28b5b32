//! systemd service notifications (`sd_notify`): READY=1, STATUS=, WATCHDOG=1, STOPPING=1 as
//! datagrams on the socket named by `NOTIFY_SOCKET`. Without that variable (not started by
//! systemd, or `Type=simple`) every call is a silent no-op.
//!
//! Written here rather than taken from a crate so the socket is an explicit value: tests
//! give the notifier a real datagram socket of their own instead of changing the process
//! environment.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

/// Sends service notifications to systemd.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<PathBuf>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (absolute path, or `@name` for the abstract namespace).
    pub fn from_env() -> Self {
        Notifier { socket: std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from) }
    }

    /// Notifications to `socket`, or nowhere.
    pub fn new(socket: Option<PathBuf>) -> Self {
        Notifier { socket }
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Startup is complete.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// A one-line status for `systemctl status` (newlines are replaced).
    pub fn status(&self, line: &str) {
        self.send(&format!("STATUS={}", line.replace('\n', " ")));
    }

    /// The service is alive (call at least every half watchdog interval).
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, msg: &str) {
        let Some(path) = &self.socket else { return };
        let result = (|| {
            let sock = UnixDatagram::unbound()?;
            // Never block the supervisor: a full receiver queue drops the message.
            sock.set_nonblocking(true)?;
            let text = path.to_string_lossy();
            let addr = match text.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
                None => SocketAddr::from_pathname(path)?,
            };
            sock.send_to_addr(msg.as_bytes(), &addr)
        })();
        if let Err(e) = result {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// The watchdog interval systemd expects (`WATCHDOG_USEC`), if it is for this process
/// (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_from(std::env::var("WATCHDOG_USEC").ok(), std::env::var("WATCHDOG_PID").ok(), std::process::id())
}

fn watchdog_from(usec: Option<String>, pid: Option<String>, me: u32) -> Option<Duration> {
    if let Some(p) = pid
        && p.parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let us: u64 = usec?.parse().ok().filter(|v| *v > 0)?;
    Some(Duration::from_micros(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_on_a_real_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::new(Some(path));
        assert!(n.enabled());
        n.ready();
        n.status("in room lobby\nidle");
        n.watchdog();
        n.stopping();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..4 {
            let k = rx.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..k]).to_string());
        }
        assert_eq!(got, ["READY=1", "STATUS=in room lobby idle", "WATCHDOG=1", "STOPPING=1"]);
        Notifier::new(None).ready(); // no socket: nothing happens
    }

    #[test]
    fn watchdog_interval_is_for_this_process_only() {
        assert_eq!(watchdog_from(Some("20000000".into()), None, 7), Some(Duration::from_secs(20)));
        assert_eq!(watchdog_from(Some("20000000".into()), Some("7".into()), 7), Some(Duration::from_secs(20)));
        assert_eq!(watchdog_from(Some("20000000".into()), Some("8".into()), 7), None);
        assert_eq!(watchdog_from(None, None, 7), None);
        assert_eq!(watchdog_from(Some("0".into()), None, 7), None);
    }
}
