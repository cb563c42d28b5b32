//! The little of STUN the SFU needs to route a datagram before any connection owns its
//! address (is it STUN, and what is its USERNAME, `server_ufrag:client_ufrag`), and a plain
//! binding request/response so `callbox doctor` can check that the media port is reachable
//! and see the address the server sees (NAT). Parsing and building are `rtc`'s STUN codec;
//! only the first-bytes check that keeps media datagrams away from it is ours.

use std::net::SocketAddr;

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, Setter, TransactionId};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;

/// A binding request without attributes, with transaction ID `txid`.
pub fn binding_request(txid: [u8; 12]) -> Vec<u8> {
    build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId(txid))]).unwrap_or_default()
}

/// A decoded STUN message from the media port: decoded once, then asked what the SFU needs.
pub struct Received(Message);

impl Received {
    /// Decodes `b` if it is a STUN message (after the cheap [`is_stun`] check).
    pub fn parse(b: &[u8]) -> Option<Received> {
        decode(b).map(Received)
    }

    /// The local (first) part of its USERNAME, if it has one (an ICE check names the
    /// server's ufrag there).
    pub fn local_ufrag(&self) -> Option<String> {
        let name = TextAttribute::get_from_as(&self.0, ATTR_USERNAME).ok()?.text;
        Some(name.split(':').next().unwrap_or_default().to_string())
    }

    /// The answer to a plain binding request (one without USERNAME, i.e. not an ICE
    /// check): a success response telling `from` its address as the server sees it.
    pub fn binding_success(&self, from: SocketAddr) -> Option<Vec<u8>> {
        let m = &self.0;
        if m.typ != BINDING_REQUEST || m.contains(ATTR_USERNAME) {
            return None;
        }
        build(&[
            Box::new(BINDING_SUCCESS),
            Box::new(m.transaction_id),
            Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
        ])
    }
}

/// The XOR-MAPPED-ADDRESS of a binding success response for transaction `txid`.
pub fn mapped_address(resp: &[u8], txid: [u8; 12]) -> Option<SocketAddr> {
    let m = decode(resp)?;
    if m.typ != BINDING_SUCCESS || m.transaction_id != TransactionId(txid) {
        return None;
    }
    let mut a = XorMappedAddress::default();
    a.get_from(&m).ok()?;
    Some(SocketAddr::new(a.ip, a.port))
}

/// True for a datagram that is a STUN message (RFC 5389 header with the magic cookie).
/// Cheap: it runs on every datagram from an unknown address before anything is decoded.
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= 20 && b[0] < 4 && rtc::stun::message::is_stun_message(b)
}

fn decode(b: &[u8]) -> Option<Message> {
    if !is_stun(b) {
        return None;
    }
    let mut m = Message::new();
    m.unmarshal_binary(b).ok()?;
    Some(m)
}

fn build(setters: &[Box<dyn Setter + '_>]) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.build(setters).ok()?;
    Some(m.raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_ufrag(b: &[u8]) -> Option<String> {
        Received::parse(b)?.local_ufrag()
    }

    fn binding_success(req: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        Received::parse(req)?.binding_success(from)
    }

    const USERNAME: u16 = 0x0006;
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

    fn request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn username_is_found_after_other_attributes() {
        let m = request(&[(0x8029, &[1; 8]), (USERNAME, b"srvUfrag:cli")]);
        assert!(is_stun(&m));
        assert_eq!(local_ufrag(&m).as_deref(), Some("srvUfrag"));
    }

    #[test]
    fn a_plain_binding_request_learns_its_mapped_address() {
        let txid = [9; 12];
        for from in ["203.0.113.7:40000", "[2001:db8::5]:1234"] {
            let from: SocketAddr = from.parse().unwrap();
            let resp = binding_success(&binding_request(txid), from).unwrap();
            assert_eq!(mapped_address(&resp, txid), Some(from));
            assert_eq!(mapped_address(&resp, [1; 12]), None, "another transaction");
        }
        // ICE checks (with USERNAME) are not answered this way.
        assert!(binding_success(&request(&[(USERNAME, b"a:b")]), "127.0.0.1:1".parse().unwrap()).is_none());
    }

    #[test]
    fn garbage_and_rtp_are_not_stun() {
        assert!(!is_stun(&[0x80; 40]));
        assert_eq!(local_ufrag(&[0u8; 10]), None);
        let mut m = request(&[(USERNAME, b"abc:def")]);
        m.truncate(25); // attribute cut short
        assert_eq!(local_ufrag(&m), None);
        assert_eq!(local_ufrag(&request(&[(0x8029, &[1; 8])])), None);
    }

    /// Datagrams from strangers that pass the header check but carry anything at all after
    /// it: decoding gives an answer or nothing, never a panic.
    #[test]
    fn random_bodies_after_a_stun_header_never_panic() {
        let mut x: u32 = 0x1234_5678;
        for len in 20..200 {
            for _ in 0..20 {
                let mut m: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                m[0] &= 0x01;
                m[4..8].copy_from_slice(&MAGIC);
                let body = (len - 20) as u16;
                m[2..4].copy_from_slice(&(body - body % 4).to_be_bytes());
                let _ = local_ufrag(&m);
                let _ = binding_success(&m, "127.0.0.1:9".parse().unwrap());
                let _ = mapped_address(&m, [0; 12]);
            }
        }
    }
}
