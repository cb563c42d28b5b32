//! One TURN allocation of a device connection, sans-IO: `rtc-turn`'s client with what a
//! connection needs around it (permissions asked for on first use, packets held until the
//! permission is granted, data from peers handed back). The bytes to and from the TURN
//! server go over the connection's UDP socket, or over a TCP or TLS stream the task owns
//! ([`StreamFramer`] splits that stream into messages).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::turn::client::{Client, ClientConfig, Event};

use super::peer::RtcError;
use crate::proto::ice_servers::{TurnTransport, TurnUrl};

/// Packets held per relay while permissions are asked for (ICE checks, mostly; the agent
/// sends them again anyway).
const HELD: usize = 64;

/// A TURN server as a connection uses it: resolved, with its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// As configured (for logs and status).
    pub url: TurnUrl,
    /// Where it was resolved to.
    pub addr: SocketAddr,
    /// Long-term credential username.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Ready(SocketAddr),
    Failed,
}

/// See the module docs.
pub struct Relay {
    client: Client,
    /// The TURN server it is allocated on.
    pub server: TurnServer,
    local: SocketAddr,
    state: State,
    /// The relayed address, once, when the allocation succeeds.
    allocated: Option<SocketAddr>,
    asked: HashSet<SocketAddr>,
    granted: HashSet<SocketAddr>,
    held: VecDeque<(SocketAddr, BytesMut)>,
    received: VecDeque<(SocketAddr, BytesMut)>,
}

impl Relay {
    /// Starts an allocation on `server`; `local` is the UDP socket's address (UDP) or the
    /// stream's (TCP, TLS: only a label).
    pub fn new(now: Instant, server: TurnServer, local: SocketAddr) -> Result<Relay, RtcError> {
        let err = |e: &dyn std::fmt::Display| RtcError::Webrtc(format!("TURN {}: {e}", server.url));
        let cfg = ClientConfig {
            turn_serv_addr: server.addr.to_string(),
            local_addr: local,
            transport_protocol: protocol(server.url.transport),
            username: server.username.clone(),
            password: server.password.clone(),
            software: "callbox".into(),
            ..Default::default()
        };
        let crypto = rtc::crypto::default_provider().map_err(|e| err(&e))?;
        let mut client = Client::new(cfg, crypto).map_err(|e| err(&e))?;
        client.allocate(now).map_err(|e| err(&e))?;
        Ok(Relay {
            client,
            server,
            local,
            state: State::Allocating,
            allocated: None,
            asked: HashSet::new(),
            granted: HashSet::new(),
            held: VecDeque::new(),
            received: VecDeque::new(),
        })
    }

    /// The relayed address, if allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Ready(a) => Some(a),
            _ => None,
        }
    }

    /// The relayed address, once, right after the allocation succeeded.
    pub fn take_allocated(&mut self) -> Option<SocketAddr> {
        self.allocated.take()
    }

    /// The allocation failed or was lost.
    #[cfg(test)]
    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Releases the allocation (a Refresh with lifetime 0), so the TURN server frees its
    /// port now rather than when the allocation expires (10 minutes): a device that relinks
    /// often would otherwise pile allocations up on it.
    pub fn release(&mut self, now: Instant) {
        if let Some(relayed) = self.relayed()
            && let Ok(mut r) = self.client.relay(relayed)
        {
            let _ = r.close(now);
        }
        self.state = State::Failed;
    }

    /// The stream to the server closed: the allocation is gone with it.
    pub fn close(&mut self) {
        if self.state != State::Failed {
            tracing::warn!(turn = %self.server.url, "TURN connection closed");
        }
        self.state = State::Failed;
    }

    /// One message from the TURN server.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.server.addr,
                ecn: None,
                transport_protocol: protocol(self.server.url.transport),
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = self.client.handle_read(msg) {
            tracing::trace!(error = %e, turn = %self.server.url, "dropping a TURN message");
        }
        self.events(now);
    }

    /// Sends `data` to `peer` through the relay; held while its permission is asked for.
    pub fn send(&mut self, now: Instant, peer: SocketAddr, data: BytesMut) {
        let Some(relayed) = self.relayed() else { return };
        if self.granted.contains(&peer) {
            if let Ok(mut r) = self.client.relay(relayed) {
                let _ = r.send_to(now, &data, peer);
            }
            return;
        }
        if self.asked.insert(peer)
            && let Ok(mut r) = self.client.relay(relayed)
            && let Err(e) = r.create_permission(now, peer)
        {
            tracing::debug!(error = %e, turn = %self.server.url, %peer, "TURN permission not asked");
        }
        if self.held.len() < HELD {
            self.held.push_back((peer, data));
        }
    }

    /// Data a peer sent through the relay.
    pub fn poll_received(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.received.pop_front()
    }

    /// The next message for the TURN server.
    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.client.poll_write().map(|m| m.message)
    }

    /// Retransmissions, refreshes of the allocation and permissions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.client.handle_timeout(now);
        self.events(now);
    }

    /// When [`Relay::handle_timeout`] is due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.state == State::Failed { None } else { self.client.poll_timeout() }
    }

    fn events(&mut self, now: Instant) {
        while let Some(e) = self.client.poll_event() {
            match e {
                Event::AllocateResponse(_, relayed) => {
                    tracing::info!(turn = %self.server.url, %relayed, "TURN allocation made");
                    self.state = State::Ready(relayed);
                    self.allocated = Some(relayed);
                }
                Event::AllocateError(_, e) => {
                    tracing::warn!(turn = %self.server.url, error = %e, "TURN allocation refused");
                    self.state = State::Failed;
                }
                Event::TransactionTimeout(_) if self.state == State::Allocating => {
                    tracing::warn!(turn = %self.server.url, "TURN server does not answer");
                    self.state = State::Failed;
                }
                Event::CreatePermissionResponse(_, peer) => {
                    self.granted.insert(peer);
                    let (go, keep): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(p, _)| *p == peer);
                    self.held = keep.into();
                    for (p, data) in go {
                        self.send(now, p, data);
                    }
                }
                Event::CreatePermissionError(_, e) => {
                    tracing::debug!(turn = %self.server.url, error = %e, "TURN permission refused");
                }
                Event::DataIndicationOrChannelData(_, from, data) => self.received.push_back((from, data)),
                _ => {}
            }
        }
    }
}

