//! Accepting ICE-TCP connections, in a task of its own.
//!
//! An accept can fail for a while (out of descriptors, typically), and waiting it out must
//! not hold up the SFU's one loop: a 200 ms pause there freezes every stream on the server.
//! So the listener lives here, backs off here, and hands each connection to the SFU task on a
//! bounded channel (full: the accept waits, and the kernel's backlog holds the next ones).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The pause after a failed accept.
const BACKOFF: Duration = Duration::from_millis(200);
/// Accepted connections waiting for the SFU task.
const QUEUE: usize = 16;

/// Where ICE-TCP connections come from: the media port's listener (tests give one that fails).
pub(crate) trait Acceptor: Send + 'static {
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(TcpStream, SocketAddr)>> + Send;
}

impl Acceptor for TcpListener {
    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// Starts the accept task; the SFU task reads what it accepts from the receiver. The task
/// ends when the receiver is dropped.
pub(crate) fn spawn(mut acceptor: impl Acceptor) -> mpsc::Receiver<(TcpStream, SocketAddr)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut failures = 0u64;
        loop {
            tokio::select! {
                r = acceptor.accept() => match r {
                    Ok(conn) => {
                        failures = 0;
                        if tx.send(conn).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures.is_power_of_two() {
                            tracing::warn!(error = %e, failures, "cannot accept an ICE-TCP connection; retrying");
                        }
                        tokio::time::sleep(BACKOFF).await;
                    }
                },
                () = tx.closed() => return,
            }
        }
    });
    rx
}
