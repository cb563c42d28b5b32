//! The little of STUN the SFU needs to route a datagram before any connection owns its
//! address (is it STUN, and what is its USERNAME, `server_ufrag:client_ufrag`), and a plain
//! binding request/response so `callbox doctor` can check that the media port is reachable
//! and see the address the server sees (NAT).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];

/// A binding request without attributes, with transaction ID `txid`.
pub fn binding_request(txid: [u8; 12]) -> Vec<u8> {
    let mut m = BINDING_REQUEST.to_vec();
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&MAGIC);
    m.extend_from_slice(&txid);
    m
}

/// The answer to a plain binding request (one without USERNAME, i.e. not an ICE check):
/// a success response telling `from` its address as the server sees it.
pub fn binding_success(req: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if !is_stun(req) || req[0..2] != BINDING_REQUEST || local_ufrag(req).is_some() {
        return None;
    }
    let port = from.port() ^ 0x2112;
    let mut value = vec![0];
    match from.ip() {
        IpAddr::V4(ip) => {
            value.push(1);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(ip.octets().iter().zip(MAGIC).map(|(a, m)| a ^ m));
        }
        IpAddr::V6(ip) => {
            value.push(2);
            value.extend_from_slice(&port.to_be_bytes());
            let key: Vec<u8> = MAGIC.iter().chain(&req[8..20]).copied().collect();
            value.extend(ip.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
    }
    let mut m = BINDING_SUCCESS.to_vec();
    m.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    m.extend_from_slice(&req[4..20]);
    m.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
    m.extend_from_slice(&value);
    Some(m)
}

/// The XOR-MAPPED-ADDRESS of a binding success response for transaction `txid`.
pub fn mapped_address(resp: &[u8], txid: [u8; 12]) -> Option<SocketAddr> {
    if !is_stun(resp) || resp[0..2] != BINDING_SUCCESS || resp[8..20] != txid {
        return None;
    }
    let body = resp.get(20..)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let v = body.get(i + 4..i + 4 + alen)?;
        if typ == ATTR_XOR_MAPPED_ADDRESS && v.len() >= 8 {
            let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
            let ip = match v[1] {
                1 => IpAddr::V4(Ipv4Addr::from([v[4] ^ MAGIC[0], v[5] ^ MAGIC[1], v[6] ^ MAGIC[2], v[7] ^ MAGIC[3]])),
                2 if v.len() >= 20 => {
                    let key: Vec<u8> = MAGIC.iter().chain(&txid).copied().collect();
                    let o: Vec<u8> = v[4..20].iter().zip(key).map(|(a, k)| a ^ k).collect();
                    IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(o).ok()?))
                }
                _ => return None,
            };
            return Some(SocketAddr::new(ip, port));
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// True for a datagram that is a STUN message (RFC 5389 header with the magic cookie).
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= 20 && b[0] < 4 && b[4..8] == MAGIC
}

/// The local (first) part of a STUN binding request's USERNAME, if it has one.
pub fn local_ufrag(b: &[u8]) -> Option<&str> {
    if !is_stun(b) {
        return None;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let body = b.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + alen)?;
        if typ == ATTR_USERNAME {
            let s = std::str::from_utf8(value).ok()?;
            return Some(s.split(':').next().unwrap_or(s));
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let m = request(&[(0x8029, &[1; 8]), (ATTR_USERNAME, b"srvUfrag:cli")]);
        assert!(is_stun(&m));
        assert_eq!(local_ufrag(&m), Some("srvUfrag"));
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
        assert!(binding_success(&request(&[(ATTR_USERNAME, b"a:b")]), "127.0.0.1:1".parse().unwrap()).is_none());
    }

    #[test]
    fn garbage_and_rtp_are_not_stun() {
        assert!(!is_stun(&[0x80; 40]));
        assert_eq!(local_ufrag(&[0u8; 10]), None);
        let mut m = request(&[(ATTR_USERNAME, b"abc:def")]);
        m.truncate(25); // attribute cut short
        assert_eq!(local_ufrag(&m), None);
        assert_eq!(local_ufrag(&request(&[(0x8029, &[1; 8])])), None);
    }
}
