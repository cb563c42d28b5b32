//! The server's own accept loop, so nobody can hold the server with connections that never
//! authenticate: each TCP connection takes a slot of the "pending" gate (at most
//! `[limits] max_pending` in all and `max_pending_per_ip` per source address; over that it
//! is closed at once), must send its request headers within `handshake_secs`, and gives its
//! slot back when its WebSocket logs in (or when it closes). A WebSocket that never logs in
//! is closed by the registry after the same deadline. With `[tls]`, the TLS handshake runs
//! between `accept` and `serve_connection`, under the same deadline, on the same slot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Counts connections that have not authenticated, in all and per source address.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Mutex<GateState>>,
    max: usize,
    max_per_ip: usize,
}

#[derive(Debug, Default)]
struct GateState {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One connection's slot in the [`Gate`], given back on drop.
#[derive(Debug)]
pub struct Pending {
    gate: Gate,
    ip: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut s = self.gate.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    /// A gate with these caps.
    pub fn new(max: usize, max_per_ip: usize) -> Gate {
        Gate { inner: Arc::default(), max, max_per_ip }
    }

    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    pub fn admit(&self, ip: IpAddr) -> Option<Pending> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine = s.per_ip.get(&ip).copied().unwrap_or(0);
        if s.total >= self.max || mine >= self.max_per_ip {
            return None;
        }
        s.total += 1;
        *s.per_ip.entry(ip).or_default() += 1;
        Some(Pending { gate: self.clone(), ip })
    }

    /// Connections holding a slot now.
    pub fn pending(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// The connection's slot, reachable from request handlers (the WebSocket handler takes it
/// and drops it once logged in).
#[derive(Debug, Clone)]
pub struct PendingSlot(pub Arc<Mutex<Option<Pending>>>);

impl PendingSlot {
    /// Takes the slot out (once).
    pub fn take(&self) -> Option<Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Accepts and serves connections until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    gate: Gate,
    handshake: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(stop);
    let mut refused = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: the error repeats until something is
                    // freed, so wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let Some(pending) = gate.admit(peer.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, pending = gate.pending(), "too many unauthenticated connections; refusing");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                tokio::spawn(connection(stream, peer, app.clone(), pending, handshake));
            }
            Some(acceptor) => {
                tokio::spawn(tls_connection(acceptor.clone(), stream, peer, app.clone(), pending, handshake));
            }
        }
    }
}

/// The TLS handshake under the handshake deadline, then HTTP as on a plain connection. An
/// ACME validation connection (ALPN `acme-tls/1`) ends after its handshake.
async fn tls_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    pending: Pending,
    handshake: Duration,
) {
    if plain_http(&stream, handshake).await {
        tell_tls_required(stream, peer).await;
        return;
    }
    let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not done within the handshake deadline; closed");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::acme::ACME_ALPN) {
        tracing::info!(%peer, "ACME validation connection answered");
        return;
    }
    connection(tls, peer, app, pending, handshake).await;
}

/// Whether the connection's first byte is that of an HTTP request line (an ASCII letter)
/// rather than a TLS record (0x16): someone typed `http://` for an `https://` port.
async fn plain_http(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(tokio::time::timeout(within, stream.peek(&mut first)).await, Ok(Ok(1)) if first[0].is_ascii_alphabetic())
}

/// Answers a plain HTTP request on the TLS port with a 400 that names TLS (instead of a
/// silent close that looks like a dead server), then closes.
async fn tell_tls_required(mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    use tokio::io::AsyncWriteExt;
    let code = crate::proto::ErrorCode::TLS_REQUIRED;
    let body = format!(
        "{{\"code\":{},\"name\":\"{}\",\"message\":\"this port speaks TLS: use https:// or wss://\"}}",
        code.0,
        code.name()
    );
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tracing::debug!(%peer, "plain HTTP on the TLS port; answered with TLS_REQUIRED");
    // Read what the client sent first (a bounded amount), so closing does not reset the
    // connection before the client reads the answer.
    let mut buf = [0u8; 4096];
    let _ =
        tokio::time::timeout(Duration::from_millis(200), tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await;
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn connection<IO>(stream: IO, peer: SocketAddr, app: Router, pending: Pending, handshake: Duration)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let slot = PendingSlot(Arc::new(Mutex::new(Some(pending))));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    // HTTP/1.1 (the page, signalling, WHIP/WHEP and the API need nothing else). The headers
    // of every request, the first and each one on a kept-alive connection, must arrive within
    // the handshake deadline.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_source() {
        let g = Gate::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = g.admit(a).unwrap();
        let _a2 = g.admit(a).unwrap();
        assert!(g.admit(a).is_none(), "per source");
        let _b1 = g.admit(b).unwrap();
        assert!(g.admit(b).is_none(), "in all");
        drop(a1);
        assert_eq!(g.pending(), 2);
        assert!(g.admit(b).is_some(), "a freed slot is reusable");
    }
}
