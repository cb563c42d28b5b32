//! What the registry tells the webhooks ([`Output::Hook`]): one place that turns a change of
//! rooms, users, streams, calls and doors into an event, for the apps that have a webhook.

use super::calls::CallStep;
use super::*;
use crate::proto::CallPhase;
use crate::server::webhooks::{Hook, HookEvent};

impl Registry {
    /// Emits `event` of `app_id`'s room `room_id`, when the app has a webhook.
    pub(super) fn hook(&mut self, app_id: u32, room_id: &str, event: HookEvent) {
        if self.hooked.contains(&app_id) {
            let hook = Hook { app_id, room_id: room_id.to_string(), ts: self.unix_ms, event };
            self.out.push_back(Output::Hook(hook));
        }
    }

    /// Emits the call steps recorded since the last time (ringing, answered, ended; a leg
    /// not answered is told as the call's end or the next ringing).
    pub(super) fn hook_call_steps(&mut self) {
        for CallStep { room_id, call_id, caller, peer, phase, reason } in self.calls.take_steps() {
            let Some(app_id) = self.app_of_room(&room_id, &caller, &peer) else { continue };
            let event = match phase {
                CallPhase::Ringing => HookEvent::CallRinging { call_id, caller, callee: peer },
                CallPhase::Answered => HookEvent::CallAnswered { call_id, caller, callee: peer },
                CallPhase::Ended => HookEvent::CallEnded { call_id, caller, peer, reason },
                _ => continue,
            };
            self.hook(app_id, &room_id, event);
        }
    }

    /// The app of a call step: calls do not carry it, so it is that of a room of this name
    /// with the caller or the peer in it (a call's room exists while the call is told).
    fn app_of_room(&self, room_id: &str, caller: &str, peer: &str) -> Option<u32> {
        self.hooked.iter().copied().find(|&app| {
            [caller, peer].iter().any(|u| {
                self.store.user(app, u).and_then(|sid| self.sessions.get(sid)).is_some_and(|s| s.room_id == room_id)
            }) || self.rooms.exists(app, room_id)
        })
    }
}
