//! What happened, as the registry says it, and the JSON body a receiver gets.

use serde_json::{Value, json};

use crate::proto::{ErrorCode, UserInfo};

/// One event of one app's room.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// The app.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// When it happened, unix milliseconds.
    pub ts: u64,
    /// What happened.
    pub event: HookEvent,
}

/// The events, with the fields each carries. Their names ([`HookEvent::name`]) are the
/// interface receivers code against: they never change.
#[derive(Debug, Clone, PartialEq)]
pub enum HookEvent {
    /// The room's first member came.
    RoomStarted,
    /// The room's last member left; the room is gone.
    RoomFinished,
    /// A user logged in to the room (not a resume: nobody else saw a change then).
    UserJoined {
        /// Who.
        user: UserInfo,
    },
    /// A user left the room, with why (USER_LOGGED_OUT, HEARTBEAT_TIMEOUT, KICKED, ...).
    UserLeft {
        /// Who.
        user_id: String,
        /// Why.
        reason: ErrorCode,
    },
    /// A stream was published.
    StreamPublished {
        /// Its publisher.
        user_id: String,
        /// The stream.
        stream_id: String,
    },
    /// A stream ended, with why.
    StreamUnpublished {
        /// Its publisher.
        user_id: String,
        /// The stream.
        stream_id: String,
        /// Why.
        reason: ErrorCode,
    },
    /// A call rings at a callee (one event per callee rung).
    CallRinging {
        /// The call.
        call_id: u64,
        /// Who called.
        caller: String,
        /// Who rings.
        callee: String,
    },
    /// A callee answered.
    CallAnswered {
        /// The call.
        call_id: u64,
        /// Who called.
        caller: String,
        /// Who answered.
        callee: String,
    },
    /// The call ended, with why (CALL_HUNG_UP, CALL_DECLINED, CALL_TIMED_OUT, ...).
    CallEnded {
        /// The call.
        call_id: u64,
        /// Who called.
        caller: String,
        /// The other side at the end.
        peer: String,
        /// Why.
        reason: ErrorCode,
    },
    /// A door station confirmed it opened its door at someone's request.
    DoorOpened {
        /// The door station.
        door: String,
        /// Who asked (a member, or the admin token's user).
        by: String,
    },
    /// A door request was refused: by the server (no right), by the station (its reason)
    /// or for want of an answer.
    DoorRefused {
        /// The door station.
        door: String,
        /// Who asked.
        by: String,
        /// Why.
        reason: ErrorCode,
    },
}

impl HookEvent {
    /// The `event` name.
    pub fn name(&self) -> &'static str {
        match self {
            HookEvent::RoomStarted => "room_started",
            HookEvent::RoomFinished => "room_finished",
            HookEvent::UserJoined { .. } => "user_joined",
            HookEvent::UserLeft { .. } => "user_left",
            HookEvent::StreamPublished { .. } => "stream_published",
            HookEvent::StreamUnpublished { .. } => "stream_unpublished",
            HookEvent::CallRinging { .. } => "call_ringing",
            HookEvent::CallAnswered { .. } => "call_answered",
            HookEvent::CallEnded { .. } => "call_ended",
            HookEvent::DoorOpened { .. } => "door_opened",
            HookEvent::DoorRefused { .. } => "door_refused",
        }
    }

    /// Every event name, for the docs and the receivers' tests.
    pub const NAMES: [&'static str; 11] = [
        "room_started",
        "room_finished",
        "user_joined",
        "user_left",
        "stream_published",
        "stream_unpublished",
        "call_ringing",
        "call_answered",
        "call_ended",
        "door_opened",
        "door_refused",
    ];
}

/// `reason` as receivers see it: the code's name and number.
fn reason(code: ErrorCode) -> Value {
    json!({"code": code.0, "name": code.name()})
}

impl Hook {
    /// The delivery body, with its `id`.
    pub fn body(&self, id: &str) -> String {
        let mut v = json!({
            "id": id,
            "event": self.event.name(),
            "app_id": self.app_id,
            "room_id": self.room_id,
            "ts": self.ts,
        });
        let extra = match &self.event {
            HookEvent::RoomStarted | HookEvent::RoomFinished => json!({}),
            HookEvent::UserJoined { user } => json!({"user_id": user.user_id, "user_name": user.user_name,
                "kind": if user.kind.is_person() { "person" } else { "device" }}),
            HookEvent::UserLeft { user_id, reason: r } => json!({"user_id": user_id, "reason": reason(*r)}),
            HookEvent::StreamPublished { user_id, stream_id } => json!({"user_id": user_id, "stream_id": stream_id}),
            HookEvent::StreamUnpublished { user_id, stream_id, reason: r } => {
                json!({"user_id": user_id, "stream_id": stream_id, "reason": reason(*r)})
            }
            HookEvent::CallRinging { call_id, caller, callee }
            | HookEvent::CallAnswered { call_id, caller, callee } => {
                json!({"call_id": call_id, "caller": caller, "callee": callee})
            }
            HookEvent::CallEnded { call_id, caller, peer, reason: r } => {
                json!({"call_id": call_id, "caller": caller, "peer": peer, "reason": reason(*r)})
            }
            HookEvent::DoorOpened { door, by } => json!({"door": door, "user_id": by}),
            HookEvent::DoorRefused { door, by, reason: r } => {
                json!({"door": door, "user_id": by, "reason": reason(*r)})
            }
        };
        if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_carries_the_common_fields_and_the_event_s_own() {
        let h = Hook {
            app_id: 7,
            room_id: "lobby".into(),
            ts: 1_700_000_000_123,
            event: HookEvent::CallEnded {
                call_id: 3,
                caller: "door-1".into(),
                peer: "desk".into(),
                reason: ErrorCode::CALL_HUNG_UP,
            },
        };
        let v: Value = serde_json::from_str(&h.body("ab-1")).unwrap();
        assert_eq!(v["id"], "ab-1");
        assert_eq!(v["event"], "call_ended");
        assert_eq!(v["app_id"], 7);
        assert_eq!(v["room_id"], "lobby");
        assert_eq!(v["ts"], 1_700_000_000_123u64);
        assert_eq!(v["call_id"], 3);
        assert_eq!(v["reason"]["name"], "CALL_HUNG_UP");
        assert_eq!(v["reason"]["code"], ErrorCode::CALL_HUNG_UP.0);
        assert!(HookEvent::NAMES.contains(&h.event.name()));
    }
}
