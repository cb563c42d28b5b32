//! Reaching a callbox server (or an integrator's token URL) as a client: TCP, then TLS when
//! the URL says so, then a WebSocket or one HTTP/1.1 request. The engine's signalling, the
//! daemon's token renewal and doctor all dial through here, so they verify certificates the
//! same way and report the same code for the same failure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use crate::proto::ErrorCode;
use crate::tls::client::TlsError;
use crate::url::ServerUrl;

/// A byte stream to the server: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The largest HTTP answer body read (a token or an error is far smaller).
const MAX_BODY: usize = 64 * 1024;

/// Why dialing failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP: refused, unreachable, reset, name not resolved.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// TLS: certificate or handshake failure (see [`DialError::code`]).
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The WebSocket upgrade or HTTP exchange failed.
    #[error("{0}")]
    Protocol(String),
}

impl DialError {
    /// The stable code of a certificate failure, if this is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            DialError::Tls(t) => t.code(),
            _ => None,
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body (at most 64 KiB is read).
    pub body: Vec<u8>,
}

pub use callbox_core::net::Route;

/// Dials one server URL.
#[derive(Debug, Clone)]
pub struct Dialer {
    url: ServerUrl,
    tls: Option<Arc<ClientConfig>>,
}

impl Dialer {
    /// A dialer for `url`, trusting `ca_file` (or the system's roots) when the URL is TLS.
    pub fn new(url: ServerUrl, ca_file: Option<&Path>) -> Result<Dialer, TlsError> {
        let tls = if url.is_tls() { Some(crate::tls::client::config(ca_file, &[b"http/1.1"])?) } else { None };
        Ok(Dialer { url, tls })
    }

    /// The URL dialed.
    pub fn url(&self) -> &ServerUrl {
        &self.url
    }

    /// A connected stream (TCP, and TLS when the URL says so), within `deadline`.
    pub async fn stream(&self, deadline: Duration) -> Result<Box<dyn Io>, DialError> {
        let go = async { self.stream_inner().await.map(|(io, _)| io) };
        tokio::time::timeout(deadline, go).await.map_err(|_| DialError::Timeout(deadline))?
    }

    async fn stream_inner(&self) -> Result<(Box<dyn Io>, Option<Route>), DialError> {
        let tcp = TcpStream::connect((self.url.host(), self.url.port())).await?;
        let _ = tcp.set_nodelay(true);
        let route = match (tcp.local_addr(), tcp.peer_addr()) {
            (Ok(local), Ok(server)) => Some(Route { local, server }),
            _ => None,
        };
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(cfg) => Box::new(crate::tls::client::connect(cfg.clone(), self.url.host(), tcp).await?),
        };
        Ok((io, route))
    }

    /// The signalling WebSocket, within `deadline` for connect, TLS and upgrade together,
    /// and the route it took (the media side binds to the same local address).
    pub async fn websocket(
        &self,
        deadline: Duration,
    ) -> Result<(WebSocketStream<Box<dyn Io>>, Option<Route>), DialError> {
        let go = async {
            let (io, route) = self.stream_inner().await?;
            let (ws, _) = tokio_tungstenite::client_async(self.url.signalling(), io)
                .await
                .map_err(|e| DialError::Protocol(format!("WebSocket upgrade: {e}")))?;
            Ok((ws, route))
        };
        tokio::time::timeout(deadline, go).await.map_err(|_| DialError::Timeout(deadline))?
    }

    /// One HTTP/1.1 request to `path` on this server: the status and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        deadline: Duration,
    ) -> Result<Answer, DialError> {
        let go = async {
            let (io, _) = self.stream_inner().await?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| DialError::Protocol(e.to_string()))?;
            let conn = tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, self.url.authority())
                .header(hyper::header::CONTENT_LENGTH, body.len());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::from(body))).map_err(|e| DialError::Protocol(e.to_string()))?;
            let resp = send.send_request(req).await.map_err(|e| DialError::Protocol(e.to_string()))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| DialError::Protocol(format!("reading the answer: {e}")))?
                .to_bytes()
                .to_vec();
            conn.abort();
            Ok(Answer { status, headers, body })
        };
        tokio::time::timeout(deadline, go).await.map_err(|_| DialError::Timeout(deadline))?
    }
}
