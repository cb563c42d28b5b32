//! Numeric error codes, stable and documented in `docs/protocol.md`.
//!
//! Where a meaning matches a code of the Express SDKs the same number is used, so integrators
//! recognise it (e.g. 1002033 login authentication failure, 1002050 kicked out by a login
//! elsewhere, 1003028 stream ID in use). The ranges follow the same scheme: 1000xxx general,
//! 1001xxx protocol, 1002xxx room, 1003xxx publish, 1004xxx play, 1005xxx admin, 1006xxx calls and doors.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($( #[doc = $doc:literal] $name:ident = $num:expr ),* $(,)?) => {
        /// A numeric error code carried by events, protocol messages and HTTP bodies.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct ErrorCode(pub u32);

        impl ErrorCode {
            $( #[doc = $doc] pub const $name: ErrorCode = ErrorCode($num); )*

            /// Every defined code with its constant name and meaning (for docs and tests).
            pub const ALL: &'static [(ErrorCode, &'static str, &'static str)] = &[ $( (ErrorCode($num), stringify!($name), $doc.trim_ascii()) ),* ];

            /// The constant name of this code, or `"UNKNOWN"`.
            pub fn name(self) -> &'static str {
                Self::ALL.iter().find(|(c, _, _)| *c == self).map(|(_, n, _)| *n).unwrap_or("UNKNOWN")
            }

            /// The Markdown table of every code, as in `docs/protocol.md`.
            pub fn markdown_table() -> String {
                let mut s = String::from("| code | name | meaning |\n|---|---|---|\n");
                for (c, n, d) in Self::ALL {
                    s.push_str(&format!("| {} | `{}` | {} |\n", c.0, n, d));
                }
                s
            }
        }
    };
}