fn protocol(t: TurnTransport) -> TransportProtocol {
    match t {
        TurnTransport::Udp => TransportProtocol::UDP,
        TurnTransport::Tcp | TurnTransport::Tls => TransportProtocol::TCP,
    }
}

/// Splits a TURN stream (TCP or TLS, RFC 8656 §6.2) into messages: STUN messages (20-byte
/// header with the body length) and ChannelData (4-byte header, padded to 4 over streams).
#[derive(Default)]
pub struct StreamFramer {
    buf: BytesMut,
}

/// The largest message accepted from a TURN server (a ChannelData of a full UDP datagram).
const MAX_MESSAGE: usize = 4 + 65_535 + 3;

impl StreamFramer {
    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message; `Err` when the stream cannot be TURN (the caller closes it).
    pub fn next_message(&mut self) -> Result<Option<BytesMut>, &'static str> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
        let total = match self.buf[0] >> 6 {
            0 => 20 + len,
            1 => 4 + len.div_ceil(4) * 4,
            _ => return Err("neither STUN nor ChannelData"),
        };
        if total > MAX_MESSAGE {
            return Err("message too long");
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_stream_splits_into_stun_and_padded_channel_data() {
        let mut f = StreamFramer::default();
        let mut stun = vec![0x01, 0x01, 0x00, 0x04];
        stun.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[1, 2, 3, 4]);
        let chan = [0x40, 0x00, 0x00, 0x05, 9, 9, 9, 9, 9, 0, 0, 0];
        let mut all = stun.clone();
        all.extend_from_slice(&chan);
        // Byte by byte: nothing until each message is whole.
        let mut got = Vec::new();
        for b in &all {
            f.push(&[*b]);
            while let Some(m) = f.next_message().unwrap() {
                got.push(m.to_vec());
            }
        }
        assert_eq!(got, vec![stun, chan.to_vec()]);
        f.push(&[0xff, 0, 0, 0]);
        assert!(f.next_message().is_err(), "garbage ends the stream");
    }

    #[test]
    fn an_allocation_starts_with_a_request_to_the_server_and_fails_without_an_answer() {
        let now = Instant::now();
        let url = TurnUrl { host: "127.0.0.1".into(), port: 3478, transport: TurnTransport::Udp };
        let server =
            TurnServer { url, addr: "127.0.0.1:3478".parse().unwrap(), username: "u".into(), password: "p".into() };
        let mut r = Relay::new(now, server, "127.0.0.1:5000".parse().unwrap()).unwrap();
        let first = r.poll_transmit().expect("an Allocate request");
        assert_eq!(&first[..2], &[0x00, 0x03], "Allocate");
        assert!(r.relayed().is_none());
        // Garbage from the server is dropped, not fatal.
        r.handle_input(now, &[0xde, 0xad]);
        let mut t = now;
        while let Some(d) = r.poll_timeout() {
            t = d.max(t);
            r.handle_timeout(t);
            while r.poll_transmit().is_some() {}
            if t > now + std::time::Duration::from_secs(120) {
                break;
            }
        }
        assert!(r.is_failed(), "no answer: the allocation fails");
    }
}
