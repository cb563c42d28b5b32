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
        for CallStep { app_id, room_id, call_id, caller, peer, phase, reason } in self.calls.take_steps() {
            let event = match phase {
                CallPhase::Ringing => HookEvent::CallRinging { call_id, caller, callee: peer },
                CallPhase::Answered => HookEvent::CallAnswered { call_id, caller, callee: peer },
                CallPhase::Ended => HookEvent::CallEnded { call_id, caller, peer, reason },
                _ => continue,
            };
            self.hook(app_id, &room_id, event);
        }
    }
}
