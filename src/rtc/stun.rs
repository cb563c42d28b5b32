//! The little of STUN the SFU needs to route a datagram before any connection owns its
//! address: is it STUN, and what is its USERNAME (`server_ufrag:client_ufrag`).

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

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
    fn garbage_and_rtp_are_not_stun() {
        assert!(!is_stun(&[0x80; 40]));
        assert_eq!(local_ufrag(&[0u8; 10]), None);
        let mut m = request(&[(ATTR_USERNAME, b"abc:def")]);
        m.truncate(25); // attribute cut short
        assert_eq!(local_ufrag(&m), None);
        assert_eq!(local_ufrag(&request(&[(0x8029, &[1; 8])])), None);
    }
}
