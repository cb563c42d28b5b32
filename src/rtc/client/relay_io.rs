//! The I/O of a connection's TURN servers: their names resolved, and a TCP or TLS stream to
//! each one reached that way, opened when the allocation's first message is due. Each
//! stream is a small task that only moves bytes; messages come back on one channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::proto::ice_servers::{IceServer, TurnTransport, TurnUrl};
use crate::rtc::turn::{StreamFramer, TurnServer};

/// How long connecting (and the TLS handshake) to a TURN server may take.
const CONNECT: Duration = Duration::from_secs(5);
/// Messages queued toward one TURN stream before new ones are dropped.
const QUEUE: usize = 512;

/// The TURN servers a connection may use and the trust for `turns:`.
#[derive(Clone, Default)]
pub struct Relays {
    /// ICE servers (their TURN URLs are used).
    pub servers: Vec<IceServer>,
    /// Roots for `turns:` (the same as the room connection's); `None`: `turns:` is skipped.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays").field("servers", &self.servers.len()).field("tls", &self.tls.is_some()).finish()
    }
}

/// What the streams hand back.
pub(super) enum RelayIn {
    /// A TURN server's URL was resolved: add the allocation.
    Resolved(TurnServer),
    /// A message from the TURN server behind relay `i`.
    Message(usize, BytesMut),
    /// Relay `i`'s stream ended.
    Closed(usize),
}

/// See the module docs.
pub(super) struct RelayIo {
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Per relay index: the writer of its stream (`None` for UDP relays or not yet open).
    streams: Vec<Option<mpsc::Sender<BytesMut>>>,
    tx: mpsc::Sender<RelayIn>,
    rx: mpsc::Receiver<RelayIn>,
}

impl RelayIo {
    /// Starts resolving every TURN URL of `relays`.
    pub(super) fn start(relays: Relays) -> RelayIo {
        let (tx, rx) = mpsc::channel(256);
        for s in &relays.servers {
            for url in s.turn_urls() {
                if url.transport == TurnTransport::Tls && relays.tls.is_none() {
                    continue;
                }
                let (tx, user, pass) = (tx.clone(), s.username.clone(), s.credential.clone());
                tokio::spawn(async move {
                    match tokio::net::lookup_host((url.host.as_str(), url.port)).await.map(|mut a| a.next()) {
                        Ok(Some(addr)) => {
                            let _ = tx
                                .send(RelayIn::Resolved(TurnServer { url, addr, username: user, password: pass }))
                                .await;
                        }
                        Ok(None) | Err(_) => tracing::warn!(turn = %url, "cannot resolve the TURN server"),
                    }
                });
            }
        }
        RelayIo { tls: relays.tls, streams: Vec::new(), tx, rx }
    }

    /// The next thing that came back.
    pub(super) async fn recv(&mut self) -> RelayIn {
        // `self.tx` keeps the channel open: this never returns `None`.
        self.rx.recv().await.unwrap_or(RelayIn::Closed(usize::MAX))
    }

    /// Sends `msg` to relay `i`'s TURN server over its stream, opening it first.
    pub(super) fn send(&mut self, i: usize, server: &TurnServer, msg: BytesMut) {
        if self.streams.len() <= i {
            self.streams.resize(i + 1, None);
        }
        let w = self.streams[i].get_or_insert_with(|| {
            let (w, r) = mpsc::channel(QUEUE);
            let tls = (server.url.transport == TurnTransport::Tls).then(|| self.tls.clone()).flatten();
            tokio::spawn(stream(i, server.url.clone(), server.addr, tls, r, self.tx.clone()));
            w
        });
        if w.try_send(msg).is_err() {
            tracing::debug!(turn = %server.url, "TURN stream queue full; a message was dropped");
        }
    }
}

/// One stream to a TURN server: connect (and TLS), then copy both ways until either ends.
async fn stream(
    i: usize,
    url: TurnUrl,
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    mut out: mpsc::Receiver<BytesMut>,
    back: mpsc::Sender<RelayIn>,
) {
    let open = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn crate::dial::Io> = match tls {
            Some(cfg) => Box::new(crate::tls::client::connect(cfg, &url.host, tcp).await.map_err(|e| e.to_string())?),
            None => Box::new(tcp),
        };
        Ok::<_, String>(io)
    };
    let io = match tokio::time::timeout(CONNECT, open).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => {
            tracing::warn!(turn = %url, error = %e, "cannot connect to the TURN server");
            let _ = back.send(RelayIn::Closed(i)).await;
            return;
        }
        Err(_) => {
            tracing::warn!(turn = %url, "connecting to the TURN server timed out");
            let _ = back.send(RelayIn::Closed(i)).await;
            return;
        }
    };
    tracing::debug!(turn = %url, "TURN stream open");
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 8192];
    loop {
        tokio::select! {
            msg = out.recv() => match msg {
                Some(m) => if wr.write_all(&m).await.is_err() { break },
                None => return,
            },
            n = rd.read(&mut buf) => {
                let Ok(n) = n.map_err(|_| ()).and_then(|n| if n == 0 { Err(()) } else { Ok(n) }) else { break };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_message() {
                        Ok(Some(m)) => {
                            if back.send(RelayIn::Message(i, m)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(why) => {
                            tracing::warn!(turn = %url, why, "closing a TURN stream");
                            let _ = back.send(RelayIn::Closed(i)).await;
                            return;
                        }
                    }
                }
            }
        }
    }
    let _ = back.send(RelayIn::Closed(i)).await;
}
