//! Validation of room, user and stream IDs: shared by the engine (to fail early, before any
//! network) and the server (which never trusts a client).

use super::ErrorCode;

/// A room ID must be shorter than this many bytes.
pub const ROOM_ID_MAX: usize = 128;
/// A user ID must be shorter than this many bytes.
pub const USER_ID_MAX: usize = 64;
/// A stream ID must be shorter than this many bytes.
pub const STREAM_ID_MAX: usize = 256;
/// A user name must be shorter than this many bytes.
pub const USER_NAME_MAX: usize = 256;

fn check(id: &str, max: usize, empty: ErrorCode, long: ErrorCode, bad: ErrorCode) -> Result<(), ErrorCode> {
    if id.is_empty() {
        return Err(empty);
    }
    if id.len() >= max {
        return Err(long);
    }
    // printable ASCII without space: '!' (0x21) ..= '~' (0x7e)
    if !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad);
    }
    Ok(())
}

/// Checks a room ID: non-empty, shorter than 128 bytes, printable ASCII without spaces.
pub fn check_room_id(id: &str) -> Result<(), ErrorCode> {
    check(id, ROOM_ID_MAX, ErrorCode::ROOM_ID_EMPTY, ErrorCode::ROOM_ID_TOO_LONG, ErrorCode::ROOM_ID_INVALID)
}

/// Checks a user ID: non-empty, shorter than 64 bytes, printable ASCII without spaces.
pub fn check_user_id(id: &str) -> Result<(), ErrorCode> {
    check(id, USER_ID_MAX, ErrorCode::USER_ID_EMPTY, ErrorCode::USER_ID_TOO_LONG, ErrorCode::USER_ID_INVALID)
}

/// Checks a stream ID: non-empty, shorter than 256 bytes, printable ASCII without spaces.
pub fn check_stream_id(id: &str) -> Result<(), ErrorCode> {
    check(id, STREAM_ID_MAX, ErrorCode::STREAM_ID_EMPTY, ErrorCode::STREAM_ID_TOO_LONG, ErrorCode::STREAM_ID_INVALID)
}

/// Checks a user name: any UTF-8, shorter than 256 bytes, no control characters.
pub fn check_user_name(name: &str) -> Result<(), ErrorCode> {
    if name.len() >= USER_NAME_MAX || name.chars().any(char::is_control) {
        return Err(ErrorCode::USER_NAME_TOO_LONG);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_charset() {
        assert_eq!(check_user_id(""), Err(ErrorCode::USER_ID_EMPTY));
        assert_eq!(check_user_id(&"u".repeat(63)), Ok(()));
        assert_eq!(check_user_id(&"u".repeat(64)), Err(ErrorCode::USER_ID_TOO_LONG));
        assert_eq!(check_user_id("a b"), Err(ErrorCode::USER_ID_INVALID));
        assert_eq!(check_user_id("é"), Err(ErrorCode::USER_ID_INVALID));
        assert_eq!(check_room_id(&"r".repeat(127)), Ok(()));
        assert_eq!(check_room_id(&"r".repeat(128)), Err(ErrorCode::ROOM_ID_TOO_LONG));
        assert_eq!(check_room_id("lobby\n"), Err(ErrorCode::ROOM_ID_INVALID));
        assert_eq!(check_stream_id(&"s".repeat(255)), Ok(()));
        assert_eq!(check_stream_id(&"s".repeat(256)), Err(ErrorCode::STREAM_ID_TOO_LONG));
        assert_eq!(check_stream_id("door-1_main.cam~!"), Ok(()));
        assert_eq!(check_user_name("Flat 3 — Müller"), Ok(()));
        assert_eq!(check_user_name("a\u{7}"), Err(ErrorCode::USER_NAME_TOO_LONG));
    }
}
