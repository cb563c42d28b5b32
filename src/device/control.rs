//! The control socket: a unix stream socket (mode 0660, group-readable so an operator in the
//! daemon's group can use it) that answers one JSON request per connection with one JSON
//! response line. `callbox status`, `callbox call ...` and `callbox gpio press` are its
//! clients. Requests go to the daemon's supervisor on a bounded channel with a oneshot reply.
//!
//! Request: `{"cmd":"status"}`, `{"cmd":"call","action":"join|leave|mute|unmute"}`,
//! `{"cmd":"camera","on":false}`, `{"cmd":"speaker","on":true}`, `{"cmd":"volume","percent":80}`,
//! `{"cmd":"gpio_press","button":"call","long":false}`.
//! Response: `{"ok":true,"status":{...}}` or `{"ok":false,"code":"bad_request","error":"..."}`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::status::Status;

/// How long accepting pauses after an error (e.g. out of file descriptors).
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The daemon's status.
    Status,
    /// A call command.
    Call {
        /// What to do.
        action: CallAction,
    },
    /// Camera on or off (`callbox call camera on|off`).
    Camera {
        /// On.
        on: bool,
    },
    /// Speaker on or off (`callbox call speaker on|off`).
    Speaker {
        /// On.
        on: bool,
    },
    /// The volume of what is played, percent 0..=200 (`callbox call volume N`).
    Volume {
        /// Percent.
        percent: u32,
    },
    /// Press a simulated button (backend `sim` only).
    GpioPress {
        /// `call`, `leave`, `mute` or `door`.
        button: String,
        /// Hold it for a long press.
        #[serde(default)]
        long: bool,
    },
}

/// `callbox call <action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CallAction {
    /// Start or answer a call.
    Join,
    /// Leave the call or decline a ring.
    Leave,
    /// Mute the microphone.
    Mute,
    /// Unmute the microphone.
    Unmute,
    /// Camera `on` or `off`.
    Camera,
    /// Speaker `on` or `off`.
    Speaker,
    /// Volume of what is played, percent (0..=200).
    Volume,
}

/// The answer. Every answer carries the status after the request was handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// The status (on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Stable error code (on failure): `bad_request`, `unknown_button`, `gpio_not_simulated`,
    /// `shutting_down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// Success with the status.
    pub fn ok(status: Status) -> Self {
        Response { ok: true, status: Some(status), code: None, error: None }
    }

    /// Failure with a stable code.
    pub fn fail(code: &str, error: impl Into<String>) -> Self {
        Response { ok: false, status: None, code: Some(code.into()), error: Some(error.into()) }
    }
}

