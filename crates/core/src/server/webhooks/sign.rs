//! The signature of a delivery: `Callbox-Signature: t=<unix seconds>,v1=<hex>` where hex is
//! HMAC-SHA256 of `"<t>.<body>"` with the app's webhook secret. The timestamp is signed with
//! the body, so a receiver that refuses old timestamps ([`verify`]'s tolerance) cannot be
//! fed a recorded delivery again later; the event `id` deduplicates retries.

use ring::hmac;

/// Why a signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("the signature header is not t=<unix seconds>,v1=<hex HMAC-SHA256>")]
    Malformed,
    /// The timestamp is further from now than the tolerance (a replay, or a wrong clock).
    #[error("the signature's timestamp is {0} s away from now (more than the tolerance)")]
    Stale(u64),
    /// No `v1` matches the body with this secret.
    #[error("the signature does not match the body with this secret")]
    Mismatch,
}

/// The header value for `body` sent at `t` (unix seconds).
pub fn header(secret: &[u8], t: u64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(tag.as_ref()))
}

/// Checks `header` against `body` at `now` (unix seconds), accepting a timestamp at most
/// `tolerance_secs` away. Several `v1` entries may be present (a secret being rotated):
/// one matching is enough. The comparison is constant-time.
pub fn verify(secret: &[u8], header: &str, body: &str, now: u64, tolerance_secs: u64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => sigs.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = now.abs_diff(t);
    if skew > tolerance_secs {
        return Err(SignatureError::Stale(skew));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let msg = format!("{t}.{body}");
    if sigs.iter().any(|s| hmac::verify(&key, msg.as_bytes(), s).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_out_only_with_its_secret_body_and_time() {
        let h = header(b"s3cret", 1000, r#"{"id":"a"}"#);
        assert!(h.starts_with("t=1000,v1="));
        assert_eq!(verify(b"s3cret", &h, r#"{"id":"a"}"#, 1010, 300), Ok(()));
        assert_eq!(verify(b"other", &h, r#"{"id":"a"}"#, 1010, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"s3cret", &h, r#"{"id":"b"}"#, 1010, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"s3cret", &h, r#"{"id":"a"}"#, 2000, 300), Err(SignatureError::Stale(1000)));
        // The timestamp is signed: moving it breaks the signature.
        let moved = h.replace("t=1000", "t=1900");
        assert_eq!(verify(b"s3cret", &moved, r#"{"id":"a"}"#, 2000, 300), Err(SignatureError::Mismatch));
        for bad in ["", "t=1000", "v1=00", "t=x,v1=00", "t=1000,v1=zz", "garbage"] {
            assert_eq!(verify(b"s3cret", bad, "{}", 1000, 300), Err(SignatureError::Malformed), "{bad:?}");
        }
        // Rotation: a second v1 that matches is enough.
        let two = format!("{},v1=00ff", h);
        assert_eq!(verify(b"s3cret", &two, r#"{"id":"a"}"#, 1000, 300), Ok(()));
    }

    #[test]
    fn the_known_answer() {
        // HMAC-SHA256("key", "1.{}"), as any language's library computes it (the docs'
        // snippets are checked against this value).
        assert_eq!(header(b"key", 1, "{}"), "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224");
    }
}