codes! {
    /// Success.
    OK = 0,
    /// The request needs a logged-in room session.
    NOT_LOGGED_IN = 1000002,
    /// The stream ID is 256 bytes or longer.
    STREAM_ID_TOO_LONG = 1000014,
    /// The stream ID is empty.
    STREAM_ID_EMPTY = 1000015,
    /// The stream ID has characters outside printable ASCII or a space.
    STREAM_ID_INVALID = 1000016,
    /// The engine was destroyed; the request was not carried out.
    ENGINE_DESTROYED = 1000020,
    /// The call was superseded by a stop call before it completed.
    REQUEST_CANCELLED = 1000021,
    /// The engine profile is unusable (server URL, AppSign secret, CA file or media configuration); the message says which.
    PROFILE_INVALID = 1000030,
    /// The message is not valid JSON or not a known message.
    MALFORMED_MESSAGE = 1001001,
    /// The protocol version is not supported by this server.
    UNSUPPORTED_VERSION = 1001002,
    /// The message is larger than the server's limit.
    MESSAGE_TOO_LARGE = 1001003,
    /// Too many messages per second from this session.
    RATE_LIMITED = 1001004,
    /// The message is not valid in the session's current state (e.g. publish before login).
    UNEXPECTED_MESSAGE = 1001005,
    /// The server failed internally; retry later.
    SERVER_INTERNAL = 1001006,
    /// The server is shutting down; reconnect later.
    SERVER_SHUTTING_DOWN = 1001007,
    /// The session (or engine) is already logged in to a room.
    ALREADY_LOGGED_IN = 1002001,
    /// Too many logins per second for this app; retry later.
    LOGIN_RATE_LIMITED = 1002005,
    /// The room ID is empty.
    ROOM_ID_EMPTY = 1002011,
    /// The room ID has characters outside printable ASCII or a space.
    ROOM_ID_INVALID = 1002012,
    /// The room ID is 128 bytes or longer.
    ROOM_ID_TOO_LONG = 1002013,
    /// The user ID is empty.
    USER_ID_EMPTY = 1002014,
    /// The user ID has characters outside printable ASCII or a space.
    USER_ID_INVALID = 1002015,
    /// The user ID is 64 bytes or longer.
    USER_ID_TOO_LONG = 1002016,
    /// The user name is 256 bytes or longer.
    USER_NAME_TOO_LONG = 1002017,
    /// The room is full.
    ROOM_FULL = 1002018,
    /// The login got no answer in time (engine side).
    LOGIN_TIMEOUT = 1002030,
    /// The server could not be reached (engine side).
    NETWORK_UNREACHABLE = 1002031,
    /// The token is malformed or its signature is wrong.
    TOKEN_INVALID = 1002033,
    /// The token has expired.
    TOKEN_EXPIRED = 1002034,
    /// The app ID is unknown to the server, or the token is for another app.
    APP_ID_MISMATCH = 1002035,
    /// The token is for another room.
    TOKEN_ROOM_MISMATCH = 1002036,
    /// The token is for another user.
    TOKEN_USER_MISMATCH = 1002037,
    /// The token lacks the `login` privilege.
    NO_LOGIN_PRIVILEGE = 1002038,
    /// Kicked out: the same user ID logged in elsewhere.
    KICKED_DUPLICATE_LOGIN = 1002050,
    /// The engine gave up reconnecting after its configured limit.
    RECONNECT_FAILED = 1002051,
    /// The session to resume no longer exists (grace period over or server restarted).
    SESSION_EXPIRED = 1002052,
    /// The connection to the server was interrupted; the engine is retrying.
    NETWORK_INTERRUPTED = 1002053,
    /// Kicked out by an administrator.
    KICKED_BY_ADMIN = 1002055,
    /// The user was removed because its heartbeats stopped for longer than the grace period.
    HEARTBEAT_TIMEOUT = 1002056,
    /// The user logged out.
    USER_LOGGED_OUT = 1002057,
    /// Room extra info key or value too long, or too many keys.
    EXTRA_INFO_TOO_LARGE = 1002060,
    /// A broadcast message is empty or larger than 1 KB.
    BROADCAST_TOO_LARGE = 1002061,
    /// Broadcast messages are sent too fast.
    BROADCAST_RATE_LIMITED = 1002062,
    /// The renewed token is for another app, user or room.
    RENEW_TOKEN_MISMATCH = 1002063,
    /// The renewed token grants privileges or streams the session's token did not.
    RENEW_TOKEN_ESCALATES = 1002064,
    /// The token is not valid yet (`nbf` or `iat` in the future: check the clock).
    TOKEN_NOT_YET_VALID = 1002065,
    /// The token lives longer than the server's `[limits] max_token_secs`.
    TOKEN_LIFETIME_TOO_LONG = 1002066,
    /// The device key that obtained this session's token was revoked.
    DEVICE_KEY_REVOKED = 1002067,
    /// The device key is unknown, malformed or revoked; no token is issued.
    DEVICE_KEY_INVALID = 1002068,
    /// The device key may not obtain a token for this user, room or privilege.
    DEVICE_KEY_SCOPE = 1002069,
    /// TLS: the server's certificate is not signed by a trusted CA (set `[server] ca_file` for a private CA).
    TLS_UNKNOWN_CA = 1002070,
    /// TLS: the server's certificate is expired or not valid yet (check both clocks).
    TLS_CERT_EXPIRED = 1002071,
    /// TLS: the server's certificate does not name the host in the server URL.
    TLS_NAME_MISMATCH = 1002072,
    /// TLS: the handshake failed for another reason (not a TLS server, protocol mismatch, bad certificate).
    TLS_HANDSHAKE_FAILED = 1002073,
    /// Renewing the token failed (token URL, device key or token file); the session keeps its current token until it expires.
    TOKEN_RENEWAL_FAILED = 1002074,
    /// Plain HTTP reached a port that speaks TLS: use `https://` or `wss://`.
    TLS_REQUIRED = 1002075,
    /// The stream ID is already published by another user in this app.
    STREAM_ID_IN_USE = 1003028,
    /// The token lacks the `publish` privilege.
    NO_PUBLISH_PRIVILEGE = 1003029,
    /// The token does not allow this stream ID.
    STREAM_NOT_ALLOWED = 1003030,
    /// The user publishes too many streams.
    TOO_MANY_STREAMS = 1003031,
    /// This channel already publishes another stream.
    CHANNEL_BUSY = 1003032,
    /// A media offer for a stream this session does not publish.
    MEDIA_NOT_PUBLISHING = 1003033,
    /// The media offer (SDP) could not be used: no H.264/Opus, malformed, or no candidate.
    MEDIA_OFFER_REJECTED = 1003034,
    /// The server has no media relay (`[media] enabled = false`) or it stopped.
    MEDIA_UNAVAILABLE = 1003035,
    /// The publish pipeline failed (element error, device gone); it is being rebuilt.
    MEDIA_PIPELINE_FAILED = 1003036,
    /// The encoder produced nothing for `stall_secs`; the pipeline is being rebuilt.
    MEDIA_ENCODER_STALLED = 1003037,
    /// No media reached the server for a few seconds (network cut, UDP blocked); the publish connection is being recovered.
    PUBLISH_MEDIA_RECOVERING = 1003038,
    /// A stream's track state is not possible: neither video nor audio, or a track switched on or off that the stream was published without.
    STREAM_STATE_INVALID = 1003039,
    /// The stream is not published (yet); the engine waits for it.
    STREAM_NOT_FOUND = 1004025,
    /// The token lacks the `play` privilege.
    NO_PLAY_PRIVILEGE = 1004026,
    /// The stream was stopped by its publisher or removed with its user.
    STREAM_DELETED = 1004027,
    /// A media offer to play a stream this session does not play (send `play` first).
    MEDIA_NOT_PLAYING = 1004028,
    /// No media arrived from the server for a few seconds (network cut, UDP blocked); the play connection is being recovered.
    PLAY_MEDIA_RECOVERING = 1004029,
    /// The admin request has no valid token with the `admin` privilege.
    ADMIN_UNAUTHORIZED = 1005001,
    /// The app, room or user named in the admin request does not exist.
    ADMIN_NOT_FOUND = 1005002,
    /// The admin token is valid but lacks the `admin` privilege or names another room.
    ADMIN_FORBIDDEN = 1005003,
    /// The admin request body is not valid (JSON, user ID, room ID or privilege names).
    ADMIN_BAD_REQUEST = 1005004,
    /// The request body is larger than the endpoint accepts (HTTP 413).
    BODY_TOO_LARGE = 1005005,
    /// Desk sign-in: no such desk, or the password is wrong.
    DESK_SIGN_IN_FAILED = 1005010,
    /// Desk sign-in: too many failures for this desk; wait a minute.
    DESK_SIGN_IN_LIMITED = 1005011,
    /// Call: the callee declined.
    CALL_DECLINED = 1006001,
    /// Call: the caller gave up before it was answered.
    CALL_CANCELLED = 1006002,
    /// Call: nobody answered within the ring time.
    CALL_TIMED_OUT = 1006003,
    /// Call: the other side hung up (or logged out) during the call.
    CALL_HUNG_UP = 1006004,
    /// Call: the callee is already in a call (callbox has no call waiting).
    CALL_BUSY = 1006005,
    /// Call: the other side is not in the room, or its session ended (grace period over, kicked).
    CALL_PEER_OFFLINE = 1006006,
    /// Call: another callee of the group answered first.
    CALL_ANSWERED_ELSEWHERE = 1006007,
    /// Call: it ended while this member's connection was down, and why was not kept (engine side).
    CALL_LOST = 1006008,
    /// Call: no such call, or this session is not the side that may do this to it.
    CALL_NOT_FOUND = 1006010,
    /// Call: nobody to ring (no callee named and no other member that can answer).
    CALL_NO_CALLEE = 1006011,
    /// Call: a callee is invalid (yourself, a bad user ID, more than 16, a ring time outside 5..=120 s).
    CALL_INVALID = 1006012,
    /// Call: the caller is already in a call.
    CALL_SELF_BUSY = 1006013,
    /// Door: the requester has no `door` privilege and no answered call with this door.
    DOOR_FORBIDDEN = 1006020,
    /// Door: the member named is not a door station (it did not say `door` at login).
    DOOR_NOT_A_DOOR = 1006021,
    /// Door: the door station is not in the room or not connected.
    DOOR_OFFLINE = 1006022,
    /// Door: the door station's relay failed; the door did not open.
    DOOR_RELAY_FAULT = 1006023,
    /// Door: the door station did not answer within a few seconds; whether it opened is unknown.
    DOOR_NO_ANSWER = 1006024,
    /// Door: the door station refused for a reason of its own (the message says which).
    DOOR_REFUSED = 1006025,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        let mut nums: Vec<u32> = ErrorCode::ALL.iter().map(|(c, _, _)| c.0).collect();
        nums.sort_unstable();
        let before = nums.len();
        nums.dedup();
        assert_eq!(before, nums.len());
    }

    /// The table in docs/protocol.md is generated from the codes; `CALLBOX_BLESS=1 cargo test`
    /// rewrites it.
    #[test]
    fn protocol_doc_lists_every_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (head, rest) = doc.split_once("<!-- codes:begin -->\n").expect("begin marker");
        let (current, tail) = rest.split_once("<!-- codes:end -->").expect("end marker");
        let table = ErrorCode::markdown_table();
        if std::env::var_os("CALLBOX_BLESS").is_some() {
            std::fs::write(path, format!("{head}<!-- codes:begin -->\n{table}<!-- codes:end -->{tail}")).unwrap();
            return;
        }
        assert_eq!(current, table, "docs/protocol.md is stale: run CALLBOX_BLESS=1 cargo test --lib protocol_doc");
    }

    #[test]
    fn express_numbers_kept() {
        assert_eq!(ErrorCode::TOKEN_INVALID.0, 1002033);
        assert_eq!(ErrorCode::KICKED_DUPLICATE_LOGIN.0, 1002050);
        assert_eq!(ErrorCode::STREAM_ID_IN_USE.0, 1003028);
        assert_eq!(ErrorCode(1003028).name(), "STREAM_ID_IN_USE");
    }
}