/// A request waiting for the supervisor's answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Control socket failures.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Binding failed.
    #[error("control socket {path}: {reason}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No daemon answers there.
    #[error("no callbox device answers on {path}: {reason} (is the daemon running? see `systemctl status callbox`)")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "control socket {path}: permission denied: run as root, as user callbox, or as a member of group callbox (sudo usermod -aG callbox $USER, then log in again)"
    )]
    Permission {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon answered something unreadable or nothing in time.
    #[error("control socket {path}: {reason}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Binds the socket: creates its directory if needed, replaces a stale socket file (none
/// answers), refuses if another daemon answers, and sets mode 0660.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |reason: String| ControlError::Bind { path: path.to_path_buf(), reason };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        // In a directory others can write to (/tmp), anyone could bind the path first and
        // keep the daemon from starting, or answer in its place.
        let mode = std::fs::metadata(dir).map(|m| m.permissions().mode()).unwrap_or(0);
        if mode & 0o002 != 0 {
            return Err(err(format!(
                "{} is writable by other users; put the socket in /run/callbox/ or $XDG_RUNTIME_DIR/callbox/ \
                 (leave [control] socket empty)",
                dir.display()
            )));
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(err("another callbox device is running and answers on it".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    let l = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| err(e.to_string()))?;
    Ok(l)
}

/// Accepts clients until the supervisor goes away; each request is handed to `to_supervisor`.
pub async fn serve(listener: UnixListener, to_supervisor: mpsc::Sender<Pending>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (EMFILE) and the like: the error repeats at once
                // until something is freed, so wait instead of spinning.
                tracing::warn!(error = %e, "control socket: accept failed; pausing");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let tx = to_supervisor.clone();
        if tx.is_closed() {
            return;
        }
        tokio::spawn(async move {
            let _ = tokio::time::timeout(IO_TIMEOUT, handle(stream, tx)).await;
        });
    }
}

async fn handle(stream: UnixStream, tx: mpsc::Sender<Pending>) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST as u64 + 1);
    let resp = match reader.read_line(&mut line).await {
        Ok(_) if line.len() > MAX_REQUEST => {
            Response::fail("bad_request", format!("request longer than {MAX_REQUEST} bytes"))
        }
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Response::fail("bad_request", format!("unreadable request: {e}")),
            Ok(req) => {
                let (otx, orx) = oneshot::channel();
                match tx.send((req, otx)).await {
                    Ok(()) => orx.await.unwrap_or_else(|_| Response::fail("shutting_down", "the daemon is stopping")),
                    Err(_) => Response::fail("shutting_down", "the daemon is stopping"),
                }
            }
        },
        Err(e) => Response::fail("bad_request", e.to_string()),
    };
    let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    let _ = w.write_all(out.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// Sends one request and reads the answer (client side).
pub async fn request(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let perr = |reason: String| ControlError::Protocol { path: path.to_path_buf(), reason };
    let mut s = match tokio::time::timeout(IO_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ControlError::Permission { path: path.to_path_buf() });
        }
        Ok(Err(e)) => return Err(ControlError::Connect { path: path.to_path_buf(), reason: e.to_string() }),
        Err(_) => return Err(ControlError::Connect { path: path.to_path_buf(), reason: "timed out".into() }),
    };
    let mut line = serde_json::to_string(req).map_err(|e| perr(e.to_string()))?;
    line.push('\n');
    let exchange = async {
        s.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(&mut s).read_line(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(IO_TIMEOUT, exchange).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(perr(e.to_string())),
        Err(_) => return Err(perr("no answer within 5 s".into())),
    };
    serde_json::from_str(answer.trim()).map_err(|e| perr(format!("unreadable answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_request_per_connection_with_bad_input_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/control.sock");
        let l = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(bind(&path).await.unwrap_err().to_string().contains("another callbox device"));
        let (tx, mut rx) = mpsc::channel::<Pending>(4);
        tokio::spawn(serve(l, tx));
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let r = match req {
                    Request::Status => Response::ok(Status { call: "idle".into(), ..Default::default() }),
                    other => Response::fail("unknown_button", format!("{other:?}")),
                };
                let _ = reply.send(r);
            }
        });
        let r = request(&path, &Request::Status).await.unwrap();
        assert_eq!(r.status.unwrap().call, "idle");
        let r = request(&path, &Request::GpioPress { button: "bell".into(), long: false }).await.unwrap();
        assert_eq!(r.code.as_deref(), Some("unknown_button"));
        // Garbage and oversized requests get a bad_request answer, and the socket keeps working.
        for bad in ["{\"cmd\":\"reboot\"}\n".to_string(), format!("{}\n", "x".repeat(MAX_REQUEST + 10))] {
            let mut s = UnixStream::connect(&path).await.unwrap();
            s.write_all(bad.as_bytes()).await.unwrap();
            let mut a = String::new();
            BufReader::new(&mut s).read_line(&mut a).await.unwrap();
            let r: Response = serde_json::from_str(&a).unwrap();
            assert_eq!(r.code.as_deref(), Some("bad_request"), "{a}");
        }
        assert!(request(&path, &Request::Status).await.unwrap().ok);
        // A stale socket file (nobody answers) is replaced.
        drop(dir);
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("c.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(bind(&stale).await.is_ok());
        let e = request(&dir.path().join("none.sock"), &Request::Status).await.unwrap_err();
        assert!(e.to_string().contains("no callbox device answers"), "{e}");
    }
}
